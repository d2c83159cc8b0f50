"""The engine's side of topic and work-queue streams: knowing a stream, a subscriber's place
in it, and a published message's copy into each local subscriber's queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geode_mpi import codec
from geode_mpi.delivery.engine_state import EngineState
from geode_mpi.delivery.pairs import PairIn
from geode_mpi.delivery.topics import TopicStream
from geode_mpi.queues import NEVER as _NEVER
from geode_mpi.queues import Parcel
from geode_mpi.transport.sealed import keep_or_copy

_tuple_new = tuple.__new__
_FLAG_RESENT = codec.FLAG_RESENT
_FLAG_TRACKED = codec.FLAG_TRACKED
# A topic's retained message replayed for new subscribers: resent, and not tracked (a resend
# after an ack timeout is tracked, and a subscriber that has it acknowledges it again).
_REPLAY = _FLAG_RESENT | _FLAG_TRACKED


class Streams(EngineState):
    """`Engine`'s topic and work-queue streams."""

    def add_stream(self, stream: TopicStream) -> None:
        """Know a topic stream (on every rank, in the same order)."""
        self.topics.add(stream)
        if stream.publisher in self.stats:
            self.sender_stats[stream.number] = self.stats[stream.publisher]

    def expect_from_start(self, number: int, sub: int) -> None:
        """Local subscriber ``sub`` takes stream ``number`` from its first message on (a
        subscriber from the topic's creation; one that joins later starts at its first
        arrival, which a stream delivers in order)."""
        self._in.setdefault((number, sub), PairIn())

    def forget_subscriber(self, number: int, sub: int) -> None:
        """``sub`` unsubscribed from stream ``number``: on the publisher's side nobody waits
        for its acks any more (its outbox and resends cleared: a handle waiting for them is
        done), on its own side it keeps its place. Both pairs stay, with their credits and
        counters: the messages still in its queue return their credits to this pair as they
        are taken, and a subscriber that comes back resumes on it (`rejoin`)."""
        pair = self.pairs_out.get((number, sub))
        if pair is not None:
            pair.outbox.clear()
            pair.resends.clear()
            pair.runs = 0

    def rejoin(self, number: int, sub: int) -> None:
        """Local subscriber ``sub`` subscribed to stream ``number`` again: it resumes at its
        next arrival that it did not have (a retained message replayed for it that it had is
        skipped; what was published while it was away never comes: `PairIn.resume_at`)."""
        pair = self._in.get((number, sub))
        if pair is not None:
            pair.rejoining = True

    def _topic_arrival(
        self,
        meta: memoryview,
        frames: Sequence[Any],
        nbytes: int,
        flags: int,
        seq: int,
        stream: int,
        wire: int,
        reply_to: int,
    ) -> None:
        """A message published on a topic: a copy into each local subscriber's queue, through
        the pair of (the publisher's stream, that subscriber)."""
        first = True
        for sub in self.topics.local_subscribers(wire):
            key = (stream, sub)
            pair = self._in.get(key)
            if pair is None:
                pair = self._in[key] = PairIn(start=seq)  # a new subscriber starts here
            elif flags & _REPLAY == _FLAG_RESENT and seq < pair.expected:
                continue  # a retained message replayed for a new subscriber: not for this one
            elif pair.rejoining and seq >= pair.expected:
                pair.resume_at(seq)  # (subscribed again: where it resumes)
            copies = frames if first else [keep_or_copy(frame) for frame in frames]
            first = False
            parcel = _tuple_new(
                Parcel, (stream, seq, flags, reply_to, meta, copies, nbytes, 0, 0, _NEVER)
            )
            self._admit(key, pair, parcel, sub, self.inboxes[sub])
