"""A publish's handle: a `SendHandle` whose receivers are a topic's subscribers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geode_mpi import codec
from geode_mpi.base.listing import some_names
from geode_mpi.core.handles import ELSEWHERE, SendHandle
from geode_mpi.delivery.pairs import PairOut
from geode_mpi.delivery.sending import SendTicket
from geode_mpi.delivery.topics import TopicStream
from geode_mpi.errors import AckTimeout, NotProcessed, SendTimeout

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime


class PublishHandle(SendHandle):
    """A publish in progress: done once the data may be reused; with ``ack=True``, once every
    subscriber (at the time of publishing) has processed the message, or its rank is in
    close() with no handler for it (then ``wait()`` raises `NotProcessed` naming it)."""

    __slots__ = ("_pairs", "_stream", "_subscribers", "_topic")

    def __init__(
        self,
        geode: Runtime,
        ticket: SendTicket,
        stamp: codec.Stamp,
        pairs: list[PairOut] | None,
        ack: bool,
        topic: str,
        stream: TopicStream | None = None,
    ) -> None:
        super().__init__(geode, ticket, stamp, None, ack)
        self._pairs = pairs
        self._topic = topic
        # The stream's number and its subscribers, in the order of ``pairs`` (None: untracked).
        self._stream = -1 if stream is None else stream.number
        self._subscribers: tuple[int, ...] = () if stream is None else stream.subscribers

    @property
    def dest(self) -> str:
        """The topic's name."""
        return self._topic

    @property
    def acked(self) -> bool:
        """True once every subscriber processed the message (tracked publishes only)."""
        if self._pairs is None:
            return self._stamp.id == ELSEWHERE  # published by another rank: nothing to wait for
        seq = self._stamp.seq
        return all(seq not in pair.outbox for pair in self._pairs)

    @property
    def lost(self) -> str | None:
        """``"closing"`` once a subscriber that has not processed the message (sent with
        ``ack=True``) said that its rank is in close() with no handler for it; None
        otherwise (a subscriber's drop or expiry is not told: its ack counts)."""
        return "closing" if self._refusing() else None

    def _pending(self) -> list[int]:
        """The subscribers that have not acknowledged the message."""
        if self._pairs is None:
            return []
        seq = self._stamp.seq
        pairs = zip(self._subscribers, self._pairs, strict=True)
        return [sub for sub, pair in pairs if seq in pair.outbox]

    def _refusing(self) -> list[int]:
        """The subscribers that have not acknowledged the message and said they will not
        (their rank is in close() with no handler for it: `Processor.refuse_closing`)."""
        told = self._geode.engine.closing_told
        if not told or not self.ack:
            return []
        seq, number = self._stamp.seq, self._stream
        return [sub for sub in self._pending() if (number, sub, seq) in told]

    def _settled(self) -> bool:
        """True once each subscriber acknowledged the message or said it will not (a
        subscriber that processes it is waited for even when another one is closing).
        Checked on every spin of a wait: it stops at the first pair still waited for."""
        if self.acked:
            return True
        told = self._geode.engine.closing_told
        if not told or not self.ack:
            return False
        seq, number = self._stamp.seq, self._stream
        return all((number, sub, seq) in told for sub in self._pending())

    def check_processed(self) -> None:
        """Raise `NotProcessed` naming the subscribers that will not process the message."""
        refusing = self._refusing()
        if refusing:
            stamp = self._stamp
            who = some_names(self._geode.names[sub] for sub in refusing)
            raise NotProcessed(
                stamp.id, self.source, who, stamp.seq, "closing", self, self._topic, len(refusing)
            )

    def _ack_timeout(self, timeout: float, waited: bool = True) -> AckTimeout:
        """The `AckTimeout` naming the subscribers that have not processed the message."""
        stamp = self._stamp
        subs = self._pending() or self._subscribers
        who = some_names(self._geode.names[sub] for sub in subs)
        return AckTimeout(
            stamp.id, self.source, who, stamp.seq, timeout, self, waited, self._topic, len(subs)
        )

    def _send_timeout(self, timeout: float) -> SendTimeout:
        """The `SendTimeout` of a publish still in flight: named as a publish on its topic."""
        stamp = self._stamp
        return SendTimeout(stamp.id, self.source, self._topic, timeout, topic=self._topic)

    def wait_until(self, deadline: float | None, timeout: float | None, call: str = "wait") -> None:
        """`SendHandle.wait_until`, sending the batches the message waits in first (at once:
        a wait would send them only after its first spin)."""
        if self._ticket.held:
            self._geode.transport.flush()
        super().wait_until(deadline, timeout, call)

    def _local_targets(self) -> list[int]:
        return list(self._geode.engine.topics.local_subscribers(self._stamp.dest))

    def __repr__(self) -> str:
        if not self.local:
            return f"<PublishHandle {self.source} on {self._topic!r} published by another rank>"
        state = "acked" if self.acked else "done" if self._ticket.done else "in flight"
        return (
            f"<PublishHandle id={self.id} {self.source} on {self._topic!r} seq={self.seq} {state}>"
        )
