"""The thin path of one message: a node's sends to one destination, bound once (`Lane`).

`SendPath.plain` (every plain send from this rank's node: `Geode.send`'s, and `isend`'s that
cannot join a run) and `Geode.send`'s own fast case go through a destination's lane: the pair,
its rank, the counters and the transport's calls are looked up once, when the lane is made,
instead of on every message. The stamp, bytes and records are `SendPath.to_node`'s (a test
checks that both give the same).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from geode_mpi import codec
from geode_mpi.codec import header
from geode_mpi.delivery.pairs import OutboxEntry, PairOut
from geode_mpi.message import Message
from geode_mpi.transport import SendTicket

if TYPE_CHECKING:
    from geode_mpi.delivery.sending import SendPath

ID_BITS = 40  # a message id is (its author node's index << ID_BITS) | that node's counter
_tuple_new = tuple.__new__
_Stamp, _encode = codec.Stamp, codec.encode
# A text message's header as `header.PLAIN` packs it (`codec.encode`'s text case), its
# per-lane parts packed once (`header.TEXT_HEAD`)
_pack, _TAIL = header.TEXT_HEAD.pack, header.TEXT_TAIL
_U32_MAX = 2**32 - 1
_HEAD_SIZE = header.SIZE
_time = time.time


class Lane:
    """The sends of local node ``src`` to node ``dst`` (on ``rank``) over ``pair``, a pair
    without credits: what `SendPath.plain` does per message, with everything that does not
    change between messages bound here once."""

    __slots__ = (
        "batch_meta",
        "counter",
        "dst",
        "express_ids",
        "express_lead",
        "express_parts",
        "flags",
        "ident",
        "pair",
        "path",
        "rank",
        "resends",
        "send_meta",
        "src",
        "stats",
        "tracked",
    )

    def __init__(self, path: SendPath, src: int, dst: int, rank: int, pair: PairOut) -> None:
        self.path = path
        self.src = src
        self.dst = dst
        self.rank = rank
        self.pair = pair
        self.ident = src << ID_BITS  # the author bits of every id this lane's messages take
        self.counter = path.counter  # (updated in place: a restore sets its entries)
        self.stats = path.stats[src]
        self.flags = path.plain_flags
        self.tracked = path.acks
        self.resends = path.resend_after is not None  # (fixed for a Geode's life)
        self.send_meta: Callable[[int, bytes], SendTicket] = path.send_meta
        self.batch_meta: Callable[[int, bytes], SendTicket] = path.batch_meta
        # The express path's (`express`): what the transport lends for sending a meta alone
        # (None: not this transport, a loopback, or a Geode that resends), the header's lead
        # and its source and dest (packed once).
        parts = getattr(path.transport, "express_parts", None)
        self.express_parts = None if parts is None or self.resends else parts(rank)
        self.express_lead = struct.pack("<I", header.lead(header.KIND_TEXT, self.flags))
        self.express_ids = struct.pack("<IIII", src, dst, 0, 0)

    def send(self, message: Message, batch: bool = False) -> tuple[SendTicket, codec.Stamp]:
        """Stamp, encode and send the pair's next message; record it (seq, counters, the
        outbox entry while tracked). ``batch``: it may wait to go out with the next ones.

        Raises:
            EncodeError: it cannot be encoded (nothing sent, no id or seq taken).
        """
        pair = self.pair
        seq = pair.next_seq
        src = self.src
        counter = self.counter
        count = counter[src]
        stamp = _tuple_new(_Stamp, (self.ident | count, seq, time.time(), src, self.dst))
        meta, frames = _encode(message, stamp, self.flags)
        counter[src] = count + 1
        rank = self.rank
        if frames:
            ticket, meta, frames = self.path.with_frames(rank, meta, frames, batch, None)
            nbytes = len(meta) + sum(frame.nbytes for frame in frames)
        else:
            ticket = self.batch_meta(rank, meta) if batch else self.send_meta(rank, meta)
            nbytes = len(meta)
        pair.next_seq = seq + 1
        stats = self.stats
        stats.sent += 1
        stats.sent_bytes += nbytes
        if self.tracked:
            if not self.resends:  # (see `SendPath.to_node`: its header only)
                pair.outbox[seq] = _tuple_new(OutboxEntry, (meta, (), rank))
            else:
                pair.outbox[seq] = _tuple_new(OutboxEntry, (meta, frames, rank))
                pair.resends[seq] = [time.monotonic(), 1]
        return ticket, stamp

    def express(self, data: str, message: Message | None) -> tuple[SendTicket, codec.Stamp] | None:
        """`send` of the commonest message, all in one step: a text ``data`` (a str alone,
        ``message`` None, or the data of ``message``, a `Message` whose class its caller
        checked) to a rank of an MPI transport, no batch held for it, on a Geode that does
        not resend. Its header packed here (the bytes `codec.encode` gives: a test checks
        them), its `Isend` (`MPITransport.send_meta` inline), and the records `send` keeps.
        None, with nothing done, for anything else (a Message holding more than its data,
        a text UTF-8 cannot encode: `send` then)."""
        parts = self.express_parts
        if parts is None:
            return None
        # (asking for the __dict__ builds it, ~65 ns: CPython 3.11 keeps attributes inline;
        # no cheaper way tells that it holds nothing else, gc.get_referents costs more)
        if message is not None and len(message.__dict__) != 1:
            return None
        isend, tag, sent, batches, sent_to, track = parts
        rank = self.rank
        if rank in batches:
            return None  # (a held batch goes first: `send_meta` sends it)
        try:
            text = data.encode()
        except UnicodeEncodeError:  # a lone surrogate: pickle keeps it (`send`)
            return None
        length = len(text)
        if length > _U32_MAX - _HEAD_SIZE:  # (`send_meta`'s limit is the whole meta's)
            return None  # (`send` says what is wrong with it)
        pair = self.pair
        seq = pair.next_seq
        src = self.src
        counter = self.counter
        count = counter[src]
        mid = self.ident | count
        ts = _time()
        meta = _pack(self.express_lead, mid, seq, ts, self.express_ids, length, _TAIL) + text
        request = isend(meta, rank, tag)
        counter[src] = count + 1
        sent_to[rank] += 1
        pair.next_seq = seq + 1
        stats = self.stats
        stats.sent += 1
        stats.sent_bytes += len(meta)
        if self.tracked:
            pair.outbox[seq] = _tuple_new(OutboxEntry, (meta, (), rank))
        # (Open MPI may finish it only at the second test: see `MPITransport.send_meta`)
        ticket = sent if request.Test() or request.Test() else track(rank, meta, request)
        return ticket, _tuple_new(_Stamp, (mid, seq, ts, src, self.dst))
