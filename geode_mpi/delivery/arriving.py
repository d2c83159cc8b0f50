"""The engine's arrival path: the transport's sinks, dedup and order per pair, runs and
control records let through, malformed arrivals counted and dropped."""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from geode_mpi import codec
from geode_mpi.base.logger import log
from geode_mpi.codec import header
from geode_mpi.codec.runs import Run
from geode_mpi.delivery import cache
from geode_mpi.delivery.acks import Acks
from geode_mpi.delivery.engine_state import (
    _DIVERT,
    _FLAG_QOS,
    _FLAG_RESENT,
    _FLAG_SEQUENCE,
    _FLAG_TOPIC,
    _FLAG_TRACKED,
    _FLAG_WAITED,
    _KIND_AT,
    _KIND_CONTROL,
    _NOT_ONE,
    _tuple_new,
)
from geode_mpi.delivery.pairs import PairIn
from geode_mpi.delivery.run_cursor import queue_run, run_parcels
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.delivery.streams import Streams
from geode_mpi.delivery.topics import TopicNotMadeYet
from geode_mpi.errors import DecodeError
from geode_mpi.queues import NEVER as _NEVER
from geode_mpi.queues import Inbox, Parcel
from geode_mpi.queues.bundles import add_bundle

MALFORMED_WARNINGS = 10  # malformed arrivals from one rank that each log a warning
_CACHED = cache.MARKER  # meta[0] of a message with a cache prefix (never a codec version)
_track_from = header.track_fields  # flags, seq, source, dest, reply_to of a header


def queued_as(parcel: Parcel) -> Parcel:
    """A parcel with the priority and expiry its header asks for.

    The ttl counts from the sender's stamp (so that time spent unpolled in MPI's buffers
    counts), but never past ``ttl`` after its arrival here: a sender's clock ahead of this
    rank's cannot keep a message longer; one behind it by S expires it up to S early.
    """
    try:
        priority, ttl = header.qos(parcel.meta)
    except DecodeError:  # its receive says what is wrong (the same check, in the codec)
        return parcel
    expires = _NEVER
    if ttl:
        age = time.time() - header.timestamp(parcel.meta)  # sender's clock vs this rank's
        expires = time.monotonic() + ttl - (age if age > 0.0 else 0.0)
    return parcel._replace(priority=priority, expires=expires)


class Arriving(Acks, Streams):
    """`Engine`'s arrival path: its sinks (`sink`, `sink_run`), and what lets an arrival
    through its pair into its node's queue."""

    # -- receiving -------------------------------------------------------------------------

    def sink(self, rank: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> None:
        """Take one arrival from the transport.

        An arrival whose header cannot be routed (too short, another codec version, a node or
        topic this job does not have, a control record that does not parse) is counted in
        `malformed` and dropped with a warning naming the sending rank; the rest of a message
        is decoded, and its errors raised, when a node receives it.
        """
        pair: PairIn
        try:
            if frames and meta[0] == _CACHED:  # shared arrays: resolve what the cache holds
                meta, frames, nbytes = self.path.cache.arrived(rank, meta, frames, nbytes)
            if meta[_KIND_AT] in _NOT_ONE:  # a control record, or a run of messages
                self._not_one(rank, meta)
                return
            flags, seq, source, dest, reply_to = _track_from(meta, 0)
            inbox = self.inboxes.get(dest)
            if inbox is None:
                if flags & _FLAG_TOPIC:  # (a known stream: its publisher is a node)
                    stream = self.topics.stream_of(dest, source)
                else:
                    codec.track(meta)  # raises the precise error if the header is not ours
                    raise DecodeError(
                        f"a message from node index {source} for node index {dest}, which "
                        "this rank does not host: do all ranks use the same nodes?"
                    )
            else:
                key = (source, dest)
                found = self._in.get(key)
                if found is None:  # checked once per pair: later arrivals route as this one
                    self._check_new(meta, source)
                    found = self._in[key] = PairIn()
                pair = found
        except Exception as exc:  # whatever the bytes made the parsing raise
            self.malformed_arrival(rank, meta, exc)
            return
        if inbox is None:
            self._topic_arrival(meta, frames, nbytes, flags, seq, stream, dest, reply_to)
            return
        parcel = _tuple_new(
            Parcel, (source, seq, flags, reply_to, meta, frames, nbytes, 0, 0, _NEVER)
        )
        if seq == pair.expected and not pair.held and not flags & _DIVERT and not inbox.drop_oldest:
            # `_admit`'s common case inline (and `Inbox.push`'s): a small message's latency
            # is a sum of such calls (measured in a ping-pong: 2.3 us in this sink before).
            pair.expected = seq + 1
            stats = self.stats[dest]
            stats.received += 1
            stats.received_bytes += nbytes
            items = inbox.waiting
            items.append(parcel)
            if len(items) > inbox.peak:
                inbox.peak = len(items)
            return
        self._admit(key, pair, parcel, dest, inbox)

    def _not_one(self, rank: int, meta: memoryview) -> None:
        """An arrival that is not one message: a control record, or a run of messages. One
        that does not parse (a control record of an unknown type, damaged, or acknowledging
        nothing sent) is a malformed arrival, counted and dropped here, whoever calls."""
        try:
            if meta[_KIND_AT] == _KIND_CONTROL:
                self._control(meta)
                return
            run = Run(meta, self.names)
            source, dest = run.src, run.dst
            inbox = self.inboxes.get(dest)
            if inbox is None or run.flags & ~(_FLAG_TRACKED | _FLAG_RESENT):
                raise DecodeError(
                    f"a run from node index {source} for node index {dest}, which this rank "
                    f"does not host, or with flags {run.flags} that a run cannot have"
                )
            key = (source, dest)
            found = self._in.get(key)
            if found is None:
                self._check_new(meta, source)
                found = self._in[key] = PairIn()
        except Exception as exc:  # whatever the bytes made the parsing raise
            self.malformed_arrival(rank, meta, exc)
            return
        self._admit_run(key, found, run, meta, inbox)

    def _admit_run(
        self, key: tuple[int, int], pair: PairIn, run: Run, meta: memoryview, inbox: Inbox
    ) -> None:
        """Let a run through its pair into its node's queue: at once when it is the next in
        order, else message by message as `_admit` does (a run that overlaps what was let
        through, after a resend, lets through only what is new)."""
        stats = self.stats[key[1]]
        if run.first_seq == pair.expected and not pair.held and not inbox.drop_oldest:
            # one queue entry for the whole run, its messages built as they are taken
            entry = queue_run(run, meta, pair, inbox, stats)
            if entry is not None:
                count = len(run.payloads)
                pair.expected += count
                stats.received += count
                stats.received_bytes += len(meta)
                add_bundle(inbox, entry)
                return
        for parcel in run_parcels(run, meta):
            self._admit(key, pair, parcel, key[1], inbox)

    def _check_new(self, meta: memoryview, source: int) -> None:
        """Check the header of the first arrival of a pair (its version, its source).

        Raises:
            DecodeError: not a header of this codec version, or from no node or stream here.
        """
        codec.track(meta)
        if source >= len(self.names) and source not in self.topics.streams:
            raise DecodeError(
                f"a message from node index {source}: this job has {len(self.names)} nodes "
                f"and {len(self.topics.streams)} topic and work-queue streams"
            )

    def malformed_arrival(self, rank: int, meta: memoryview | bytes, error: BaseException) -> None:
        """Count an arrival that cannot be routed, and drop it; warn (for the first few of
        each sending rank, then at every power of ten). A resend on a restored topic not made
        here yet is no fault: said once per sending rank, at info level, not counted."""
        if isinstance(error, TopicNotMadeYet):
            told = self.topics.told
            if rank not in told:
                told.add(rank)
                log.info("from rank %d: %s", rank, error)
            return
        count = self.malformed[rank] = self.malformed.get(rank, 0) + 1
        error_name = type(error).__name__
        if count <= MALFORMED_WARNINGS or str(count).rstrip("0") == "1":  # 1..10, 100, 1000 ...
            log.warning(
                "dropped a malformed arrival from rank %d (%d bytes; %d from that rank so far): "
                "%s: %s",
                rank,
                len(meta),
                count,
                "struct.error (too short)" if isinstance(error, struct.error) else error_name,
                error,
            )

    def _admit(
        self, key: tuple[int, int], pair: PairIn, parcel: Parcel, dest: int, inbox: Inbox
    ) -> None:
        """Let an arrival through its pair (once, in order) into ``dest``'s queue."""
        stats = self.stats[dest]
        seq = parcel.seq
        if seq == pair.expected and not pair.held and not parcel.flags & _DIVERT:
            # The common case, the next one in order with none held: what the general path
            # below does for it, without `PairIn.arrive`'s list.
            pair.expected = seq + 1
            stats.received += 1
            stats.received_bytes += parcel.nbytes
            dropped = inbox.push(parcel)
            if dropped is not None:
                self.dropped(dest, dropped)
            return
        ready = pair.arrive(parcel)
        if ready is None:
            stats.duplicates += 1
            if parcel.flags & _FLAG_TRACKED and pair.was_processed(parcel.seq):
                pair.unacked.append(parcel.seq)  # its ack was lost, or is on its way: again
                pair.ack_due = True
                self.mark_due(key)
            return
        self._queue_ready(dest, inbox, ready)

    def _queue_ready(self, dest: int, inbox: Inbox, ready: list[Parcel]) -> None:
        """Queue arrivals their pair let through, in order (`_admit`)."""
        stats = self.stats[dest]
        for item in ready:
            stats.received += 1
            stats.received_bytes += item.nbytes
            if item.flags & _FLAG_SEQUENCE:
                self.forwards.append((dest, item))
                if dest not in self.forwarders:
                    self.forwarders = self.forwarders | {dest}
                continue
            if item.flags & _FLAG_WAITED:
                self.waited.add(dest)
            if item.flags & _FLAG_QOS:
                item = queued_as(item)
            dropped = inbox.push(item)
            if dropped is not None:
                self.dropped(dest, dropped)

    def release_held(self, pair: PairIn, dest: int) -> None:
        """Queue what ``pair`` held that is next in order now: a take lets its message through
        after decoding it (`take_arrival`, `take_express`), and unpickling it may have made
        progress (a ``__reduce__`` calling geode) that held the pair's next ones as early."""
        held = pair.held
        ready = []
        while pair.expected in held:
            ready.append(held.pop(pair.expected))
            pair.expected += 1
        self._queue_ready(dest, self.inboxes[dest], ready)

    def sink_run(self, rank: int, metas: list[memoryview]) -> None:
        """Take a run of frame-less arrivals from one rank, in order: `sink` on each, with the
        commonest case (the next message of its pair, to a node without drop_oldest) inline
        and its counters and queue peak settled once per run."""
        inboxes = self.inboxes
        sink = self.sink
        pair: PairIn | None = None
        inbox: Inbox | None = None
        stats: NodeStats | None = None
        items: deque[Parcel] = deque()  # the current pair's queue (this one is a placeholder)
        source = dest = -1
        count = nbytes = 0
        for meta in metas:
            try:
                if meta[_KIND_AT] in _NOT_ONE:  # (a run's parcels go behind those so far)
                    self._not_one(rank, meta)
                    continue
                flags, seq, src, dst, reply_to = _track_from(meta, 0)
            except Exception as exc:  # too short, or a control record that does not parse
                self.malformed_arrival(rank, meta, exc)
                continue
            if src != source or dst != dest or pair is None:
                if stats is not None:
                    self._settle_run(inbox, items, stats, count, nbytes)
                    count = nbytes = 0
                source, dest = src, dst
                inbox = inboxes.get(dst)
                pair = self._in.get((src, dst))
                if inbox is None or pair is None or inbox.drop_oldest:
                    pair = stats = None
                    sink(rank, meta, (), len(meta))  # the general path says what is wrong
                    continue
                items, stats = inbox.waiting, self.stats[dst]
            if seq == pair.expected and not pair.held and not flags & _DIVERT:
                pair.expected = seq + 1
                size = len(meta)
                items.append(
                    _tuple_new(Parcel, (src, seq, flags, reply_to, meta, (), size, 0, 0, _NEVER))
                )
                count += 1
                nbytes += size
            else:
                self._settle_run(inbox, items, stats, count, nbytes)
                count = nbytes = 0
                sink(rank, meta, (), len(meta))
        if stats is not None:
            self._settle_run(inbox, items, stats, count, nbytes)

    @staticmethod
    def _settle_run(
        inbox: Inbox | None, items: deque[Parcel], stats: NodeStats | None, count: int, nbytes: int
    ) -> None:
        if inbox is None or stats is None:
            return
        stats.received += count
        stats.received_bytes += nbytes
        if len(items) > inbox.peak:
            inbox.peak = len(items)
