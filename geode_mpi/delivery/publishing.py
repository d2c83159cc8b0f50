"""The topic side of the send path: a stream's messages published, broadcast and replayed.

`Publishing` is part of `SendPath` (delivery/sending.py), which inherits it: one stamp and
one encoding per message whatever the number of subscribers, one broadcast to the stream's
other member ranks, and a sealed copy for this rank's subscribers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from geode_mpi import codec
from geode_mpi.codec.compression import Compression
from geode_mpi.codec.header import with_flags
from geode_mpi.delivery.cache import PayloadCache, cache_bound, sealed_shared, through_cache
from geode_mpi.delivery.cache import shared_arrays as _shared  # truthy once one is shared
from geode_mpi.delivery.pairs import OutboxEntry, PairOut
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.delivery.topics import TopicStream
from geode_mpi.delivery.tracepoints import trace_publish
from geode_mpi.message import Message
from geode_mpi.tracing import TRACER, now_us
from geode_mpi.transport import SendTicket, Transport
from geode_mpi.transport.base import Frame, copy_frame
from geode_mpi.transport.sealed import hand_over, seal

_NO_SUBSCRIBERS = SendTicket(-1, 0, done=True)
_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__
# The delivery flags of a tracked message, and of one whose sender also waits for it.
_TRACKED = codec.FLAG_TRACKED
_TRACKED_WAITED = codec.FLAG_TRACKED | codec.FLAG_WAITED


class Publishing:
    """`SendPath`'s publishes: a topic stream's messages to every subscriber."""

    if TYPE_CHECKING:  # declared only: `SendPath.__init__` sets them, and defines the methods
        transport: Transport
        stats: Mapping[int, NodeStats]
        rank_of: Callable[[int], int]
        acks: bool
        resend_after: float | None
        cache: PayloadCache
        compress: Compression | None

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
        ) -> tuple[codec.Stamp, bytes, Sequence[Frame]]: ...

        def shrink(
            self,
            meta: bytes,
            frames: Sequence[Frame],
            chosen: Compression,
            ranks: Iterable[int],
            raw: Sequence[int] = (),
        ) -> tuple[bytes, Sequence[Frame]]: ...

    def publish(
        self,
        message: Message,
        stream: TopicStream,
        pairs: Sequence[PairOut],
        ack: bool,
        remote: bool,
        local: bool,
        compress: Compression | None = None,
        via: codec.Route | None = None,
    ) -> tuple[SendTicket, codec.Stamp]:
        """Publish the stream's next message (numbered `TopicStream.next_seq`, which moves on)
        to every subscriber: one broadcast to the other member ranks if ``remote``, a local copy
        if ``local``; ``pairs``: the (stream, subscriber) pairs, each reserved a credit;
        ``compress``: the message's or topic's setting (compressed once for every member);
        ``via``: its priority and ttl, if any."""
        begun = now_us() if TRACER.on else 0.0
        tracked = self.acks or ack
        flags = codec.FLAG_TOPIC
        if tracked:
            flags |= _TRACKED_WAITED if ack else _TRACKED
        seq = stream.next_seq
        author = stream.publisher
        stamp, meta, frames = self.stamp(message, author, author, stream.wire, seq, flags, via=via)
        if frames:
            hand_over(frames)  # a published zero-copy array is read-only from now on
        cached = remote and bool(frames) and self.cached(frames)
        chosen = compress or self.compress  # the message's or topic's, else the Geode's
        if frames and chosen is not None:  # compressed once, for every member
            ranks = map(self.rank_of, stream.subscribers) if remote else ()
            # (a shared array that goes through the cache travels as it is: see `with_frames`)
            raw = cache_bound(frames) if cached else ()
            meta, frames = self.shrink(meta, frames, chosen, ranks, raw)
        ticket, wire = self.broadcast(stream, meta, frames, remote, local, cached)
        stream.next_seq = seq + 1
        nbytes = len(meta) + sum(frame.nbytes for frame in frames) if frames else len(meta)
        stats = self.stats[stream.number]
        stats.sent += len(pairs)
        if wire == nbytes:
            stats.sent_bytes += nbytes * len(pairs)
        else:  # through the cache: what left for the other ranks, the message for this one
            here = self.transport.rank
            for sub in stream.subscribers:
                stats.sent_bytes += nbytes if self.rank_of(sub) == here else wire
        for pair, sub in zip(pairs, stream.subscribers, strict=True):
            if pair.credits is not None:
                pair.credits -= 1
            if tracked:
                kept = () if self.resend_after is None else frames
                pair.outbox[seq] = _tuple_new(OutboxEntry, (meta, kept, self.rank_of(sub)))
                if self.resend_after is not None:
                    pair.resends[seq] = [time.monotonic(), 1]
        if stream.retained.maxlen:
            # (copied, a shared array too: its bytes as published, whatever its owner does
            # to it later; a replay sends them in full, outside the cache)
            stream.retained.append((meta, [copy_frame(frame) for frame in frames]))
        if begun:
            trace_publish(stream.topic, stamp.id, author, stream.subscribers, begun, nbytes)
        return ticket, stamp

    def cached(self, frames: Sequence[Frame]) -> bool:
        """Whether a message with these frames goes through the payload cache (it shares an
        array, and the cache is on): then its shared arrays are not compressed (its receivers
        keep each once, where a compressed copy would be a new buffer, and a full transfer,
        every time)."""
        return bool(_shared) and bool(self.cache.budget) and through_cache(frames)

    def broadcast(
        self,
        stream: TopicStream,
        meta: bytes,
        frames: Sequence[Frame],
        remote: bool,
        local: bool,
        cached: bool | None = None,
    ) -> tuple[SendTicket, int]:
        """Send on ``stream``: a broadcast to its other member ranks (``remote``; through the
        stream's cache mirror if it shares an array: ``cached``, None to find out), and a copy
        to this rank (``local``); the ticket of the broadcast, else of the copy, and the bytes
        that left for each other rank (the message's, unless through the cache)."""
        ticket = _NO_SUBSCRIBERS
        number = stream.number
        wire = -1
        if remote:
            if cached is None:
                cached = bool(frames) and self.cached(frames)
            if cached:
                ticket, wire = self.cache.broadcast(
                    self.transport, number, stream.ranks, meta, frames
                )
            else:
                ticket = self.transport.broadcast(number, meta, frames)
        if local:  # large frames sealed: one copy (or none) for every subscriber here
            copied = self.transport.send(self.transport.rank, meta, seal(sealed_shared(frames)))
            if ticket is _NO_SUBSCRIBERS:
                ticket = copied
        if wire < 0:
            wire = len(meta) + sum(frame.nbytes for frame in frames) if frames else len(meta)
        return ticket, wire

    def replay(self, stream: TopicStream, added: int, remote: bool, local: bool) -> None:
        """Send a stream's retained messages again for ``added`` new subscribers, flagged
        resent and untracked: the earlier subscribers, which have them, skip them (see
        `geode_mpi.delivery.streams`'s ``_REPLAY``)."""
        for meta, frames in stream.retained:
            again = with_flags(meta, add=codec.FLAG_RESENT, clear=_TRACKED_WAITED)
            self.broadcast(stream, again, frames, remote, local)
        self.stats[stream.number].resent += len(stream.retained) * added
