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
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from geode_mpi import codec
from geode_mpi.base.backoff import activity_hook
from geode_mpi.base.gate import other_threads
from geode_mpi.base.logger import log
from geode_mpi.codec import header
from geode_mpi.codec.runs import Run
from geode_mpi.codec.wire import decode_plain as _decode_plain
from geode_mpi.delivery import cache
from geode_mpi.delivery.config import QueueConfig
from geode_mpi.delivery.control import (
    ACK,
    ASK,
    decode_ack,
    decode_wave,
    encode_ack,
    encode_ask,
    kind,
    ranges,
)
from geode_mpi.delivery.pairs import ACK_BATCH, PairIn, PairOut
from geode_mpi.delivery.runs import RunCursor, queue_run, release, run_parcels
from geode_mpi.delivery.sending import SendPath
from geode_mpi.delivery.stats import DeadLetter, NodeStats
from geode_mpi.delivery.topics import TopicNotMadeYet, TopicStream, TopicTable
from geode_mpi.delivery.waiting import wait_for
from geode_mpi.errors import DecodeError, QueueFull, SendTimeout
from geode_mpi.message import Message
from geode_mpi.queues import NEVER as _NEVER
from geode_mpi.queues import Inbox, Key, Match, Parcel
from geode_mpi.queues.bundles import add_bundle, take_many
from geode_mpi.transport import Transport
from geode_mpi.transport.sealed import keep_or_copy

# A wait flushes pending acks once it has lasted this long: not at once, so that a reply that
# comes within microseconds (a ping-pong) does not cost an ack record per message.
FLUSH_AFTER = 100e-6
ACK_DELAY = 1e-3  # the longest a due ack waits while its node keeps calling geode_mpi
MALFORMED_WARNINGS = 10  # malformed arrivals from one rank that each log a warning
_tuple_new = tuple.__new__
_new_object = object.__new__
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
# A topic's retained message replayed for new subscribers: resent, and not tracked (a resend
# after an ack timeout is tracked, and a subscriber that has it acknowledges it again).
_REPLAY = _FLAG_RESENT | _FLAG_TRACKED
_KIND_AT = header.KIND_AT  # meta[_KIND_AT]: a message's kind, read on every arrival
_KIND_CONTROL = header.KIND_CONTROL
_KIND_RUN = header.KIND_RUN
_NOT_ONE = frozenset((_KIND_CONTROL, _KIND_RUN))  # kinds that are not one message
_CACHED = cache.MARKER  # meta[0] of a message with a cache prefix (never a codec version)
_track_from = header.track_fields  # flags, seq, source, dest, reply_to of a header
_TRACK_SIZE = header.TRACK_SIZE  # the bytes `_track_from` reads
# What `Engine.take_arrival` leaves to the sink: the diverted, a topic's (dest is the topic)
# and a work queue's task (source is its stream). Its route byte (`_FLAG_QOS`) is read apart.
_NOT_TAKEN = _DIVERT | _FLAG_TOPIC | codec.FLAG_WORK
_HEAD_SIZE = header.SIZE
_ROUTE_AT = header.ROUTE_AT
_VERSION = header.VERSION
_read_head = header.DECODE.unpack_from  # what `decode_plain` takes
_PLAIN_KINDS = frozenset((header.KIND_PICKLE, header.KIND_TEXT, header.KIND_SMALL_ARRAY))
_NOT_PLAIN = header.FLAG_REST | header.FLAG_COMPRESSED  # (the general decode reads them)

Decoder = Callable[[Parcel], Message]


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


class Engine:
    """Delivery state of the nodes one rank hosts.

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
        """Stop tracking ``sub`` on stream ``number`` (it unsubscribed): its outbox and
        credits on the publisher's side, its place in the stream on its own side."""
        self.pairs_out.pop((number, sub), None)
        self._in.pop((number, sub), None)

    # -- sending ---------------------------------------------------------------------------

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
        if not self.transport.delivers_later:
            raise QueueFull(
                names[dst],
                self.name_of(src),
                config.capacity,
                pair.window or 0,
                f"in a one-process world nothing can take from {names[dst]}'s queue while "
                "send() waits (receive between sends, or use policy 'drop_oldest')",
            )
        stats = self.sender_stats[src]
        stats.credit_waits += 1
        started = time.monotonic()
        asked = [started]

        def has_credit() -> bool:
            if pair.credits:
                return True
            self._ask_again(src, dst, asked)
            return False

        try:
            if not self.wait(has_credit, deadline):
                raise SendTimeout(-1, self.name_of(src), names[dst], timeout or 0.0)
        finally:
            stats.credit_wait_seconds += time.monotonic() - started
        return pair

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
        (`Runtime.spin_plain`): the message, decoded (a small array may be a view of meta,
        taken for good), or None, with nothing done, for any other arrival.

        The next message of its pair, for ``index``, not diverted, from a node (not a topic's
        or a work queue's stream), that decodes, is taken at once, never queued: the counters,
        order, dedup and acks are the sink's and `take`'s. Anything else (a control record, a
        run, a duplicate, one out of order, for another node, one that does not decode) is the
        caller's to give to `sink` (which says what is wrong with it, or queues it).
        """
        inbox = self.inboxes[index]
        nbytes = len(meta)
        if (
            nbytes < _HEAD_SIZE
            or meta[_KIND_AT] in _NOT_ONE
            or meta[_ROUTE_AT]  # a route, a priority or a ttl: the sink's
            or inbox.waiting
            or inbox.drop_oldest
            or inbox.private  # (an executor's tasks: only its own filter takes them)
        ):
            return None
        head = _read_head(meta, 0)  # the header, read once (`decode_plain` takes it)
        version, kind, flags, _, seq, _, source, dest, lengths, n_data, _, reply_to, _ = head
        pair = self._in.get((source, dest))
        if (
            dest != index
            or pair is None  # (a pair's first arrival is checked by the sink)
            or seq != pair.expected
            or pair.held
            or flags & _NOT_TAKEN
            or version != _VERSION
        ):
            return None
        try:  # (meta is a whole bytearray, or a memoryview of one: a small array may be a view)
            if not lengths and not n_data and kind in _PLAIN_KINDS and not flags & _NOT_PLAIN:
                message = _decode_plain(meta, (), self.names, True, head)
            else:  # a Message subclass, headers, attributes: the general decode
                message = codec.decode(memoryview(meta), (), self.names, None, True)
        except DecodeError:
            return None  # (nothing admitted: the sink queues it, the receive dead-letters it)
        pair.expected = seq + 1
        stats = self.stats[index]
        stats.received += 1
        stats.received_bytes += nbytes
        if not inbox.peak:
            inbox.peak = 1  # (what the queue's peak would have been)
        if pair.done_now(seq, flags & _FLAG_TRACKED):  # (`_done`'s commonest case)
            stats.processed += 1
        else:
            parcel = (source, seq, flags, reply_to, meta, (), nbytes, 0, 0, _NEVER)
            self._done(index, _tuple_new(Parcel, parcel))
        return message

    def _not_one(self, rank: int, meta: memoryview) -> None:
        """An arrival that is not one message: a control record, or a run of messages."""
        if meta[_KIND_AT] == _KIND_CONTROL:
            self._control(meta)
            return
        try:
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
            copies = frames if first else [keep_or_copy(frame) for frame in frames]
            first = False
            parcel = _tuple_new(
                Parcel, (stream, seq, flags, reply_to, meta, copies, nbytes, 0, 0, _NEVER)
            )
            self._admit(key, pair, parcel, sub, self.inboxes[sub])

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

    def _credit(self, index: int, parcel: Parcel) -> None:
        """A parcel left node ``index``'s queue: with a window, its sender gets a credit back."""
        window = self._window[index]
        if window is not None and not parcel.attempts:  # a retry was counted when first taken
            key_in = (parcel.source, index)
            pair_in = self._in.get(key_in)  # None: a topic its node has since unsubscribed from
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

    def finish(self, index: int, parcel: Parcel) -> None:
        """A taken message was processed (acked)."""
        self.in_hand -= 1
        self._done(index, parcel)

    def fail(self, index: int, parcel: Parcel, error: BaseException | None) -> None:
        """Processing a taken message failed: deliver it again later, or dead-letter it."""
        self.in_hand -= 1
        attempts = parcel.attempts + 1
        config = self.configs[index]
        stats = self.stats[index]
        if attempts < config.max_attempts:
            stats.retries += 1
            again = parcel._replace(attempts=attempts)
            inbox = self.inboxes[index]
            # Back in the queue, beyond the credits its sender was given back for it: a queue
            # can hold up to its capacity plus the messages waiting for a retry.
            inbox.put_back(again, time.monotonic() + config.delay(attempts))
            return
        self.dead_letter(index, parcel, error, attempts)

    def dead_letter(
        self,
        index: int,
        parcel: Parcel,
        error: BaseException | None,
        attempts: int,
        finish: bool = True,
        expired: str | None = None,
    ) -> None:
        """Record a message that cannot be processed; with ``finish``, count it processed
        (acknowledged: it is not lost, it is in the dead letters); ``expired``: it is kept
        because its ttl ran out, and this says how."""
        try:
            message: Message | None = self.decode(parcel)
        except DecodeError as exc:
            message = None
            error = error or exc
        if expired is not None:
            text = expired
        else:
            text = "no error given" if error is None else f"{type(error).__name__}: {error}"
        self.dead[index].append(
            DeadLetter(
                self.names[index],
                message,
                text,
                error,
                attempts,
                self._sender_name(parcel.source),
                parcel.seq,
                expired is not None,
            )
        )
        self.stats[index].dead_letters += 1
        if finish:
            self._done(index, parcel)

    def _sender_name(self, index: int) -> str:
        try:
            return self.name_of(index)
        except KeyError:  # (arrivals from unknown sources are dropped: this is a safeguard)
            return f"node index {index}"

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

    # -- acknowledgements ------------------------------------------------------------------

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
        if not pair.ack_due and not pair.owed and not again:
            return
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
                return  # from a subscriber that has since unsubscribed
            raise DecodeError(
                f"an ack from node index {receiver} for node index {sender}, which sent it nothing"
            )
        if taken > pair.taken_seen:  # a running total: a record lost or repeated does no harm
            if pair.credits is not None:
                pair.credits += taken - pair.taken_seen
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

    # -- waiting ---------------------------------------------------------------------------

    @property
    def data_received(self) -> int:
        """Data messages this rank received: queued, dropped as duplicates, or held until an
        earlier one arrives (see `data_sent`, its counterpart)."""
        held = sum(len(pair.held) for pair in self._in.values())
        return held + sum(stats.received + stats.duplicates for stats in self.stats.values())

    @property
    def data_sent(self) -> int:
        """Data messages this rank sent, resends included: summed over the job, equal to the
        sum of `data_received` exactly when no message is in flight."""
        return sum(stats.sent + stats.resent for stats in self.stats.values())

    def poll(self) -> bool:
        """Run the transport once, forward what a sequencer must, and resend what timed out;
        True if anything happened."""
        found = self.transport.progress()
        if self.forwards:
            self.forward()
            found = True
        if self._due and time.perf_counter() - self._due_since > ACK_DELAY:
            self.flush()  # a receiver that polls without waiting still acks within ACK_DELAY
        if self.resend_after is not None:
            self._resend_due()
        hook = activity_hook()  # --hang-timeout's watchdog
        if hook is not None:
            hook()
        return found

    def forward(self) -> None:
        """Hand each message waiting at a sequencer to the forwarder (`on_forward`), in arrival
        order; the forwarder counts each one done with `forwarded` once it has sent it on."""
        while self.forwards and self.on_forward is not None:
            index, parcel = self.forwards.popleft()
            try:
                self.on_forward(index, parcel)
            except DecodeError as exc:  # it cannot be forwarded: a dead letter of its sequencer
                self.dead_letter(index, parcel, exc, 1)
        self.transport.flush()  # the copies go out now, not when this rank next waits

    def forwarded(self, index: int, parcel: Parcel) -> None:
        """A message that reached local node ``index`` (a sequencer) was sent on: it counts as
        processed, and is acknowledged to its sender."""
        self._done(index, parcel)

    def flush_after(self, started: float) -> None:
        """Flush pending acks if a wait that began at ``started`` (perf_counter) lasted long
        enough that the peers may be waiting for them."""
        if self._due and time.perf_counter() - started > FLUSH_AFTER:
            self.flush()

    def wait(self, done: Callable[[], bool], deadline: float | None) -> bool:
        """Drive progress until ``done()`` or the deadline (False), in the one wait loop
        (`geode_mpi.delivery.waiting`).

        Other threads may run at its pauses (the gate is handed over): callers look at the
        state again once it returns, never before (``done()`` holds when it returns True)."""
        return wait_for(self, done, deadline)

    def serve_waiting(self, leave: Collection[int] = ()) -> bool:
        """What a waiting rank does for the others: forward what a sequencer holds, serve the
        requests whose senders wait (except at the nodes in ``leave``: their waiter handles
        them), resend what is due. True if it forwarded (a forward may land here)."""
        forwarded = bool(self.forwards)
        if forwarded:
            self.forward()
        waited = self.waited
        if waited:
            if leave:
                waited.difference_update(leave)
            if waited and self.on_waited is not None:
                self.on_waited()
        if self.resend_after is not None:
            self._resend_due()
        return forwarded

    def snapshot(self, index: int) -> NodeStats:
        """A copy of a local node's counters, with its queue depth and outbox size now."""
        if not self.closed:
            self.flush()
            self.poll()
            self.inboxes[index].purge()  # expired messages are not counted as queued
        stats = self.stats[index]
        stats.queue_depth = len(self.inboxes[index])
        stats.queue_peak = self.inboxes[index].peak
        stats.unacked = sum(self.unacked_by_dest(index).values())
        return NodeStats(**stats.as_dict())

    def unacked_by_dest(self, index: int) -> dict[int, int]:
        """How many messages local node ``index`` sent (directly, or published on its topic
        streams) that each destination node has not acknowledged yet. Only reads."""
        streams = self.topics.streams
        found: dict[int, int] = {}
        for (src, dst), pair in self.pairs_out.items():
            if pair.outbox and (
                src == index or (src in streams and streams[src].publisher == index)
            ):
                found[dst] = found.get(dst, 0) + pair.unacked()
        return found
