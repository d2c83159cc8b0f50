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
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.codec import arrays, header, pickling
from geode_mpi.codec.fastpickle import plain_pickle as _plain_pickle
from geode_mpi.codec.wire import array_templates as _array_templates
from geode_mpi.codec.wire import plain_misses as _plain_misses
from geode_mpi.codec.wire_parts import _wire_names
from geode_mpi.delivery.authoring import WATCHING, authored
from geode_mpi.delivery.pairs import OutboxEntry, PairOut
from geode_mpi.message import RESERVED, Message, data_alone
from geode_mpi.transport import SendTicket

if TYPE_CHECKING:
    from geode_mpi.delivery.sending import SendPath

ID_BITS = 40  # a message id is (its author node's index << ID_BITS) | that node's counter
_tuple_new = tuple.__new__
_Stamp, _encode = codec.Stamp, codec.encode
# A plain message's header as `header.PLAIN` packs it (`codec.encode`'s fast cases), its
# per-lane parts packed once: a text's (`header.TEXT_HEAD`), a pickle's or small array's
# (`header.LANE_HEAD`)
_pack, _TAIL = header.TEXT_HEAD.pack, header.TEXT_TAIL
_pack_lane = header.LANE_HEAD.pack
_NO_REPLY = header.NO_REPLY
_ATOMIC = pickling.ATOMIC
_checksum = zlib.adler32  # (`encode`'s checksum)
_U32_MAX = 2**32 - 1
_HEAD_SIZE = header.SIZE
_time = time.time
_ID_SEQ = struct.Struct("<qQ")  # a header's id and seq, at `header.ID_AT`
_REST = header.FLAG_REST
_disjoint = RESERVED.isdisjoint  # (a dict of attributes holds none of the reserved names)
# A subclass's, per lane (`Lane.express_named`): its class, its header's source, dest and
# class-name length (packed once), its wire name
Named = tuple[type[Message], bytes, bytes]


class Lane:
    """The sends of local node ``src`` to node ``dst`` (on ``rank``) over ``pair``, a pair
    without credits: what `SendPath.plain` does per message, with everything that does not
    change between messages bound here once."""

    __slots__ = (
        "array_lead",
        "batch_meta",
        "counter",
        "dst",
        "express_ids",
        "express_lead",
        "express_parts",
        "flags",
        "ident",
        "named",
        "pair",
        "path",
        "pickle_lead",
        "rank",
        "resends",
        "rest_leads",
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
        self.pickle_lead = struct.pack("<I", header.lead(header.KIND_PICKLE, self.flags))
        self.array_lead = struct.pack("<I", header.lead(header.KIND_SMALL_ARRAY, self.flags))
        self.express_ids = struct.pack("<IIII", src, dst, 0, 0)
        self.rest_leads = tuple(  # (a text's, a pickle's, with a rest section)
            struct.pack("<I", header.lead(kind, self.flags | _REST))
            for kind in (header.KIND_TEXT, header.KIND_PICKLE)
        )
        self.named: dict[type[Message], Named] = {}

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
        if pair.next_seq != seq or counter[src] != count:
            # Its pickling sent a message of this node itself (a __reduce__ that calls geode):
            # that one took this id or seq, so this one takes the next (its header restamped;
            # neither is in a checksum), instead of arriving as that one's duplicate.
            seq = pair.next_seq
            count = counter[src]
            stamp = _tuple_new(_Stamp, (self.ident | count, seq, stamp[2], src, self.dst))
            restamped = bytearray(meta)
            _ID_SEQ.pack_into(restamped, header.ID_AT, self.ident | count, seq)
            meta = bytes(restamped)
        counter[src] = count + 1
        if WATCHING:  # (a thread runs a handler: what it authors counts)
            authored()
        rank = self.rank
        if frames:
            ticket, meta, frames, nbytes = self.path.with_frames(rank, meta, frames, batch, None)
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

    def express_named(self, message: Message) -> tuple[SendTicket, codec.Stamp] | None:
        """`express` of ``message``, of a Message subclass sent before (its wire name known,
        no ``__slots__``) holding its data and perhaps attributes and headers that pickle
        without arrays (its rest section, as `codec.encode` pickles it). None, with nothing
        done, for anything else (`send` then)."""
        cls = message.__class__
        named = self.named.get(cls)
        if named is None:
            known = _wire_names.get(cls)
            if known is None or known[1]:  # (its first send, or slots: `send`)
                return None
            name = known[0]
            ids = struct.pack("<IIII", self.src, self.dst, len(name), 0)
            named = self.named[cls] = (cls, ids, name)
        state = message.__dict__
        rest = None
        if len(state) != 1 or "data" not in state:
            headers = state.get("_headers") or None
            extras = state.copy()  # (in its order: `encode`'s bytes)
            extras.pop("data", None)
            if not _disjoint(extras):  # (headers, or the metadata of a message received)
                extras = {key: value for key, value in extras.items() if key not in RESERVED}
            if headers is not None or extras:
                if _plain_misses[0]:
                    return None  # (arrays were met lately: `encode` counts this one)
                rest = _plain_pickle((headers, extras or None))
                if rest is None:
                    return None
        return self.express(message.data, None, named, rest)

    def express(
        self,
        data: Any,
        message: Message | None,
        named: Named | None = None,
        rest: bytes | None = None,
    ) -> tuple[SendTicket, codec.Stamp] | None:
        """`send` of a plain message, all in one step: ``data`` alone (``message`` None: a bare
        object, not a Message) or the data of ``message``, a `Message` whose class its caller
        checked, to a rank of an MPI transport, no batch held for it, on a Geode that does not
        resend. A text, a pickle without arrays, or a small array sent before (its template):
        its header packed here from the lane's parts (the bytes `codec.encode` gives: a test
        checks them), its `Isend` (`MPITransport.send_meta` inline), and the records `send`
        keeps. None, with nothing done, for anything else (a Message holding more than its
        data and a received message's metadata (`data_alone`), data holding an array or
        that does not pickle, a text UTF-8 cannot encode, a small array's first send: `send`
        then, which also says what is wrong). ``named``: a subclass's message
        (`express_named`), and ``rest`` its rest section, if any."""
        parts = self.express_parts
        if parts is None:
            return None
        # (asking for the __dict__ builds it, ~65 ns: CPython 3.11 keeps attributes inline;
        # no cheaper way tells that it holds nothing else, gc.get_referents costs more)
        if message is not None:
            state = message.__dict__
            if (len(state) != 1 or "data" not in state) and not data_alone(state):
                return None
        isend, tag, sent, batches, sent_to, track = parts
        rank = self.rank
        if rank in batches:
            return None  # (a held batch goes first: `send_meta` sends it)
        kind = data.__class__
        array = None
        if kind is str:
            try:
                body = data.encode()
            except UnicodeEncodeError:  # a lone surrogate: pickle keeps it (`send`)
                return None
            length = len(body)
        elif kind is arrays.ndarray:  # (as `encode` sends one alone: from its template)
            cls = Message if named is None else named[0]
            template = _array_templates.get((cls, data.dtype, data.shape))
            if template is None or rest is not None or not data.flags.c_contiguous:
                return None
            body, _, length = template  # (its class name, then the descriptor)
            array = data
        else:
            if _plain_misses[0] and kind not in _ATOMIC:
                return None  # (arrays were met lately: `encode` counts this one)
            found = _plain_pickle(data)
            if found is None:
                return None
            body = found
            length = len(body)
        if length > _U32_MAX - _HEAD_SIZE:  # (`send_meta`'s limit is the whole meta's)
            return None  # (`send` says what is wrong with it)
        pair = self.pair
        seq = pair.next_seq
        src = self.src
        counter = self.counter
        count = counter[src]
        mid = self.ident | count
        ts = _time()
        if named is not None:
            meta = self._named_meta(named, rest, kind is str, body, array, length, mid, seq, ts)
            if len(meta) > _U32_MAX:
                return None  # (`send` says what is wrong with it)
        elif kind is str:
            meta = _pack(self.express_lead, mid, seq, ts, self.express_ids, length, _TAIL) + body
        elif array is None:
            crc = _checksum(body)
            ids = self.express_ids
            meta = _pack_lane(self.pickle_lead, mid, seq, ts, ids, length, _NO_REPLY, crc) + body
        else:
            head = _pack_lane(self.array_lead, mid, seq, ts, self.express_ids, length, _NO_REPLY, 0)
            meta = b"".join((head, body, array))  # (C-contiguous: its buffer read as is)
        request = isend(meta, rank, tag)
        counter[src] = count + 1
        if WATCHING:  # (a thread runs a handler: what it authors counts)
            authored()
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

    def _named_meta(
        self,
        named: Named,
        rest: bytes | None,
        text: bool,
        body: bytes,
        array: Any,
        length: int,
        mid: int,
        seq: int,
        ts: float,
    ) -> bytes:
        """The meta `codec.encode` gives a subclass's message (`express`): the header, the
        class name, the data section (``text``: UTF-8; else a pickle, or a small array's
        template, which holds the name, then ``array``), its rest section if any."""
        _, ids, name = named
        if rest is not None:  # (never an array's: see `express`)
            lead = self.rest_leads[0 if text else 1]
            crc = _checksum(rest) if text else _checksum(rest, _checksum(body))
            head = _pack_lane(lead, mid, seq, ts, ids, length, _NO_REPLY, crc)
            return b"".join((head, name, body, rest))
        if text:
            return b"".join(
                (_pack(self.express_lead, mid, seq, ts, ids, length, _TAIL), name, body)
            )
        if array is None:
            crc = _checksum(body)
            head = _pack_lane(self.pickle_lead, mid, seq, ts, ids, length, _NO_REPLY, crc)
            return b"".join((head, name, body))
        head = _pack_lane(self.array_lead, mid, seq, ts, ids, length, _NO_REPLY, 0)
        return b"".join((head, body, array))  # (C-contiguous: its buffer read as is)
