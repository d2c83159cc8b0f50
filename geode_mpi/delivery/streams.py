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
        subscriber from the topic's creation; one that joins later: `rejoin`)."""
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
        """``sub`` subscribed to stream ``number`` after its creation, for the first time or
        again: if this rank hosts it, it starts (or resumes) at its next arrival that is not
        a resend after an ack timeout (`PairIn.rejoining`), which was published before it
        came, sent again for another subscriber on its rank. One that comes back resumes past
        what it had (a retained message replayed for it that it had is skipped; what was
        published while it was away never comes: `PairIn.resume_at`). The record is kept
        from now on, in checkpoints too: a restart does not start it at number 0."""
        if sub not in self.inboxes:
            return
        key = (number, sub)
        found = self._in.get(key)
        pair = self._in[key] = PairIn() if found is None else found
        pair.rejoining = True
        if found is None:
            return
        # The replay for it (sent before anything published after this change) skips the
        # numbers below `expected`, each counted once in `counted_apart`: its publisher
        # counted it resent for this subscriber. A later replay, for another subscriber,
        # is not for it: its numbers there are ones this replay had (retained numbers
        # only move on), past the window's lo by then.
        self.topics.had[key] = [0, pair.expected]

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
        the pair of (the publisher's stream, that subscriber).

        Each copy is counted by its subscriber (received, duplicate, or held), except a replay
        one skips, and a resend after an ack timeout that one not started yet skips (`rejoin`).
        So that the job's counts for quiescence meet its publisher's, `counted_apart` adds a
        replay skipped by one that came back (counted resent for it), and counts a resend
        after an ack timeout once (sent for one subscriber, it reaches all of them here, or
        none if its subscriber left, or only ones that skip it)."""
        first = True
        resend = flags & _REPLAY == _REPLAY
        for sub in self.topics.local_subscribers(wire):
            key = (stream, sub)
            pair = self._in.get(key)
            if pair is None or flags & _FLAG_RESENT or pair.rejoining:  # (else: it takes it)
                pair = self._taker(key, sub, flags, seq, resend)
                if pair is None:
                    continue
            if resend and not first:
                self._count_apart(sub, -1)
            copies = frames if first else [keep_or_copy(frame) for frame in frames]
            first = False
            parcel = _tuple_new(
                Parcel, (stream, seq, flags, reply_to, meta, copies, nbytes, 0, 0, _NEVER)
            )
            self._admit(key, pair, parcel, sub, self.inboxes[sub])
        if resend and first and self.inboxes:  # (none took it: counted here)
            self._count_apart(next(iter(self.inboxes)), 1)

    def _taker(
        self, key: tuple[int, int], sub: int, flags: int, seq: int, resend: bool
    ) -> PairIn | None:
        """The pair ``key`` of local subscriber ``sub`` through which arrival ``seq`` of a
        topic's stream goes to it, started or resumed here if it joined late or came back; None
        if it skips it: a retained message replayed for a new subscriber (counted apart if it
        had it before it left, `rejoin`), or a resend after an ack timeout, which was published
        before it came or while it was away. (`_topic_arrival` asks only for a pair not made
        yet or rejoining, or of an arrival sent again: any other takes its arrival as is.)"""
        pair = self._in.get(key)
        if pair is None:  # (not expected: each local subscriber's is made as it subscribes)
            if resend:  # (sent again for an earlier subscriber: published before it came)
                return None
            pair = self._in[key] = PairIn(start=seq)  # it starts here
        elif flags & _REPLAY == _FLAG_RESENT and seq < pair.expected:
            # a retained message replayed for a new subscriber: not for this one, unless it
            # came back (`rejoin`) and had it
            had = self.topics.had.get(key)
            if had is not None and had[0] <= seq < had[1]:
                self._count_apart(sub, 1)
                had[0] = seq + 1
                if had[0] == had[1]:
                    del self.topics.had[key]
            return None
        elif pair.rejoining and seq >= pair.expected:
            if resend:  # (published before it came, or while it was away: not for it)
                return None
            pair.resume_at(seq)  # (subscribed late or again: where it starts)
            self.topics.had.pop(key, None)
        return pair

    def _count_apart(self, sub: int, count: int) -> None:
        apart = self.topics.counted_apart
        apart[sub] = apart.get(sub, 0) + count
