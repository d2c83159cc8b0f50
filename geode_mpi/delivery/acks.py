"""The engine's acknowledgements: ack records with credits, batched per incoming pair and
flushed, and the control records that arrive (acks, asks, quiescence waves)."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable
from typing import Protocol

from geode_mpi import codec
from geode_mpi.delivery.control import (
    ACK,
    ASK,
    CLOSING,
    LOST,
    SENDS_DONE,
    WAITING,
    decode_ack,
    decode_closing,
    decode_lost,
    decode_sends_done,
    decode_wave,
    encode_ack,
    kind,
    ranges,
    relays,
    whole_rank,
)
from geode_mpi.delivery.engine_state import EngineState
from geode_mpi.delivery.pairs import PairIn
from geode_mpi.delivery.runs import release
from geode_mpi.errors import DecodeError

# The most (source, dest, seq) entries kept of messages told not processed (`Credits.lost`):
# the oldest goes first (a live handle keeps its own, `Acks.watch`).
LOST_KEPT = 4096


class Told(Protocol):
    """A handle that learns it was acknowledged without being processed (`Acks.watch`)."""

    def told_lost(self, why: str) -> None: ...


Key = tuple[int, int, int]  # (source, dest, seq)


class Acks(EngineState):
    """`Engine`'s ack records, sent and received."""

    # The live handles of messages sent with ack=True (`watch`), by (source, dest, seq);
    # None: none yet. Dead ones are swept when it reaches `_watch_limit` entries.
    _watched: dict[Key, weakref.ref[Told]] | None = None
    _watch_limit = LOST_KEPT
    # The messages told "closing" (their receiver's rank is in close() with no handler for
    # them: not acknowledged, they stay in the outbox), for `Credits.closed_to` and a
    # publish's handle (the `lost` table keeps only the latest), as long as they are in their
    # pair's outbox (swept at `_told_limit` entries: one that left it, dropped or expired
    # there later, or its subscriber gone, is asked about no more); None: none yet.
    closing_told: set[Key] | None = None
    _told_limit = LOST_KEPT
    # (waiter, source): a receive at remote node waiter waits for a message from local node
    # source (a waiting record): answered once this rank is in close() (`Runtime.tell_done`).
    # Replaced, never changed in place (class defaults, as the two below).
    awaited: frozenset[tuple[int, int]] = frozenset()
    # (waiter, local node asked): a receive with no source at remote node waiter waits;
    # answered for every node of this rank at once, as ``awaited`` is.
    awaited_ranks: frozenset[tuple[int, int]] = frozenset()
    # (waiter, source) this rank asked about (once each), and source -> the envelopes its
    # rank sent this one before it said it sends nothing more (a done record).
    asked: frozenset[tuple[int, int]] = frozenset()
    sends_done: dict[int, int] = {}  # noqa: RUF012
    # Local or remote nodes known to sequence a group (a group made here names them; a group
    # message forwarded here marks its sequencer): they forward other nodes' messages in
    # close(), so a receive(source=) of one is never told "done" (`Runtime.tell_done`).
    group_sequencers: frozenset[int] = frozenset()
    # Whether this rank asked every other rank (a receive with no source waited a while),
    # and rank -> the envelopes it sent this one before it said no node of it sends more.
    asked_ranks = False
    ranks_done: dict[int, int] = {}  # noqa: RUF012
    # The ranks among those that said so which may yet send on what another rank sends them
    # (their done record's `RELAYS`: `relays_here` was True there).
    relaying_ranks: frozenset[int] = frozenset()

    def relays_here(self) -> bool:
        """Whether this rank may send on what another rank sends it, in close() too: it knows
        a group (its sequencer forwards; the group's other ranks send to it), a topic or a
        work queue (their sequencers and dispatchers forward; made on every rank), or holds
        messages to forward. A message may then reach a waiting receive through a rank that
        said it sends nothing more, after it said so (`Runtime.others_gone`)."""
        return bool(
            self.group_sequencers
            or self.topics.streams
            or self.forwards
            or self.forwarders
            or self.held_for_room
        )

    def watch(self, key: Key, handle: Told) -> None:
        """``handle``, while it lives, is told (`Told.told_lost`) if message ``key`` is
        acknowledged without being processed, however many such records come first (the
        `lost` table keeps only the latest `LOST_KEPT`). Its entry goes once it is told, or
        once it was collected (by the next sweep: a job that keeps none of its handles keeps
        few entries, one that keeps them all keeps one each)."""
        watched = self._watched
        if watched is None:
            watched = self._watched = {}
        elif len(watched) >= self._watch_limit:
            for gone in [at for at, ref in watched.items() if ref() is None]:
                del watched[gone]
            self._watch_limit = max(LOST_KEPT, 2 * len(watched))
        watched[key] = weakref.ref(handle)

    def _tell_lost(self, key: Key, why: str) -> None:
        """Message ``key`` was ``why`` (a lost record): its handle's if it lives, and the
        bounded `lost` table's (a request's, a handle nobody kept, and `Credits.closed_to`)."""
        watched = self._watched
        if watched is not None:
            ref = watched.pop(key, None)
            handle = None if ref is None else ref()
            if handle is not None:
                handle.told_lost(why)
        if why == "closing":
            self._told_closing(key)
            if key[0] in self.topics.streams:
                return  # (a publish's handle reads `closing_told` only: kept out of `lost`)
        lost = self.lost
        if lost is None:
            lost = self.lost = {}
        elif len(lost) >= LOST_KEPT:
            del lost[next(iter(lost))]
        lost[key] = why

    def _told_closing(self, key: Key) -> None:
        """Message ``key`` was told "closing": kept in `closing_told` while it can be asked
        about, that is while it is in its pair's outbox (a sweep at `_told_limit` entries
        drops the others, so the set stays within twice what the outboxes hold)."""
        told = self.closing_told
        if told is None:
            told = self.closing_told = set()
        elif len(told) >= self._told_limit:
            pairs_out = self.pairs_out
            for gone in [
                at
                for at in told
                if (pair := pairs_out.get((at[0], at[1]))) is None or at[2] not in pair.outbox
            ]:
                told.discard(gone)
            self._told_limit = max(LOST_KEPT, 2 * len(told))
        told.add(key)

    def _beyond_gone(self, key: tuple[int, int]) -> None:
        """Every credit of pair ``key`` (source, forwarder) came back: the forwarder sent on
        all of source's messages, so it holds none for a closing node any more (its credit
        for a held one comes only once it is sent on); `closing_beyond` forgets the pair, if
        it named it (a forwarder that holds one again tells again, `Credits.tell_held`)."""
        if key in self.closing_beyond:
            self.closing_beyond = {
                at: node for at, node in self.closing_beyond.items() if at != key
            }

    def mark_due(self, key: tuple[int, int]) -> None:
        """Incoming pair ``key`` has acks or credits to send (at the next flush)."""
        if not self._due:
            self._due_since = time.perf_counter()
        self._due.add(key)

    @property
    def pairs_in(self) -> dict[tuple[int, int], PairIn]:
        """(source, dest) -> the receiving side of each incoming pair (what a checkpoint saves)."""
        return self._in

    def flush(self) -> None:
        """Send every pending ack and credit now (before waiting, and at close)."""
        for key in list(self._due):
            if key[0] >= len(self.names) and key[0] not in self.topics.streams:
                continue  # a restored stream's acks: once its topic or work queue exists again
            pair = self._in.get(key)
            if pair is not None:
                self._flush_pair(key, pair)
            else:
                self._due.discard(key)
        self.transport.flush()

    def _flush_pair(self, key: tuple[int, int], pair: PairIn, again: bool = False) -> None:
        self._due.discard(key)
        if (not pair.ack_due and not pair.owed and not again) or self.closed:
            return  # (after close: a message taken then is acked to nobody, its sender closed)
        source, dest = key
        acked = []
        low, high = pair.acked_below, pair.done_below
        if pair.ack_due and high > low:
            acked.append((low, high))
        if pair.unacked:
            acked.extend(ranges(seq for seq in pair.unacked if not low <= seq < high))
        payload = encode_ack(pair.taken, acked)
        pair.acked_below = high
        pair.ack_due = False
        pair.unacked = []
        pair.owed = 0
        self.stats[dest].acks_sent += 1
        self.path.control(dest, source, payload, batch=True)

    def _control(self, meta: memoryview) -> None:
        _, _, receiver, sender, _ = codec.track(meta)
        payload = codec.control_payload(meta)
        if kind(payload) == CLOSING:  # ("receiver": the node whose rank closes)
            beyond = decode_closing(payload)
            if beyond is None:
                self.closing_nodes = self.closing_nodes | {receiver}
            else:  # (a sequencer's: it holds what it cannot send on to that closing node)
                self.closing_beyond = {**self.closing_beyond, (sender, receiver): beyond}
            return
        if kind(payload) == WAITING:  # (from "receiver", which waits for a message of sender's)
            if whole_rank(payload):  # (... or of any node of sender's rank)
                self.awaited_ranks = self.awaited_ranks | {(receiver, sender)}
            else:
                self.awaited = self.awaited | {(receiver, sender)}
            return
        if kind(payload) == SENDS_DONE:  # (receiver, whose rank is in close(), sends no more)
            count = decode_sends_done(payload)
            if whole_rank(payload):
                rank = self.rank_of(receiver)
                self.ranks_done = {**self.ranks_done, rank: count}
                if relays(payload):
                    self.relaying_ranks = self.relaying_ranks | {rank}
            else:
                self.sends_done = {**self.sends_done, receiver: count}
            return
        if kind(payload) == LOST:  # (before the ack record that acknowledges it)
            why, seq = decode_lost(payload)
            if sender in self.topics.streams and why != "closing":
                return  # (a publish's handle counts the subscribers' acks: no ack follows
                # "closing" only, which `PublishHandle` reads by subscriber)
            self._tell_lost((sender, receiver, seq), why)
            return
        if kind(payload) not in (ACK, ASK):
            if self.on_wave is None:
                raise DecodeError(f"a control record of type {kind(payload)} arrived unasked")
            self.on_wave(receiver, *decode_wave(payload))
            return
        taken, acked = decode_ack(payload)
        if kind(payload) == ASK:  # here "sender" is the receiving node asked, "receiver" the asker
            key = (receiver, sender)
            pair_in = self._in.get(key)
            if pair_in is not None:
                self._flush_pair(key, pair_in, again=True)
            return
        pair = self.pairs_out.get((sender, receiver))
        if pair is None:
            if sender in self.topics.streams:
                return  # (a stream's pair not kept here: nobody waits for its acks)
            raise DecodeError(
                f"an ack from node index {receiver} for node index {sender}, which sent it nothing"
            )
        if taken > pair.taken_seen:  # a running total: a record lost or repeated does no harm
            if pair.credits is not None:
                pair.credits += taken - pair.taken_seen
                if self.closing_beyond and pair.credits >= (pair.window or 0):
                    self._beyond_gone((sender, receiver))
            pair.taken_seen = taken
        outbox = pair.outbox
        resends = pair.resends
        count = 0
        if pair.runs:  # runs in the outbox: one entry per run (delivery/runs.py)
            acked, count = [], sum(release(pair, first, end) for first, end in acked)
        for first, end in acked:
            if end - first <= len(outbox):
                seqs: Iterable[int] = range(first, end)
            else:  # never walk more seqs than the outbox holds (a damaged range: 2**64 long)
                seqs = [seq for seq in outbox if first <= seq < end]
            for seq in seqs:
                if outbox.pop(seq, None) is not None:
                    count += 1
                    if resends:
                        resends.pop(seq, None)
        stats = self.sender_stats.get(sender)
        if stats is not None:  # (None: a restored stream's ack, before its topic is made again)
            stats.acked += count
