"""What a node did: counters readable from `Geode.stats`, and the dead-letter records."""

from __future__ import annotations

from collections import deque
from typing import Any

from geode_mpi.base.record import Frozen, Record, field_values, fill
from geode_mpi.message import Message


class NodeStats(Record):
    """Counters of one node since its Geode was created.

    Attributes:
        sent / sent_bytes: messages this node sent (first sends, not resends) and their bytes.
        received / received_bytes: messages queued for this node, and their bytes.
        processed: messages this node finished with (acknowledged, or dead-lettered).
        acked: messages this node sent that their receiver acknowledged.
        acks_sent: acknowledgement records this node sent (each covers a batch of messages).
        unacked: messages this node sent that are not acknowledged yet (its outbox).
        resent: copies sent again after an acknowledgement timeout, and a topic's retained
            messages replayed for each subscriber that joined later (counted by the
            subscribers in received / received_bytes; one that comes back skips those it
            had, counted in none of its counters).
        retries: deliveries repeated after a failed processing.
        duplicates: copies of already received messages that were dropped.
        dead_letters: messages that failed every attempt (see `Geode.dead_letters`).
        dropped: messages dropped from a full ``drop_oldest`` queue.
        expired: messages whose ttl ran out before they were taken (also in ``dead_letters``
            when the queue's ``dead_letter_expired`` keeps them).
        queue_depth / queue_peak: messages in this node's queue now, and at most.
        credit_waits / credit_wait_seconds: sends that waited for room in a full receiver's
            queue, and the time they waited.
        wait_seconds: time this node spent waiting for messages (in receive, request, and
            its share of the run() loop's idle time).
    """

    __match_args__ = (
        "node",
        "sent",
        "sent_bytes",
        "received",
        "received_bytes",
        "processed",
        "acked",
        "acks_sent",
        "unacked",
        "resent",
        "retries",
        "duplicates",
        "dead_letters",
        "dropped",
        "expired",
        "queue_depth",
        "queue_peak",
        "credit_waits",
        "credit_wait_seconds",
        "wait_seconds",
    )
    __slots__ = __match_args__

    def __init__(
        self,
        node: str,
        sent: int = 0,
        sent_bytes: int = 0,
        received: int = 0,
        received_bytes: int = 0,
        processed: int = 0,
        acked: int = 0,
        acks_sent: int = 0,
        unacked: int = 0,
        resent: int = 0,
        retries: int = 0,
        duplicates: int = 0,
        dead_letters: int = 0,
        dropped: int = 0,
        expired: int = 0,
        queue_depth: int = 0,
        queue_peak: int = 0,
        credit_waits: int = 0,
        credit_wait_seconds: float = 0.0,
        wait_seconds: float = 0.0,
    ) -> None:
        self.node = node
        self.sent = sent
        self.sent_bytes = sent_bytes
        self.received = received
        self.received_bytes = received_bytes
        self.processed = processed
        self.acked = acked
        self.acks_sent = acks_sent
        self.unacked = unacked
        self.resent = resent
        self.retries = retries
        self.duplicates = duplicates
        self.dead_letters = dead_letters
        self.dropped = dropped
        self.expired = expired
        self.queue_depth = queue_depth
        self.queue_peak = queue_peak
        self.credit_waits = credit_waits
        self.credit_wait_seconds = credit_wait_seconds
        self.wait_seconds = wait_seconds

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (for JSON)."""
        return dict(zip(self.__match_args__, field_values(self), strict=True))


class DeadLetter(Frozen):
    """A message that failed every delivery attempt (or expired), kept for the job to inspect.

    Attributes:
        node: the node that could not process it.
        message: the message (None if it could not even be decoded).
        error: the last failure, as ``"ExceptionType: text"``.
        exception: a copy of the last exception (None if none was given): its type, args,
            attributes and message, without the traceback (which would keep alive the frames
            it went through, and their locals).
        attempts: how many times it was delivered.
        source / seq: its sender and sequence number.
        expired: True when it is here because its ttl ran out (``error`` says by how much).
        traceback: where the last exception was raised, as `traceback.format_exception`
            wrote it when the message went to the dead letters ("" if none was given).
    """

    node: str
    message: Message | None
    error: str
    exception: BaseException | None
    attempts: int
    source: str
    seq: int
    expired: bool
    traceback: str
    __match_args__ = (
        "node",
        "message",
        "error",
        "exception",
        "attempts",
        "source",
        "seq",
        "expired",
        "traceback",
    )

    def __init__(
        self,
        node: str,
        message: Message | None,
        error: str,
        exception: BaseException | None,
        attempts: int,
        source: str,
        seq: int,
        expired: bool = False,
        traceback: str = "",
    ) -> None:
        fill(self, node, message, error, exception, attempts, source, seq, expired, traceback)


class DeadLetters(deque[DeadLetter]):
    """One node's dead letters kept: its newest ``maxlen`` (`QueueConfig.max_dead_letters`).
    ``warned``: one was let go, and a warning said so (once per node)."""

    __slots__ = ("warned",)

    def __init__(self, maxlen: int | None) -> None:
        super().__init__((), maxlen)
        self.warned = False
