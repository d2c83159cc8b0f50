"""Per (source node, destination node) state: sequence numbers, outbox, dedup, credits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from geode_mpi.queues import Parcel

# Processed messages per pair that make an ack record go out at once: 8 full runs (128 cost
# ~7% of a stream's rate, round 36). A sender waiting for an ack (`send(ack=True)`, `wait()`)
# gets it flushed at once; otherwise due acks go within ACK_DELAY or at a wait or a drain.
ACK_BATCH = 512


class OutboxEntry(NamedTuple):
    """A sent message kept until it is acknowledged.

    Its frames are kept only when it may be sent again (``resend_after``); otherwise ``()``.
    """

    meta: bytes
    frames: Sequence[Any]
    rank: int


class RunEntry(NamedTuple):
    """The messages of a run kept until they are acknowledged: its key in the outbox and the
    ``messages`` from it (a partial ack cuts it). ``meta`` is the whole run's, as sent: a
    resend sends it whole, and the receiver lets through only what it lacks."""

    meta: bytes
    frames: Sequence[Any]
    rank: int
    messages: int


class PairOut:
    """The sending side of one (source, dest) pair, kept by the source's rank.

    Args:
        credits: messages the destination still has room for from this source (None: no limit).
    """

    __slots__ = (
        "credits",
        "next_seq",
        "outbox",
        "resends",
        "run",
        "runs",
        "taken_seen",
        "unsealed",
        "window",
    )

    def __init__(self, credits: int | None) -> None:
        self.next_seq = 0
        self.outbox: dict[int, OutboxEntry | RunEntry] = {}
        # With resends on: seq -> [when last sent (monotonic), times sent], beside the outbox.
        self.resends: dict[int, list[float]] = {}
        self.credits = credits
        self.window = credits
        self.taken_seen = 0  # the highest "taken so far" the receiver reported
        # The latest run opened on the pair until it is sealed (delivery/runs.py), the first
        # seq of the oldest run not sealed yet (-1: none), and the `RunEntry`s in the outbox.
        self.run: Any = None
        self.unsealed = -1
        self.runs = 0

    def holds(self, seq: int) -> bool:
        """Whether message ``seq`` is unacknowledged: in the outbox, or in a run not sealed."""
        if seq in self.outbox or 0 <= self.unsealed <= seq:
            return True
        if not self.runs:
            return False
        for key, entry in self.outbox.items():
            if type(entry) is RunEntry and key <= seq < key + entry.messages:
                return True
        return False

    def unacked(self) -> int:
        """How many messages the outbox holds."""
        if not self.runs:
            return len(self.outbox)
        entries = self.outbox.values()
        return sum(entry.messages if type(entry) is RunEntry else 1 for entry in entries)


class PairIn:
    """The receiving side of one (source, dest) pair, kept by the destination's rank.

    Arrivals are numbered by the sender; `arrive` lets each number through once, in order,
    holding early ones until the gap before them fills. Processing is tracked separately (a
    message may be processed out of order, with filters or explicit acks), to acknowledge it
    and to recognise a copy of an already processed message.
    """

    __slots__ = (
        "ack_due",
        "acked_below",
        "done_below",
        "done_extra",
        "expected",
        "held",
        "owed",
        "rejoining",
        "skips",
        "taken",
        "unacked",
    )

    def __init__(self, start: int = 0) -> None:
        # start: the first number of the pair (a topic's subscriber joins a stream midway)
        self.expected = start  # the next sequence number to let through
        self.held: dict[int, Parcel] = {}  # arrived early, waiting for the gap to fill
        self.done_below = start  # every number below this was processed
        self.done_extra: set[int] = set()  # processed numbers above done_below
        self.acked_below = start  # every number below this was acknowledged to the sender
        self.ack_due = False  # a tracked message was processed since the last ack record
        # Processed numbers to acknowledge that the range [acked_below, done_below) does not
        # cover: processed out of order, or copies of ones processed before (acked again).
        self.unacked: list[int] = []
        self.owed = 0  # messages taken since the last ack record (credits not yet returned)
        self.taken = 0  # messages taken from the queue in all (retries not counted again)
        # A topic's subscriber that joined the stream after its creation, or left it and
        # subscribed again: its next arrival (not a resend after an ack timeout: published
        # before it came) says where it starts or resumes (`resume_at`).
        self.rejoining = False
        # The numbers published while it was away (they never come), counted processed: the
        # first of each gap -> its last, which is in done_extra (that also keeps the fast
        # paths, which pass over a pair with done_extra, from stepping into the gap).
        self.skips: dict[int, int] | None = None

    def arrive(self, parcel: Parcel) -> list[Parcel] | None:
        """The parcels to queue now (in order) after ``parcel`` arrived; None for a duplicate."""
        seq = parcel.seq
        if seq == self.expected:
            self.expected = seq + 1
            if not self.held:
                return [parcel]
            ready = [parcel]
            while self.expected in self.held:
                ready.append(self.held.pop(self.expected))
                self.expected += 1
            return ready
        if seq < self.expected or seq in self.held:
            return None
        self.held[seq] = parcel
        return []

    def processed(self, seq: int) -> bool:
        """Record ``seq`` processed; False if it already was."""
        if seq < self.done_below or seq in self.done_extra:
            return False
        if seq == self.done_below:
            below = seq + 1
            extra = self.done_extra
            skips = self.skips
            while True:
                if below in extra:
                    extra.remove(below)
                    below += 1
                elif skips and below in skips:
                    below = skips.pop(below)  # (the gap's last, in done_extra)
                else:
                    break
            self.done_below = below
        else:
            self.done_extra.add(seq)
        return True

    def resume_at(self, seq: int) -> None:
        """A subscriber that subscribed late or again (`rejoining`) starts or resumes at
        arrival ``seq`` (not below `expected`): the numbers published before it came, or while
        it was away, never come, and count as processed, in O(1) whatever their number."""
        expected = self.expected
        self.rejoining = False
        self.expected = seq
        if seq == expected:
            return
        if self.done_below == expected and not self.done_extra:
            self.done_below = seq  # (everything it had was processed: nothing to pass over)
            return
        last = seq - 1
        self.done_extra.add(last)
        if last > expected:
            if self.skips is None:
                self.skips = {}
            self.skips[expected] = last

    def done_now(self, seq: int, tracked: int) -> bool:
        """Record ``seq`` processed if that is all there is to it (`Engine._done`'s commonest
        case): the next in order, and untracked (never acked) or its ack already due with
        the batch not full. False, with nothing recorded, otherwise (`Engine._done` then)."""
        if (
            seq == self.done_below
            and not self.done_extra
            and (
                not tracked  # (never acked: `acked_below` stays where it was)
                or (self.ack_due and seq + 1 - self.acked_below + len(self.unacked) < ACK_BATCH)
            )
        ):
            self.done_below = seq + 1
            return True
        return False

    def was_processed(self, seq: int) -> bool:
        return seq < self.done_below or seq in self.done_extra


Key = tuple[int, int]


def drop_idle(
    keys: Sequence[Key], pairs_out: dict[Key, PairOut], pairs_in: dict[Key, PairIn], resends: bool
) -> list[Key]:
    """Drop the records of the pairs ``keys`` of streams that send nothing more (a finished
    executor's work queue, whose last message, the end, reached its worker) once nothing can
    need them; the keys whose records must wait (a sending side's ack still to come, a
    receiving side's ack still to send).

    A sending side goes once its outbox is empty: every message acknowledged, so no resend
    can come from it; an ack or a credit that comes for it later is ignored, its stream being
    known still (`Acks`: "a stream's pair not kept here"). A receiving side goes once it owes
    nothing (everything let through processed and its ack sent, no credit owed, nothing
    held), and only without ``resends``: it is what tells a late copy of a message from a
    new one, and a pair made again for a copy would let it through a second time. Without
    resends every message arrives once, in order, so nothing comes after the end.
    """
    waiting = []
    for key in keys:
        out = pairs_out.get(key)
        if out is not None and (out.outbox or out.resends or out.run is not None):
            waiting.append(key)
            continue
        pairs_out.pop(key, None)
        pair = pairs_in.get(key)
        if pair is None or resends:
            continue
        if pair.held or pair.ack_due or pair.unacked or pair.owed or pair.done_extra:
            waiting.append(key)
        elif pair.done_below == pair.expected:
            del pairs_in[key]
        else:
            waiting.append(key)  # (let through, not processed yet)
    return waiting
