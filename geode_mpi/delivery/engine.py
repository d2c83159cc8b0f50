"""The delivery engine: sequence numbers, dedup and order, acks, outboxes, credits, retries.

One engine serves the nodes of one rank. It sits between the transport (whose sink it is)
and the node queues: every data message arriving is let through once and in order per
(source, dest) pair; every message a node finishes with is acknowledged to its sender, in
batches; senders keep what is not acknowledged in an outbox and, with flow control, spend a
credit per message that the receiver returns when it takes the message from its queue.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from geode_mpi import codec
from geode_mpi.base.gate import other_threads
from geode_mpi.base.logger import log
from geode_mpi.codec import header
from geode_mpi.codec.decoding import decode_named as _decode_named
from geode_mpi.codec.plain import plain_message as _plain_message
from geode_mpi.codec.runs import Run
from geode_mpi.codec.wire import decode_plain as _decode_plain
from geode_mpi.delivery import cache
from geode_mpi.delivery.acks import Acks
from geode_mpi.delivery.config import QueueConfig
from geode_mpi.delivery.credits import Credits
from geode_mpi.delivery.engine_state import Decoder
from geode_mpi.delivery.express import Express
from geode_mpi.delivery.pairs import ACK_BATCH, PairIn, PairOut
from geode_mpi.delivery.polling import Polling
from geode_mpi.delivery.runs import RunCursor, queue_run, run_parcels
from geode_mpi.delivery.sending import SendPath
from geode_mpi.delivery.stats import DeadLetter, NodeStats
from geode_mpi.delivery.streams import Streams
from geode_mpi.delivery.topics import TopicNotMadeYet, TopicTable
from geode_mpi.errors import DecodeError
from geode_mpi.message import Message
from geode_mpi.queues import NEVER as _NEVER
from geode_mpi.queues import Inbox, Key, Match, Parcel
from geode_mpi.queues.bundles import add_bundle, take_many
from geode_mpi.transport import Transport

MALFORMED_WARNINGS = 10  # malformed arrivals from one rank that each log a warning
_tuple_new = tuple.__new__
_FLAG_RESENT = codec.FLAG_RESENT
_FLAG_TRACKED = codec.FLAG_TRACKED
_FLAG_WAITED = codec.FLAG_WAITED
_FLAG_SEQUENCE = codec.FLAG_SEQUENCE
_FLAG_TOPIC = codec.FLAG_TOPIC
_FLAG_QOS = codec.FLAG_QOS
# Arrivals that leave the in-order fast paths: a sequencer's, those whose sender waits for
# their processing (requests, sends with ack=True), which are noted in `waited`, and those
# with a priority or a ttl (`queued_as`).
_DIVERT = _FLAG_SEQUENCE | _FLAG_WAITED | _FLAG_QOS
_KIND_AT = header.KIND_AT  # meta[_KIND_AT]: a message's kind, read on every arrival
_KIND_CONTROL = header.KIND_CONTROL
_KIND_RUN = header.KIND_RUN
_NOT_ONE = frozenset((_KIND_CONTROL, _KIND_RUN))  # kinds that are not one message
_CACHED = cache.MARKER  # meta[0] of a message with a cache prefix (never a codec version)
_track_from = header.track_fields  # flags, seq, source, dest, reply_to of a header
# What `Engine.take_arrival` leaves to the sink: the diverted, a topic's (dest is the topic)
# and a work queue's task (source is its stream). Its route byte (`_FLAG_QOS`) is read apart.
_NOT_TAKEN = _DIVERT | _FLAG_TOPIC | codec.FLAG_WORK
_HEAD_SIZE = header.SIZE
_VERSION = header.VERSION
_read_lead = header.LEAD.unpack_from  # `take_arrival`'s one read of a header
_StructError = struct.error
_TEXT_LEADS = header.TEXT_LEADS
_PLAIN_LEADS = header.PLAIN_LEADS
_LEAD_TRACKED = _FLAG_TRACKED << 16  # FLAG_TRACKED in a lead


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


class Acknowledger:
    """Handed to a message taken with an explicit ack: its ack() and nack() land here."""

    __slots__ = ("_engine", "_index", "_parcel")

    def __init__(self, engine: Engine, index: int, parcel: Parcel) -> None:
        self._engine = engine
        self._index = index
        self._parcel = parcel

    def ack(self) -> None:
        if other_threads():  # Message.ack() may come from any thread: hold the gate
            with self._engine.transport.gate:
                self._engine.finish(self._index, self._parcel)
            return
        self._engine.finish(self._index, self._parcel)

    def nack(self, error: BaseException | None) -> None:
        with self._engine.transport.gate:
            self._engine.fail(self._index, self._parcel, error)


class Engine(Credits, Acks, Streams, Polling, Express):
    """Delivery state of the nodes one rank hosts (its parts off the arrival path, one group
    each, in the mixins it inherits: credits.py and polling.py over failures.py, acks.py,
    streams.py; all over engine_state.py).

    Args:
        transport: this rank's transport (the engine becomes its sink).
        names: every node's name, by index.
        rank_of: the rank hosting a node index.
        local: the node indices this rank hosts.
        configs: every node's queue settings, by index (the same on every rank).
        resend_after: seconds after which an unacknowledged message is sent again (None: never;
            MPI does not lose messages, so this matters only on a lossy transport).
        decode: turns a parcel into a Message (for dead letters).
        acks: track every message sent until it is acknowledged (see `SendPath`).
    """

    def __init__(
        self,
        transport: Transport,
        names: Sequence[str],
        rank_of: Callable[[int], int],
        local: Sequence[int],
        configs: Sequence[QueueConfig],
        resend_after: float | None,
        decode: Decoder,
        acks: bool = True,
    ) -> None:
        self.transport = transport
        self.names = names
        self._node_rank = rank_of
        self.topics = TopicTable()
        self.configs = configs
        self.resend_after = resend_after
        self.decode = decode
        self.inboxes = {
            index: Inbox(configs[index].capacity, configs[index].policy == "drop_oldest")
            for index in local
        }
        self.stats = {index: NodeStats(names[index]) for index in local}
        for index, inbox in self.inboxes.items():
            inbox.on_expired = self._expiry(index)
        # The counters a sender's traffic goes to: its node's, also for its topic streams.
        self.sender_stats = dict(self.stats)
        self.dead: dict[int, list[DeadLetter]] = {index: [] for index in local}
        self.pairs_out: dict[tuple[int, int], PairOut] = {}  # (source, dest) -> its send side
        self._in: dict[tuple[int, int], PairIn] = {}
        self._due: set[tuple[int, int]] = set()  # incoming pairs with acks or credits to send
        self._due_since = 0.0  # when the oldest of them became due (perf_counter)
        self._explicit = {index: configs[index].ack == "explicit" for index in local}
        self._window = {index: configs[index].credits(len(names)) for index in local}
        # Nodes whose queue has no window and automatic acks: taking is processing, at once.
        self.plain = {i for i in local if self._window[i] is None and not self._explicit[i]}
        self._next_resend = 0.0
        self._asked: dict[tuple[int, int], list[float]] = {}  # when each pair last asked
        self.in_hand = 0  # messages taken with an explicit ack, not yet acked or nacked
        # Arrivals dropped because their header could not be routed, by sending rank.
        self.malformed: dict[int, int] = {}
        self.closed = False  # set by the Geode once its transport is closed
        # Quiescence-wave records go to this: (from node, type, wave, sent, received).
        self.on_wave: Callable[[int, int, int, int, int], None] | None = None
        # Messages a local node must forward as a group's sequencer, in arrival order, and
        # what forwards them (outside the transport's sink, where sending may wait).
        self.forwards: deque[tuple[int, Parcel]] = deque()
        self.on_forward: Callable[[int, Parcel], None] | None = None
        # Local nodes where a message whose sender waits for its processing arrived, and what
        # serves them (the Geode's handlers) whenever this rank waits.
        self.waited: set[int] = set()
        self.on_waited: Callable[[], None] | None = None
        # Every message and control record this rank sends leaves through here.
        self.path = SendPath(
            transport, names, self.sender_stats, self.rank_of, local, acks, resend_after
        )
        transport.attach(self.sink, self.sink_run)

    # -- names and ranks, topic streams included -------------------------------------------

    def rank_of(self, index: int) -> int:
        """The rank hosting a node, or the publisher of a topic stream."""
        if index >= len(self.names):
            index = self.topics.publisher_of(index)
        return self._node_rank(index)

    def name_of(self, index: int) -> str:
        """A node's name, or ``"publisher on topic"`` for a topic stream."""
        if index < len(self.names):
            return self.names[index]
        stream = self.topics.streams[index]
        return f"{self.names[stream.publisher]} on topic {stream.topic!r}"

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

    def take_arrival(self, rank: int, meta: memoryview | bytearray, index: int) -> Message | None:
        """`sink`, `take_plain` of node ``index`` (one of `plain`) and `codec.decode` at once,
        for a frame-less arrival that came while that node waited on an empty queue
        (`Engine.take_express`): the message, decoded (a small array may be a view of meta,
        taken for good), or None, with nothing done, for any other arrival.

        The next message of its pair, for ``index``, not diverted, from a node (not a topic's
        or a work queue's stream), that decodes, is taken at once, never queued: the counters,
        order, dedup and acks are the sink's and `take`'s. Anything else (a control record, a
        run, a duplicate, one out of order, for another node, one that does not decode: its
        `DecodeError` noted in `refused`) is the caller's to give to `sink` (which says what is
        wrong with it, or queues it).
        """
        try:  # the header, read once: its first four bytes as one number (`header.LEAD`)
            head = _read_lead(meta, 0)
            lead, mid, seq, ts, source, dest, lengths, n_data, data_len, reply_to, _ = head
        except _StructError:  # shorter than a header: the sink says what is wrong
            return None
        pair = self._in.get((source, dest))
        inbox = self.inboxes[index]
        if (
            dest != index
            or pair is None  # (a pair's first arrival is checked by the sink)
            or seq != pair.expected
            or pair.held
            or inbox.waiting
            or inbox.drop_oldest
            or inbox.private  # (an executor's tasks: only its own filter takes them)
        ):
            return None
        try:  # (meta is a whole bytearray, or a memoryview of one: a small array may be a view)
            if lead in _TEXT_LEADS and not lengths and not n_data:  # the commonest first
                end = _HEAD_SIZE + data_len
                if end != len(meta):  # (a damaged length: `decode_plain` says so)
                    return None
                message = _plain_message(
                    str(meta[_HEAD_SIZE:end], "utf-8"), mid, seq, ts, source, dest, reply_to,
                    self.names,
                )  # fmt: skip
            elif lead in _PLAIN_LEADS and not lengths and not n_data:
                message = _decode_plain(meta, (), self.names, True, head)
            elif (
                lead & 0xFF != _VERSION
                or lead >> 8 & 0xFF in _NOT_ONE
                or lead >> 24  # a route, a priority or a ttl: the sink's
                or lead >> 16 & _NOT_TAKEN
            ):
                return None
            else:  # a Message subclass, headers, attributes: the general decode
                found = _decode_named(meta, self.names, True, head) if lengths else None
                if found is None:  # (not a subclass's plain message)
                    found = codec.decode(memoryview(meta), (), self.names, None, True)
                message = found
        except DecodeError as exc:  # (nothing admitted: the sink queues it, the receive
            self.refused = (meta, exc)  # raises this, not decoding it again: `take_express`)
            return None
        except UnicodeDecodeError:
            return None  # (nothing admitted: the sink queues it, the receive dead-letters it)
        pair.expected = seq + 1
        if pair.held:  # (its decode made progress: what came meanwhile was held as early)
            self.release_held(pair, index)
        nbytes = len(meta)
        stats = self.stats[index]
        stats.received += 1
        stats.received_bytes += nbytes
        if not inbox.peak:
            inbox.peak = 1  # (what the queue's peak would have been)
        if pair.done_now(seq, lead & _LEAD_TRACKED):  # (`_done`'s commonest case)
            stats.processed += 1
        else:
            flags = lead >> 16 & 0xFF
            parcel = (source, seq, flags, reply_to, meta, (), nbytes, 0, 0, _NEVER)
            self._done(index, _tuple_new(Parcel, parcel))
        return message

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
                stats.dropped += 1
                self._done(dest, dropped)
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
                continue
            if item.flags & _FLAG_WAITED:
                self.waited.add(dest)
            if item.flags & _FLAG_QOS:
                item = queued_as(item)
            dropped = inbox.push(item)
            if dropped is not None:
                stats.dropped += 1
                self._done(dest, dropped)

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

    def take(
        self, index: int, match: Match | None, key: Key | None, explicit: bool
    ) -> tuple[Parcel, Acknowledger | None] | None:
        """Remove the next deliverable parcel from a node's queue.

        Args:
            index: the local node.
            match: a filter, or None.
            key: deliver the smallest key first instead of the oldest.
            explicit: the caller will ack or nack (an Acknowledger comes back); otherwise taking
                is processing it, unless the node's queue wants explicit acks anyway.
        """
        parcel = self.inboxes[index].pop(match, key)
        if parcel is None:
            return None
        if not explicit and index in self.plain:  # no window, automatic acks: the usual case
            self._done(index, parcel)
            return parcel, None
        self._credit(index, parcel)
        if explicit or self._explicit[index]:
            self.in_hand += 1
            return parcel, Acknowledger(self, index, parcel)
        self._done(index, parcel)
        return parcel, None

    def take_plain(self, index: int) -> Parcel | None:
        """`take` for a node in `plain` (no window, automatic acks), no filter, no order."""
        parcel = self.inboxes[index].pop()
        if parcel is not None:
            self._done(index, parcel)
        return parcel

    def take_run(self, index: int, cursor: RunCursor) -> Message | None:
        """`take_plain` and the decode of its parcel, for a node in `plain` whose queue's first
        entry is a run (``cursor``, that entry's frames): its next message (all of the run's
        built at its first take), counted processed as `_done` does (acked with the next ack
        record, as a range); None if a plain take would not take it (something held back,
        ranked or private: `take_plain` then decides)."""
        inbox = cursor.inbox  # (`take_next` and `PairIn.done_now` inline: once a message)
        if inbox.ranked or inbox.held_back or inbox.private:
            return None
        built = cursor.built
        if built is None:  # (its first take: every message built in one pass)
            built = cursor.build()
        at = cursor.at
        cursor.at = at + 1
        if at + 1 < cursor.end:
            inbox.extra -= 1
        else:
            inbox.waiting.popleft()
            inbox.bundles -= 1
        pair = cursor.pair
        seq = cursor.first_seq + at
        if (
            seq == pair.done_below
            and not pair.done_extra
            and (
                not cursor.tracked
                or (pair.ack_due and seq + 1 - pair.acked_below + len(pair.unacked) < ACK_BATCH)
            )
        ):
            pair.done_below = seq + 1
            cursor.stats.processed += 1
        else:
            self._done(index, cursor.parcel(at))
        return built[at]

    def take_runs(self, index: int, cursor: RunCursor, most: int) -> list[Message]:
        """`take_run` for up to ``most`` of the run's messages at once (`Geode.receive_many`),
        counted processed together: in order, all but the last at once, the last as `_done`
        does (its ack due, a full ack batch sent). Empty if a plain take would not take them."""
        at = take_many(self.inboxes[index], cursor, most)
        if at < 0:
            return []
        end = cursor.at
        built = cursor.built
        if built is None:
            built = cursor.build()
        pair = cursor.pair
        first = cursor.first_seq
        last = first + end - 1
        if first + at == pair.done_below and not pair.done_extra:
            pair.done_below = last  # (in order: every one before the last, as `_done` would)
            self.stats[index].processed += end - 1 - at
            if pair.done_now(last, cursor.tracked):
                self.stats[index].processed += 1
            else:
                self._done(index, cursor.parcel(end - 1))
        else:
            for taken in range(at, end):
                self._done(index, cursor.parcel(taken))
        return built[at:end]

    def _done(self, index: int, parcel: Parcel) -> None:
        key = (parcel.source, index)
        pair = self._in.get(key)
        if pair is None:  # from a topic the node has since unsubscribed from: nobody waits
            self.stats[index].processed += 1
            return
        seq = parcel.seq
        if seq == pair.done_below and not pair.done_extra:
            pair.done_below = seq + 1  # the common case: processed in order, acked as a range
        elif pair.processed(seq):
            pair.unacked.append(seq)  # out of order: acked by its number
        else:
            return
        self.stats[index].processed += 1
        flags = parcel.flags
        if flags & _FLAG_TRACKED:
            if not pair.ack_due:
                pair.ack_due = True
                if not self._due:
                    self._due_since = time.perf_counter()
                self._due.add(key)
            if flags & _FLAG_WAITED:
                self._flush_pair(key, pair)
                self.transport.flush()  # its sender is waiting for it
            elif pair.done_below - pair.acked_below + len(pair.unacked) >= ACK_BATCH:
                self._flush_pair(key, pair)
