"""The engine's flow control: a pair's credits, reserving room before a send (waiting for
credits), asking a lossy receiver again, resending what was not acknowledged in time, and a
credit back to the sender as a message leaves its queue or expires in it."""

from __future__ import annotations

import time
from collections.abc import Callable

from geode_mpi import codec
from geode_mpi.base.gate import other_threads, senders_may_run
from geode_mpi.codec import header
from geode_mpi.delivery.control import encode_ask
from geode_mpi.delivery.failures import Failures
from geode_mpi.delivery.pairs import PairOut
from geode_mpi.delivery.topics import TopicStream
from geode_mpi.errors import QueueFull, SendTimeout
from geode_mpi.queues import Parcel

_FLAG_QOS = codec.FLAG_QOS


class Credits(Failures):
    """`Engine`'s credits, reservations and resends."""

    def pair_out(self, src: int, dst: int) -> PairOut:
        pair = self.pairs_out.get((src, dst))
        if pair is None:
            pair = self.pairs_out[(src, dst)] = PairOut(self.configs[dst].credits(len(self.names)))
        return pair

    def reserve(self, src: int, dst: int, deadline: float | None, timeout: float | None) -> PairOut:
        """The pair to send on, once the destination has room for one more message.

        Raises:
            QueueFull: the destination's policy is ``raise``, or waiting cannot help.
            SendTimeout: ``block`` waited until the deadline.
        """
        pair = self.pair_out(src, dst)
        if pair.credits is None or pair.credits > 0:
            return pair
        self.flush()  # in one process the receiver's credits may be pending right here
        self.transport.progress()  # or on their way
        if pair.credits > 0:
            return pair
        config = self.configs[dst]
        names = self.names
        if config.policy == "raise":
            self._ask_again(src, dst, self._asked.setdefault((src, dst), [0.0]))
            raise QueueFull(
                names[dst], self.name_of(src), config.capacity, pair.window or 0, "policy 'raise'"
            )
        # One process: only another thread (one that is not a daemon) can take from the
        # queue while this one waits; with none, waiting would never end.
        one_process = not self.transport.delivers_later
        if one_process and not (other_threads() and senders_may_run()):
            raise self._full_alone(src, dst, pair)
        stats = self.sender_stats[src]
        stats.credit_waits += 1
        started = time.monotonic()
        asked = [started]
        alone = [False]

        def has_credit() -> bool:
            if pair.credits:
                return True
            if one_process and not senders_may_run():  # the other threads have ended
                alone[0] = True
                return True
            self._ask_again(src, dst, asked)
            return False

        try:
            if not self.wait(has_credit, deadline):
                raise SendTimeout(-1, self.name_of(src), names[dst], timeout or 0.0)
        finally:
            stats.credit_wait_seconds += time.monotonic() - started
        if alone[0] and not pair.credits:
            raise self._full_alone(src, dst, pair)
        return pair

    def _full_alone(self, src: int, dst: int, pair: PairOut) -> QueueFull:
        """A full ``block`` queue in one process, with no other thread to take from it."""
        name = self.names[dst]
        return QueueFull(
            name,
            self.name_of(src),
            self.configs[dst].capacity,
            pair.window or 0,
            f"in a one-process world nothing can take from {name}'s queue while send() "
            "waits and no other thread runs (receive between sends, receive in another "
            "thread, or use policy 'drop_oldest')",
        )

    def reserve_stream(
        self, stream: TopicStream, deadline: float | None, timeout: float | None
    ) -> list[PairOut]:
        """The pairs of (``stream``, each subscriber), once every subscriber has room for one
        more message (see `reserve`)."""
        number = stream.number
        pairs_out = self.pairs_out
        gate = self.transport.gate
        while True:
            turns = gate.turns
            pairs = []
            for sub in stream.subscribers:
                pair = pairs_out.get((number, sub))
                if pair is None or (pair.credits is not None and pair.credits <= 0):
                    pair = self.reserve(number, sub, deadline, timeout)  # may let others in
                pairs.append(pair)
            if gate.turns == turns:
                return pairs  # no other thread took a credit of the pairs reserved before

    def _ask_again(self, src: int, dst: int, asked: list[float]) -> None:
        """On a lossy transport (``resend_after`` set), ask dst for its ack record again now
        and then: the one that would have returned this sender's credits may have been lost."""
        if self.resend_after is None:
            return
        now = time.monotonic()
        if now - asked[0] >= self.resend_after:
            asked[0] = now
            self.path.control(src, dst, encode_ask())

    def _resend_due(self) -> None:
        now = time.monotonic()
        limit = self.resend_after
        if limit is None or now < self._next_resend:
            return
        self._next_resend = now + limit / 4
        sender_stats = self.sender_stats
        for (src, _), pair in self.pairs_out.items():
            if src not in sender_stats:
                # A restored topic stream whose topic this rank has not created again yet: its
                # messages wait for `topic()` (ranks without the topic would drop them).
                continue
            for seq, entry in list(pair.outbox.items()):
                state = pair.resends.setdefault(seq, [now, 1])
                if now - state[0] >= limit:
                    state[0] = now
                    state[1] += 1
                    sender_stats[src].resent += self.path.resend(
                        entry.rank, entry.meta, entry.frames
                    )

    def _credit(self, index: int, parcel: Parcel) -> None:
        """A parcel left node ``index``'s queue: with a window, its sender gets a credit back."""
        window = self._window[index]
        if window is not None and not parcel.attempts:  # a retry was counted when first taken
            key_in = (parcel.source, index)
            pair_in = self._in.get(key_in)  # (None: a stream's pair not kept here)
            if pair_in is not None:
                pair_in.owed += 1
                pair_in.taken += 1
                self.mark_due(key_in)
                if pair_in.owed * 2 >= window:
                    self._flush_pair(key_in, pair_in)

    def _expiry(self, index: int) -> Callable[[Parcel], None]:
        """What node ``index``'s queue calls with each parcel that expired in it."""

        def expired(parcel: Parcel) -> None:
            self._credit(index, parcel)
            self.stats[index].expired += 1
            if not self.configs[index].dead_letter_expired:
                self._done(index, parcel)
                return
            late = time.monotonic() - parcel.expires
            _, ttl = header.qos(parcel.meta) if parcel.flags & _FLAG_QOS else (0, 0.0)
            text = f"expired: its ttl of {ttl:g} s ran out {late:.3g} s before it was taken"
            self.dead_letter(index, parcel, None, parcel.attempts, expired=text)

        return expired
