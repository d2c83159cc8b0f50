"""The express receive: a ping-pong's reply taken straight from MPI in one step (`Express`)."""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.codec import header
from geode_mpi.codec.arrays import small_array as _small_array
from geode_mpi.codec.classes import inline_class as _inline_class
from geode_mpi.codec.decoding import decode_error, rest_into
from geode_mpi.codec.plain import plain_message
from geode_mpi.delivery.engine_state import EngineState
from geode_mpi.delivery.pairs import PairIn
from geode_mpi.errors import DecodeError
from geode_mpi.message import Message
from geode_mpi.queues import Parcel

_read_lead = header.LEAD.unpack_from
_read_u16 = struct.Struct("<H").unpack_from
_KIND_AT, _KIND_TEXT, _KIND_CONTROL = header.KIND_AT, header.KIND_TEXT, header.KIND_CONTROL
_KIND_PICKLE = header.KIND_PICKLE
_NAME_AT = header.NAME_LEN_AT  # (a u16)
_PLAIN_KINDS = (_KIND_TEXT, _KIND_PICKLE, header.KIND_SMALL_ARRAY)  # (a tuple: cheapest `in`)
_LEAD_REST = header.FLAG_REST << 16  # FLAG_REST in a lead
# A plain message's leads, and theirs with a rest section (headers, attributes): taken inline
_INLINE_LEADS = header.PLAIN_LEADS | {found | _LEAD_REST for found in header.PLAIN_LEADS}
_checksum = zlib.adler32  # (`encode`'s checksum)
_loads = pickle.loads
_ONCE_MORE = (True, False)  # (a second spin after what was no message for the node)
_HEAD_SIZE = header.SIZE
_LEAD_TRACKED = header.FLAG_TRACKED << 16  # FLAG_TRACKED in a lead


_NAME_ONLY = 1 << 16  # a header's class-name and route lengths below this: no route section


def _kept_class(meta: bytearray) -> type[Message] | None:
    """The class of a subclass's message, if `classes.remember_inline` kept it (its first
    message went through `decode_named`); None: `take_arrival`'s."""
    return _inline_class(bytes(meta[_HEAD_SIZE : _HEAD_SIZE + _read_u16(meta, _NAME_AT)[0]]))


class _Damaged(Exception):
    """A pickle whose checksum does not match: never unpickled (the sink's, then)."""


Spin = Callable[[float], "tuple[int, bytearray] | bool"]


class Express(EngineState):
    """`Engine`'s express receive (`take_express`)."""

    if TYPE_CHECKING:

        def take_arrival(
            self, rank: int, meta: memoryview | bytearray, index: int
        ) -> Message | None: ...

        def sink(self, rank: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> None: ...

        def take_plain(self, index: int) -> Parcel | None: ...

        def release_held(self, pair: PairIn, dest: int) -> None: ...

    # The parcel a take left to the sink because its data did not decode, and the error the
    # receive raises for it (`Geode.receive`) instead of decoding it again
    undecoded: tuple[Parcel, DecodeError] | None = None
    # An arrival `take_arrival` met that did not decode, and the error it met
    refused: tuple[memoryview | bytearray, DecodeError] | None = None

    def _undecoded(self, index: int, seq: int, error: DecodeError) -> Parcel | None:
        parcel = self.take_plain(index)
        if parcel is not None and parcel.seq == seq:
            self.undecoded = (parcel, error)
        return parcel

    def _take_from(self, index: int, source: int) -> Parcel | None:
        """`take_plain`, for `take_express`; with a ``source`` filter (>= 0: a node index),
        only a head from node ``source`` that a plain take takes (`Inbox.in_order`)."""
        if source >= 0:
            inbox = self.inboxes[index]
            waiting = inbox.waiting
            if not waiting or waiting[0].source != source or not inbox.in_order:
                return None
        return self.take_plain(index)

    def take_express(
        self, index: int, spin: Spin, seconds: float, source: int = -1
    ) -> Message | Parcel | None:
        """Spin ``seconds`` on the transport (``spin``: `MPITransport.spin_meta`) for node
        ``index`` (one of `plain`, its queue empty: `Geode.receive`'s fast case), and take
        what comes: a plain Message (a text, a pickle without arrays, a small array in its
        meta; of a subclass kept by `remember_inline`, with attributes and headers that
        travel in meta, or not) that is its pair's next message, from a node, for ``index``,
        is read here (its header once, its checksum before unpickling), let through and taken
        (counted, its ack due) and returned; any other message alone is `take_arrival`'s, or
        the sink's and the queue's, as is anything the transport delivered itself; one that
        does not decode, the sink's, its error noted for the receive (`undecoded`). None if
        nothing came. ``source`` >= 0 (a receive's source filter, as a node index): only a
        message from that node is taken; anything else is left queued, and None returned."""
        got = spin(seconds)
        for again in _ONCE_MORE:
            if got.__class__ is not tuple:
                if not got:
                    return None
                parcel = self._take_from(index, source)
                if parcel is not None or not again or self.forwards or self.waited:
                    return parcel  # (forwards, served requests: `take`'s wait goes first)
                # What came was no message for ``index``: spin once more, as the reply
                # usually follows at once.
                got = spin(seconds)
                continue
            rank, meta = got
            size = len(meta)
            kind = meta[_KIND_AT] if size >= _HEAD_SIZE else -1  # (else not read here)
            # (a class name, a subclass's: inline once its class is kept, else `take_arrival`'s
            # at once, the header read there)
            cls = Message
            if kind in _PLAIN_KINDS and (
                (not meta[_NAME_AT] and not meta[_NAME_AT + 1])
                or (cls := _kept_class(meta)) is not None  # type: ignore[assignment]
            ):
                lead, mid, seq, ts, src, dst, lengths, n_data, length, reply_to, crc = _read_lead(
                    meta, 0
                )
                start = _HEAD_SIZE + lengths  # (after its class name, if any)
                end = start + length
                rest = lead & _LEAD_REST  # (its headers and attributes follow its data)
                pair = self._in.get((src, dst))
                inbox = self.inboxes[index]
                if (
                    lead in _INLINE_LEADS
                    and not inbox.waiting
                    and lengths < _NAME_ONLY  # (no route section)
                    and not n_data
                    and (size > end if rest else size == end)  # (a damaged length: the sink's)
                    and dst == index
                    and (source < 0 or src == source)
                    and pair is not None  # (a pair's first arrival is checked by the sink)
                    and seq == pair.expected
                    and not pair.held
                    and not inbox.drop_oldest
                    and not inbox.private
                ):
                    # The data decoded as `decode_plain` does, the rest section as
                    # `decode_named` does; anything that does not decode is left to the sink,
                    # nothing admitted: it queues it, the receive raises and dead-letters it.
                    data: Any
                    try:
                        if rest and kind != _KIND_PICKLE and _checksum(meta[end:]) != crc:
                            raise _Damaged  # (the checksum of its rest section alone)
                        if kind == _KIND_TEXT:
                            data = str(meta[start:end], "utf-8")
                        elif kind == _KIND_PICKLE:  # (its checksum: data and rest sections)
                            section = memoryview(meta)[start:]
                            if _checksum(section) != crc:  # (checked before unpickling)
                                raise _Damaged
                            data = _loads(section[:length] if rest else section)
                        else:  # a small array: a view of this message's own buffer
                            data = _small_array(memoryview(meta), start, end, True)
                        message = plain_message(data, mid, seq, ts, src, dst, reply_to, self.names)
                        if rest:  # (the class has no slots: `remember_inline`)
                            rest_into(message.__dict__, _loads(memoryview(meta)[end:]), ())
                        if cls is not Message:  # (its layout is Message's: `remember_inline`)
                            message.__class__ = cls
                    except _Damaged:
                        pass  # (never unpickled: the receive's decode says what is wrong)
                    except Exception as exc:  # (whatever unpickling the bytes or the class raised)
                        # The receive raises this, not unpickling the bytes a second time
                        error = decode_error(cls.__name__, mid, src, exc)
                        error.__cause__ = exc
                        self.sink(rank, memoryview(meta), (), size)
                        return self._undecoded(index, seq, error)
                    else:
                        pair.expected = seq + 1
                        if pair.held:  # (unpickling made progress: see `release_held`)
                            self.release_held(pair, index)
                        stats = self.stats[index]
                        stats.received += 1
                        stats.received_bytes += size
                        if not inbox.peak:
                            inbox.peak = 1  # (what the queue's peak would have been)
                        if pair.done_now(seq, lead & _LEAD_TRACKED):
                            stats.processed += 1
                        else:
                            flags = lead >> 16 & 0xFF
                            parcel = Parcel(
                                src, seq, flags, reply_to, memoryview(meta), (), size, 0
                            )
                            self._done(index, parcel)
                        return message
                    self.sink(rank, memoryview(meta), (), size)
                    return self._take_from(index, source)
            elif kind == _KIND_CONTROL and again:
                # An ack record alone (deferred acks go every ACK_DELAY): taken in, then one
                # more spin for the reply, which usually follows it at once.
                self.sink(rank, memoryview(meta), (), len(meta))
                parcel = self._take_from(index, source)
                if parcel is not None or self.forwards or self.waited:
                    return parcel
                got = spin(seconds)
                continue
            taken = self.take_arrival(rank, meta, index) if source < 0 else None
            if taken is not None:
                return taken
            self.sink(rank, memoryview(meta), (), len(meta))
            refused = self.refused
            if refused is not None:
                self.refused = None
                if refused[0] is meta:  # (it did not decode: the receive raises what it met)
                    return self._undecoded(index, _read_lead(meta, 0)[2], refused[1])
            return self._take_from(index, source)
        return None  # (not reached: the second pass returns)
