"""The engine's flow control: a pair's credits, reserving room before a send (waiting for
credits), asking a lossy receiver again, resending what was not acknowledged in time, and a
credit back to the sender as a message leaves its queue or expires in it."""

from __future__ import annotations

import time
from collections.abc import Callable

from geode_mpi import codec
from geode_mpi.base.gate import other_threads, senders_may_run
from geode_mpi.codec import header
from geode_mpi.delivery.control import DROPPED, EXPIRED, encode_ask, encode_closing
from geode_mpi.delivery.failures import Failures
from geode_mpi.delivery.pairs import PairOut
from geode_mpi.delivery.topics import TopicStream
from geode_mpi.errors import QueueFull, SendTimeout, no_room
from geode_mpi.queues import TAKEN_BEFORE, Parcel

_FLAG_QOS = codec.FLAG_QOS
_FLAG_WAITED = codec.FLAG_WAITED
_FLAGS_AT = header.FLAGS_AT


class Credits(Failures):
    """`Engine`'s credits, reservations and resends."""

    # The nodes of other ranks that said they are closing (a control record, `tell_closing`):
    # no credit comes back from them, so a send out of credits to one stops waiting. (A class
    # default, set on the engine only when such a record arrives.)
    closing_nodes: frozenset[int] = frozenset()
    # (source, forwarder) -> a node whose rank is in close(), for which the forwarder (a
    # total-order topic's sequencer) holds a message of source's that it cannot send on
    # (`tell_held`): no credit comes back from the forwarder either. Until every credit of
    # the pair came back (`Acks._beyond_gone`: the forwarder holds none of source's then).
    # (Replaced, never changed in place: a class default.)
    closing_beyond: dict[tuple[int, int], int] = {}  # noqa: RUF012
    # (forwarder, source, closing node) told by `tell_held`, as source keys its notice
    # (`closing_beyond`) by forwarder: until the forwarder holds none of source's any more
    # (`sent_on_all`: every credit comes back, and source forgets, `Acks._beyond_gone`; one
    # held again is told again). Replaced, never changed in place.
    _told_held: frozenset[tuple[int, int, int]] = frozenset()
    # What `SendHandle.lost` reads: (source, dest, seq) -> "dropped" or "expired", for the
    # messages sent with ack=True that their receiver acknowledged without processing them.
    lost: dict[tuple[int, int, int], str] | None = None

    def pair_out(self, src: int, dst: int) -> PairOut:
        pair = self.pairs_out.get((src, dst))
        if pair is None:
            pair = self.pairs_out[(src, dst)] = PairOut(self.configs[dst].credits(len(self.names)))
        return pair

    def reserve(
        self,
        src: int,
        dst: int,
        deadline: float | None,
        timeout: float | None,
        block: bool = False,
    ) -> PairOut:
        """The pair to send on, once the destination has room for one more message.
        ``block``: wait for room whatever the destination's policy (an executor's traffic,
        which the user's ``raise`` must not fail).

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
        if self.forward_local(dst) and pair.credits > 0:
            return pair
        config = self.configs[dst]
        names = self.names
        if config.policy == "raise" and not block:
            self._ask_again(src, dst, self._asked.setdefault((src, dst), [0.0]))
            raise QueueFull(
                names[dst], self.name_of(src), config.capacity, pair.window or 0, "policy 'raise'"
            )
        one_process = dst in self.inboxes or not self.transport.delivers_later
        if self._nobody_takes(dst, one_process):
            raise self._full_alone(src, dst, pair)
        stats = self.sender_stats[src]
        stats.credit_waits += 1
        started = time.monotonic()
        asked = [started]
        alone = [False]

        def has_credit() -> bool:
            if (pair.credits or 0) > 0:  # (-1: a notice sent without room, `WorkQueue.notify`)
                return True
            if self._nobody_takes(dst, one_process):
                alone[0] = True  # the other threads have ended, nothing is left to serve
                return True
            if self.closed_to(src, dst, pair):
                return True  # its rank is in close(): no credit comes back
            self._ask_again(src, dst, asked)
            return False

        try:
            if not self.wait(has_credit, deadline, "send", lambda: self._no_room(src, dst)):
                raise self._not_sent(src, dst, timeout or 0.0)
        finally:
            stats.credit_wait_seconds += time.monotonic() - started
        if pair.credits <= 0:
            if alone[0]:
                raise self._full_alone(src, dst, pair)
            beyond = self.closing_beyond.get((src, dst))
            if beyond is not None and dst not in self.closing_nodes:
                raise self._full_beyond(src, dst, beyond, pair)
            name = names[dst]
            raise self._full(
                src,
                dst,
                pair,
                f"{name} is closing (rank {self.rank_of(dst)} called close()) and takes nothing "
                f"more from its queue; what {name} holds is reported there as never received",
            )
        return pair

    def _not_sent(self, src: int, dst: int, timeout: float) -> SendTimeout:
        """The `SendTimeout` of a send (or a publish: ``src`` a topic stream) that waited
        for room at ``dst`` in vain."""
        names = self.names
        stream = self.topics.streams.get(src) if src >= len(names) else None
        if stream is None:
            return SendTimeout(-1, self.name_of(src), names[dst], timeout, in_flight=False)
        return SendTimeout(
            -1, names[stream.publisher], names[dst], timeout, in_flight=False, topic=stream.topic
        )

    def _no_room(self, src: int, dst: int) -> str:
        """What a send from ``src`` waiting for room at ``dst`` waits for (the notice of a
        long wait, the --hang-timeout report), in `SendTimeout`'s words."""
        error = self._not_sent(src, dst, 0.0)
        capacity = self.configs[dst].capacity
        return "room: " + no_room(
            error.source, error.dest, f"(a full queue, capacity {capacity})", error.topic
        )

    def forward_local(self, dst: int) -> bool:
        """If ``dst`` is a local sequencer or dispatcher with messages to forward, forward
        them and send the acks and credits that frees (a poll would do it, but sends seldom
        poll): True if it did."""
        if not (self.forwards and dst in self.inboxes):
            return False
        self.forward()
        self.flush()
        return True

    def closed_to(self, src: int, dst: int, pair: PairOut) -> bool:
        """True if ``dst``'s rank is in close() (it said so: `tell_closing`) and no credit
        can come back from it for ``src``: none of ``pair``'s unacknowledged messages is
        waited for (ack=True, a request) and not told not processed (`closing_told`). A closing rank
        still serves the waited-for messages it has a handler for, and their credits come
        after its closing record; the others it tells not processed."""
        if (src, dst) in self.closing_beyond:
            return True  # a forwarder holding a message of src's for a closing node
        if dst not in self.closing_nodes:
            return False
        refused = self.closing_told or ()
        for seq, entry in pair.outbox.items():
            if entry.meta[_FLAGS_AT] & _FLAG_WAITED and (src, dst, seq) not in refused:
                return False  # served there (acked, a credit back), or told not processed
        return True

    def _nobody_takes(self, dst: int, one_process: bool) -> bool:
        """True if a wait for room in ``dst``'s queue would never end: ``dst`` is hosted on
        this rank, or in a one-process world (``one_process``: the embedded one, or simulated
        ranks), where only another thread (one that is not a daemon) can take from its queue
        while this one waits, or this wait's own serving of waited-for messages with a handler
        (`waited`: requests, ack=True), and there is neither."""
        return (
            one_process and dst not in self.waited and not (other_threads() and senders_may_run())
        )

    def has_room(self, src: int, dst: int) -> bool:
        """True if ``src`` may send ``dst`` one more message now, without waiting (a
        forwarder's check: what finds no room is held, `held_for_room`, never waited for nor
        refused)."""
        pair = self.pair_out(src, dst)
        if pair.credits is None or pair.credits > 0:
            return True
        if self._due:
            self.flush()  # (in one process the receiver's credits may be pending right here)
            if pair.credits > 0:
                return True
        self._ask_again(src, dst, self._asked.setdefault((src, dst), [0.0]))
        return False

    def stream_has_room(self, stream: TopicStream) -> bool:
        """`has_room` for every subscriber of ``stream``."""
        number = stream.number
        return all(self.has_room(number, sub) for sub in stream.subscribers)

    def tell_held(self, forwarder: int, source: int, stream: TopicStream) -> None:
        """Local node ``forwarder`` (a total-order topic's sequencer) holds a message of
        ``source``'s for want of room at ``stream``'s subscribers: tell ``source``, once, of
        each of them whose rank is in close() (it takes nothing more, so the message stays
        held and ``source``'s credit never comes back: its send waiting for room at
        ``forwarder`` raises `QueueFull` naming that subscriber, not `SendTimeout`)."""
        number = stream.number
        for sub in stream.subscribers:
            pair = self.pair_out(number, sub)
            told = (forwarder, source, sub)
            if pair.credits is None or pair.credits > 0 or told in self._told_held:
                continue
            if self.closed_to(number, sub, pair):
                self._told_held = self._told_held | {told}
                self.path.control(forwarder, source, encode_closing(sub))

    def tell_closing(self, told: set[tuple[int, int]]) -> None:
        """This rank is in close(): tell each sender to a local node with a window (a sender
        out of credits may be waiting for one) that no more come back, once (``told``: the
        pairs told so far; a pair whose first message arrives meanwhile is told then)."""
        if len(told) == len(self._in):
            return
        window = self._window
        payload = encode_closing()
        streams = self.topics.streams
        for key in self._in:
            if key not in told:
                told.add(key)
                source, dest = key
                if source >= len(self.names) and source not in streams:
                    continue  # a restored stream whose topic or work queue was not made again
                if window.get(dest) is not None and dest not in self.forwarders:
                    self.path.control(dest, source, payload)

    def _full_beyond(self, src: int, dst: int, beyond: int, pair: PairOut) -> QueueFull:
        """The `QueueFull` of a send to forwarder ``dst`` that holds a message of ``src``'s
        for node ``beyond``, whose rank is in close(): named as that node's."""
        names = self.names
        name, forwarder = names[beyond], names[dst]
        return QueueFull(
            name,
            self.name_of(src),
            self.configs[beyond].capacity,
            pair.window or 0,
            f"{name} is closing (rank {self.rank_of(beyond)} called close()) and takes nothing "
            f"more from its queue, so {forwarder}, the sequencer {self.name_of(src)}'s messages "
            f"go through, holds what it cannot send on to {name} and gives no credit back",
        )

    def _full_alone(self, src: int, dst: int, pair: PairOut) -> QueueFull:
        """A full ``block`` queue of a node of this rank, with no other thread to take from it."""
        name = self.names[dst]
        if self.transport.delivers_later:
            where = f"{name} is hosted on this rank (rank {self.rank_of(dst)}), so"
        else:
            where = "in a one-process world"
        return self._full(
            src,
            dst,
            pair,
            f"{where} nothing can take from {name}'s queue while send() "
            "waits and no other thread runs (receive between sends, receive in another "
            "thread, or use policy 'drop_oldest')",
        )

    def _full(self, src: int, dst: int, pair: PairOut, reason: str) -> QueueFull:
        """The `QueueFull` of a full ``block`` queue that waiting cannot help, and why."""
        window = pair.window or 0
        return QueueFull(
            self.names[dst], self.name_of(src), self.configs[dst].capacity, window, reason
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
        # (`first_take` inline: a retry, or one put back untried, was counted when first taken)
        if window is not None and not parcel.attempts and not parcel.flags & TAKEN_BEFORE:
            key_in = (parcel.source, index)
            pair_in = self._in.get(key_in)  # (None: a stream's pair not kept here)
            if pair_in is not None:
                pair_in.owed += 1
                pair_in.taken += 1
                self.mark_due(key_in)
                if pair_in.owed * 2 >= window:
                    self._flush_pair(key_in, pair_in)

    def forwarded(self, index: int, parcel: Parcel) -> None:
        """A message that reached local node ``index`` (a sequencer or a work queue's
        dispatcher) was sent on: it counts as processed, and is acknowledged to its sender,
        with a credit back as for a message taken from a bounded queue (it never entered the
        queue, but its sender counted it against the queue's window)."""
        self._credit(index, parcel)
        self._done(index, parcel)

    def told_held(self, forwarder: int, source: int) -> bool:
        """True if local node ``forwarder`` told ``source`` it holds a message of its for a
        closing node (`tell_held`)."""
        return any(at[0] == forwarder and at[1] == source for at in self._told_held)

    def sent_on_all(self, forwarder: int, source: int) -> None:
        """Local node ``forwarder`` holds none of ``source``'s messages any more: every
        credit goes back, ``source`` forgets the notice (`Acks._beyond_gone`), so one held
        again is told again. Not at each message sent on: a forwarder still holding one of
        source's on another channel would tell again at every message of source's it sends
        on (and source's notice stays while one is held)."""
        self._told_held = frozenset(
            at for at in self._told_held if at[0] != forwarder or at[1] != source
        )

    def dropped(self, index: int, parcel: Parcel) -> None:
        """Node ``index``'s full ``drop_oldest`` queue dropped ``parcel``: counted, and
        acknowledged (its sender forgets it), a sender waiting for it told first."""
        self.stats[index].dropped += 1
        if parcel.flags & _FLAG_WAITED:
            self.tell_lost(index, parcel, DROPPED)
        self._done(index, parcel)

    def _expiry(self, index: int) -> Callable[[Parcel], None]:
        """What node ``index``'s queue calls with each parcel that expired in it."""

        def expired(parcel: Parcel) -> None:
            self._credit(index, parcel)
            self.stats[index].expired += 1
            if parcel.flags & _FLAG_WAITED:
                self.tell_lost(index, parcel, EXPIRED)
            if not self.configs[index].dead_letter_expired:
                self._done(index, parcel)
                return
            late = time.monotonic() - parcel.expires
            _, ttl = header.qos(parcel.meta) if parcel.flags & _FLAG_QOS else (0, 0.0)
            text = f"expired: its ttl of {ttl:g} s ran out {late:.3g} s before it was taken"
            self.dead_letter(index, parcel, None, parcel.attempts, expired=text)

        return expired
