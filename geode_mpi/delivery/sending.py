"""The send path: every message of a rank leaves through here, to a node or on a stream.

One call per message from the layer above: it takes the message's id, builds its stamp and
encodes it (`SendPath.stamp`, the one place), hands the bytes to the transport,
and records the message on its pair (its seq, a credit, its outbox entry, the counters).
Point-to-point sends, a work queue's hand-outs (`to_node`), topic publishes (`publish`, with
the rest of the topic side in publishing.py) and control records (`control`) each have one
method.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from geode_mpi import codec
from geode_mpi.codec import compression
from geode_mpi.codec.compression import Compression
from geode_mpi.codec.header import with_flags
from geode_mpi.codec.runs import count as run_count
from geode_mpi.codec.runs import is_run, joinable, kept, state_of, wire_name
from geode_mpi.delivery.authoring import WATCHING, authored
from geode_mpi.delivery.cache import (
    PayloadCache,
    budget_of,
    cache_bound,
    through_cache,
)
from geode_mpi.delivery.cache import shared_arrays as _shared  # truthy once one is shared
from geode_mpi.delivery.direct import ID_BITS as ID_BITS  # (re-exported)
from geode_mpi.delivery.direct import Lane
from geode_mpi.delivery.pairs import OutboxEntry, PairOut
from geode_mpi.delivery.publishing import Publishing
from geode_mpi.delivery.runs import RUN_MAX, BatchLazy, OpenRun, progress
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.delivery.tracepoints import trace_send
from geode_mpi.message import Message, data_alone
from geode_mpi.tracing import TRACER, now_us
from geode_mpi.transport import SendTicket as SendTicket  # what a send returns (re-exported)
from geode_mpi.transport import Transport
from geode_mpi.transport.base import Frame

_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__
_Stamp, _encode = codec.Stamp, codec.encode  # hot-path names, bound once
# The delivery flags of a tracked message, and of one whose sender also waits for it.
_TRACKED = codec.FLAG_TRACKED
_TRACKED_WAITED = codec.FLAG_TRACKED | codec.FLAG_WAITED


def _nowhere(rank: int) -> bool:
    """No rank is reached over the network (the in-process transport's answer)."""
    return False


def _batched(transport: Transport, rank: int, meta: bytes) -> SendTicket:
    """`Transport.send` of a message without frames, batched."""
    return transport.send(rank, meta, (), True)


def _unbatched(transport: Transport, rank: int, meta: bytes) -> SendTicket:
    """`Transport.send` of a message without frames, not batched."""
    return transport.send(rank, meta, ())


def sent_elsewhere(rank: int) -> SendTicket:
    """The ticket of a message that ``rank``, which hosts its source, sends: done at once."""
    return SendTicket(rank, 0, True)


class SendPath(Publishing):
    """How this rank's messages leave: stamped, encoded, sent, recorded.

    Args:
        transport: this rank's transport.
        names: every node's name, by index (for traces).
        stats: the counters each sender's traffic goes to, by node or stream number (the
            engine's `sender_stats`, kept up to date as streams are added).
        rank_of: the rank hosting a node index.
        local: the node indices this rank hosts (the authors of its messages' ids).
        acks: track every message until it is acknowledged (``Geode(acks=...)``).
        resend_after: None when nothing is ever resent (then an outbox keeps only headers).
    """

    def __init__(
        self,
        transport: Transport,
        names: Sequence[str],
        stats: Mapping[int, NodeStats],
        rank_of: Callable[[int], int],
        local: Sequence[int],
        acks: bool,
        resend_after: float | None,
    ) -> None:
        self.transport = transport
        self.names = names
        self.stats = stats
        self.rank_of = rank_of
        self.counter = dict.fromkeys(local, 0)  # messages each local node authored
        self.acks = acks
        self.resend_after = resend_after
        self.cache = PayloadCache(budget_of(None))  # (Geode(cache_bytes=) sets its budget)
        # The Geode's compress= setting (None: off unless a topic or message says otherwise),
        # and whether a rank is reached over the network path (for "auto").
        self.compress: Compression | None = None
        self.network: Callable[[int], bool] = _nowhere
        self.plain_flags = _TRACKED if acks else 0  # a plain send's delivery flags
        # The thread in close(), once it began (`Engine.closer`: kept here, where the Engine
        # would pass the number of attributes CPython keeps inline).
        self.closer: threading.Thread | None = None
        self.close_unfinished = False  # that thread's close() ended without finishing
        # The commonest isend's call, bound once (optional in a transport: `send` otherwise).
        self.batch_meta: Callable[[int, bytes], SendTicket] = getattr(
            transport, "batch_meta", partial(_batched, transport)
        )
        # A blocking send's (`MPITransport.send_meta`; `send` otherwise).
        self.send_meta: Callable[[int, bytes], SendTicket] = getattr(
            transport, "send_meta", partial(_unbatched, transport)
        )
        # A transport that batches lazy entries carries runs (delivery/runs.py); None: none.
        self.batch_lazy: BatchLazy | None = getattr(transport, "batch_lazy", None)
        self.lanes: dict[PairOut, Lane] = {}  # each pair's plain sends (delivery/direct.py)
        # The lanes of this rank's node by its callers' name for the dest (`Runtime.routes`'s
        # keys): `Geode.send`'s fast case looks them up here.
        self.dests: dict[Any, Lane] = {}
        self.flush_to: Callable[[int], None] | None = getattr(transport, "flush_to", None)
        # Send the batches that are due (`MPITransport.flush_due`; else a poll of the transport),
        # and test one send (`MPITransport.finish_send`): what a run's handle asks for.
        fallback = partial(progress, transport)
        self.flush_due: Callable[[], bool] = getattr(transport, "flush_due", fallback)
        self.finish_send: Callable[[SendTicket], bool] = getattr(transport, "finish_send", fallback)

    def stamp(
        self,
        message: Message,
        author: int,
        src: int,
        dst: int,
        seq: int,
        flags: int,
        reply_to: int = codec.NO_REPLY,
        via: codec.Route | None = None,
    ) -> tuple[codec.Stamp, bytes, Sequence[Frame]]:
        """Take ``author``'s next message id, build the stamp and encode: the one place.

        ``src`` and ``dst`` are the header's (a node, or a stream's or topic's number);
        ``via``: where a sequencer or dispatcher sends it on (the header's route). An
        `EncodeError` leaves the id untaken.
        """
        count = self.counter[author]
        stamp = _tuple_new(_Stamp, ((author << ID_BITS) | count, seq, time.time(), src, dst))
        meta, frames = _encode(message, stamp, flags, reply_to, via)
        self.counter[author] = count + 1
        if WATCHING:  # (a thread runs a handler: what it authors counts)
            authored()
        return stamp, meta, frames

    def to_node(
        self,
        message: Message,
        author: int,
        src: int,
        dst: int,
        rank: int,
        pair: PairOut,
        ack: bool,
        flags: int = 0,
        reply_to: int = codec.NO_REPLY,
        batch: bool = False,
        via: codec.Route | None = None,
        compress: Compression | None = None,
    ) -> tuple[SendTicket, codec.Stamp]:
        """Send the next message of pair (``src``, ``dst``) to node ``dst`` on ``rank``.

        ``src`` is the sending node, or a work queue's stream (then ``author`` is its
        dispatcher); ``ack``: the sender waits for its processing; ``via``: the route of a
        message to a sequencer or dispatcher; ``compress``: the message's own setting. Tracked
        (in the pair's outbox until acknowledged) with ``acks`` or ``ack``.
        """
        begun = now_us() if TRACER.on else 0.0
        tracked = self.acks or ack
        if tracked:
            flags |= _TRACKED_WAITED if ack else _TRACKED
        seq = pair.next_seq
        # `stamp` inline (the commonest send: one Python call fewer per message); a test
        # checks that both give the same stamp and bytes.
        count = self.counter[author]
        stamp = _tuple_new(_Stamp, ((author << ID_BITS) | count, seq, time.time(), src, dst))
        meta, frames = _encode(message, stamp, flags, reply_to, via)
        self.counter[author] = count + 1
        if WATCHING:  # (a thread runs a handler: what it authors counts)
            authored()
        if not frames:  # (a small message: one test on its path)
            ticket = self.transport.send(rank, meta, frames, batch)
            nbytes = len(meta)
        else:
            ticket, meta, frames, nbytes = self.with_frames(rank, meta, frames, batch, compress)
        pair.next_seq = seq + 1
        if pair.credits is not None:
            pair.credits -= 1
        stats = self.stats[src]
        stats.sent += 1
        stats.sent_bytes += nbytes
        if tracked:
            if self.resend_after is None:
                # Nothing will send it again (MPI loses nothing): keep its header, not its
                # arrays, so that the buffers they live in are free for reuse as soon as the
                # caller lets go of them, not only once the batched ack comes back.
                pair.outbox[seq] = _tuple_new(OutboxEntry, (meta, (), rank))
            else:
                pair.outbox[seq] = _tuple_new(OutboxEntry, (meta, frames, rank))
                pair.resends[seq] = [time.monotonic(), 1]
        if begun:
            shown = stamp if author == src else _tuple_new(_Stamp, (*stamp[:3], author, dst))
            trace_send(self.names, shown, message, meta, frames, begun)
        return ticket, stamp

    def with_frames(
        self,
        rank: int,
        meta: bytes,
        frames: Sequence[Frame],
        batch: bool,
        compress: Compression | None,
    ) -> tuple[SendTicket, bytes, Sequence[Frame], int]:
        """Send a message with frames to ``rank``, compressed as the message's or the Geode's
        setting says, through the payload cache if it shares an array; the ticket, the message
        as sent (a shared array in it, for a resend) and the bytes that left."""
        chosen = compress or self.compress  # the message's setting, else the Geode's
        if _shared and self.cache.budget and through_cache(frames):  # (`cached`, inlined)
            # A shared array goes through the cache uncompressed: its receiver keeps it once,
            # where a compressed copy would be a new buffer (and a full transfer) every time.
            # The message's other frames are compressed.
            if chosen is not None:
                meta, frames = self.shrink(meta, frames, chosen, (rank,), cache_bound(frames))
            ticket, nbytes = self.cache.send(self.transport, rank, meta, frames, batch)
            return ticket, meta, frames, nbytes
        if chosen is not None:
            meta, frames = self.shrink(meta, frames, chosen, (rank,))
        nbytes = len(meta) + sum(frame.nbytes for frame in frames)
        return self.transport.send(rank, meta, frames, batch), meta, frames, nbytes

    def plain(
        self, message: Message, src: int, dst: int, rank: int, pair: PairOut, batch: bool
    ) -> tuple[SendTicket, codec.Stamp]:
        """`to_node` for the commonest send: this rank's node ``src`` to a node it sent to
        before on a pair without credits, no ack, no reply, no route, no compression of its
        own, no trace. The same stamp, bytes and records in fewer steps (a test checks it)."""
        if batch:
            run = pair.run
            if run is not None and (at := run.join(message)) >= 0:
                # The commonest isend: joins its pair's open run (see delivery/runs.py).
                # (`Runtime.send_plain` joins it itself, with a handle of its own.)
                fields = (run.first_id + at, run.first_seq + at, run.stamps[at], src, dst)
                return run.ticket, _tuple_new(_Stamp, fields)
            if self.batch_lazy is not None and rank != self.transport.rank:
                opened = self.open_run(message, src, dst, rank, pair)
                if opened is not None:
                    return opened
        return (self.lanes.get(pair) or self.lane(src, dst, rank, pair)).send(message, batch)

    def lane(self, src: int, dst: int, rank: int, pair: PairOut) -> Lane:
        """The `Lane` of this rank's node ``src`` to node ``dst`` on ``rank`` over ``pair`` (a
        pair without credits), made the first time."""
        lane = self.lanes.get(pair)
        if lane is None:
            lane = self.lanes[pair] = Lane(self, src, dst, rank, pair)
        return lane

    def open_run(
        self, message: Message, src: int, dst: int, rank: int, pair: PairOut
    ) -> tuple[SendTicket, codec.Stamp] | None:
        """Start a run on pair (``src``, ``dst``) with ``message``, as a lazy entry of the
        transport's batch to ``rank``; None if the message cannot be in a run."""
        cls = type(message)
        state = message.__dict__
        name = wire_name(cls)
        if name is None or self.batch_lazy is None:
            return None
        # (attributes of its own; a received message's metadata does not travel)
        states = (len(state) != 1 or "data" not in state) and not data_alone(state)
        if states:
            data = state_of(state)
            if data is None:
                return None
        elif joinable(state["data"]):
            data = kept(state["data"])
        else:
            return None
        count = self.counter[src]
        first_id = (src << ID_BITS) | count
        self.counter[src] = count + RUN_MAX  # the run's ids (those it does not fill go unused)
        if WATCHING:  # (a thread runs a handler: what it authors counts; joins: `OpenRun`)
            authored()
        seq = pair.next_seq
        stats = self.stats[src]
        run = OpenRun(
            cls, name, self.plain_flags, first_id, seq, src, dst, rank, pair, stats,
            self.acks, self.resend_after, self.flush_to, states,
        )  # fmt: skip
        now = time.time()
        run.payloads.append(data)
        run.stamps.append(now)
        if pair.unsealed < 0:
            pair.unsealed = seq
        pair.run = run
        pair.next_seq = seq + 1
        stats.sent += 1
        # (The batch may go out at once, and seal the run: then the pair has no open run.)
        ticket = run.ticket = self.batch_lazy(rank, run.seal)
        return ticket, _tuple_new(_Stamp, (first_id, seq, now, src, dst))

    def shrink(
        self,
        meta: bytes,
        frames: Sequence[Frame],
        chosen: Compression,
        ranks: Iterable[int],
        raw: Sequence[int] = (),
    ) -> tuple[bytes, Sequence[Frame]]:
        """Compress a message's large frames as ``chosen`` says, for ``ranks`` ("auto":
        only if one of them is reached over the network path), but those at indices
        ``raw``."""
        if chosen.codec is None or (chosen.auto and not any(map(self.network, ranks))):
            return meta, frames
        return compression.shrink(meta, frames, chosen, raw)

    def control(self, source: int, dest: int, payload: bytes, batch: bool = False) -> None:
        """Send a control record (an ack, a quiescence wave) from node ``source`` to ``dest``."""
        meta = codec.encode_control(source, dest, payload)
        self.transport.send(self.rank_of(dest), meta, (), batch=batch)

    def resend(self, rank: int, meta: bytes, frames: Sequence[Any]) -> int:
        """Send a message (or a run, whole) again, flagged as resent (the receiver drops what
        it has); how many messages that was."""
        self.cache.send(
            self.transport, rank, with_flags(meta, add=codec.FLAG_RESENT), frames, False
        )
        return run_count(meta) if is_run(meta) else 1
