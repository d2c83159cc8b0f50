"""The general decode: any Message class, route, rest section (headers, attributes),
compressed frames; and its shortcut for an array, or a dict holding arrays, of any class
and the plain Message's fast path (`decode_plain`)."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.codec import compression, header, maps
from geode_mpi.codec.arrays import read_descriptor, rebuild_array, small_array
from geode_mpi.codec.building import _built, rest_into
from geode_mpi.codec.checksums import (
    _PICKLED_KINDS,
    HEAD_SIZE,
    _checksum,
    _checksum_error,
    _sections_checksum,
    length_error,
    pickled_checksum,
)
from geode_mpi.codec.classes import BASE_NAME, remember_inline, resolve, short_name
from geode_mpi.codec.header import (
    FLAG_COMPRESSED,
    FLAG_REST,
    KIND_ARRAY,
    KIND_ARRAY_DICT,
    KIND_PICKLE,
    KIND_RUN,
    KIND_SMALL_ARRAY,
    KIND_TEXT,
    ROUTE_AT,
    ROUTE_QOS,
    VERSION,
)
from geode_mpi.codec.peeking import peek
from geode_mpi.codec.plain import plain_message
from geode_mpi.codec.wire_parts import Peek, _names, _new_name, _state, give_state
from geode_mpi.errors import DecodeError
from geode_mpi.message import Message

if TYPE_CHECKING:  # numpy is imported by whoever sends arrays, or to decode one (arrays.py)
    import numpy as np

# (re-exported: its home before the split; the express take imports it from here)
__all__ = ["decode", "decode_error", "decode_named", "decode_plain", "rest_into"]

_PLAIN_KINDS = (KIND_PICKLE, KIND_TEXT, KIND_SMALL_ARRAY)
_MESSAGE_KINDS = frozenset((KIND_PICKLE, KIND_ARRAY, KIND_SMALL_ARRAY, KIND_TEXT, KIND_ARRAY_DICT))
_ARRAY_KINDS = (KIND_ARRAY, KIND_ARRAY_DICT)
_NAME_ONLY = 1 << 16  # `lengths` below this: a class name, no route section
_NOT_PLAIN = FLAG_REST | FLAG_COMPRESSED  # decode's fast path takes neither

_LEAD = header.LEAD
_REPLY_CHECK = struct.Struct("<48xqI")  # reply_to and the checksum (header.py has the offsets)


def decode_error(name: str, mid: int, src: int, exc: Exception) -> DecodeError:
    """The error of a message of class ``name`` whose bytes made decoding raise ``exc``."""
    return DecodeError(
        f"cannot decode a {name} message {mid} from node index {src}: {type(exc).__name__}: {exc}"
    )


def _decode_arrays(
    meta: bytes | memoryview,
    frames: Sequence[np.ndarray[Any, Any]],
    names: Sequence[str],
    head: tuple[Any, ...],
) -> Message:
    """`decode` of a message whose data is an array in its frame or a dict holding arrays
    (kind 1 or 6), of any Message class, with no route or rest section and not compressed,
    from the header `decode` read (``head``: `header.LEAD`'s fields), without `peek`.

    Raises:
        DecodeError: the class cannot be found, or the data section does not decode.
    """
    lead, mid, seq, ts, src, dst, name_len, _, data_len, reply_to, crc = head
    kind = lead >> 8 & 0xFF
    start = HEAD_SIZE + name_len
    end = start + data_len
    cls: type[Message] = Message
    if name_len:
        wire_name = _names.get(bytes(meta[HEAD_SIZE:start]))
        if wire_name is None:
            wire_name = _new_name(meta, start, start, mid, src)
        cls = resolve(wire_name)
    data: Any
    try:
        if kind == KIND_ARRAY:
            dtype, shape, fortran, _ = read_descriptor(meta, start, end)
            data = rebuild_array(frames[0], dtype, shape, fortran)
        else:
            section = memoryview(meta)[start:end]
            if _checksum(section) != crc:
                raise _checksum_error(mid, src)
            data = maps.join(section, frames)
    except DecodeError:
        raise
    except Exception as exc:
        raise decode_error(cls.__name__, mid, src, exc) from exc
    message = cls.__new__(cls)
    give_state(message, _state(data, mid, seq, ts, src, dst, reply_to, names))
    return message


# A named message `decode_named` takes: a plain message's leads, with a rest section or not
_NAMED_LEADS = header.PLAIN_LEADS | {found | FLAG_REST << 16 for found in header.PLAIN_LEADS}


def decode_named(
    meta: bytes | bytearray | memoryview,
    names: Sequence[str],
    owned: bool,
    head: tuple[Any, ...],
) -> Message | None:
    """`decode` of a Message subclass's message that is plain but for its class name and its
    attributes (a text, a pickle without arrays or a small array in meta; no route section,
    no frames, not compressed; headers and attributes in a rest section), from the header its
    caller read (``head``: `header.LEAD`'s fields): its class found by name once and kept
    (`classes.resolve`), its header not read again. None, with nothing read, for any other
    message (the general `decode`'s).

    Raises:
        DecodeError: its class cannot be found, or its bytes are damaged or do not decode.
    """
    lead, mid, seq, ts, src, dst, lengths, n_data, data_len, reply_to, crc = head
    if lead not in _NAMED_LEADS or not lengths or lengths >= _NAME_ONLY or n_data:
        return None
    start = HEAD_SIZE + lengths
    end = start + data_len
    size = len(meta)
    rest = lead >> 16 & FLAG_REST
    if (end != size) if not rest else (end >= size):  # (a damaged length field)
        return None  # (the general decode says what is wrong)
    view = memoryview(meta)
    raw = bytes(view[HEAD_SIZE:start])
    wire_name = _names.get(raw)
    if wire_name is None:
        wire_name = _new_name(view, start, start, mid, src)
    cls = resolve(wire_name)
    remember_inline(raw, cls)  # (the express take builds the next ones itself)
    kind = lead >> 8 & 0xFF
    if kind == KIND_PICKLE or rest:
        pickled = view[start:end] if kind == KIND_PICKLE else None
        if _sections_checksum(pickled, view[end:] if rest else None) != crc:
            raise _checksum_error(mid, src)
    data: Any
    try:
        if kind == KIND_TEXT:
            data = str(view[start:end], "utf-8")
        elif kind == KIND_PICKLE:
            data = pickle.loads(view[start:end])
        else:  # (a small array in a whole bytearray taken for good is a view of it)
            data = small_array(view if isinstance(meta, bytearray) else meta, start, end, owned)
        state = _state(data, mid, seq, ts, src, dst, reply_to, names)
        return _built(cls, state, view[end:] if rest else None, ())
    except DecodeError:
        raise
    except Exception as exc:  # anything the bytes made numpy, pickle or the class raise
        raise decode_error(cls.__name__, mid, src, exc) from exc


def decode(
    meta: bytes | memoryview,
    frames: Sequence[np.ndarray[Any, Any]],
    names: Sequence[str],
    info: Peek | None = None,
    owned: bool = False,
) -> Message:
    """Turn meta and received frames back into a Message of the class that was sent.

    Args:
        meta: the bytes `encode` produced.
        frames: writable byte buffers, one per frame, in order.
        names: node names by index, to fill in ``source`` and ``dest``.
        info: what `peek` already read from this meta, if anything.
        owned: nothing reads meta after this (taken for good, by one node): a small array
            inside it may be a view of it instead of a copy, when meta is a whole bytearray.

    Raises:
        DecodeError: the bytes are malformed or the class cannot be found.
    """
    data: Any
    if info is None and len(meta) >= HEAD_SIZE:
        head = _LEAD.unpack_from(meta, 0)
        lead, _, _, _, _, _, lengths, n_data, _, _, _ = head
        version, kind, flags = lead & 0xFF, lead >> 8 & 0xFF, lead >> 16 & 0xFF
        if (
            version == VERSION
            and not lengths
            and not flags & _NOT_PLAIN
            and (kind in _PLAIN_KINDS if not n_data else kind == KIND_ARRAY and len(frames) == 1)
        ):
            # A plain Message whose data is a pickle without arrays (a str, a dict ...), a
            # small array inside meta, or one array in its frame: the commonest messages.
            return decode_plain(meta, frames, names, owned, head)
        if lengths and not frames:  # a subclass's plain message (or an attribute)
            found = decode_named(meta, names, owned, head)
            if found is not None:
                return found
        if kind == KIND_RUN and len(frames) == 3:  # one of a run's: (run, index, message)
            return frames[0].message(frames[1])  # type: ignore[no-any-return,attr-defined]
        if (
            kind in _ARRAY_KINDS
            and version == VERSION
            and lengths < _NAME_ONLY
            and not flags & _NOT_PLAIN
            and n_data == len(frames)
        ):
            # An array of a Message subclass, or a dict holding arrays (any class).
            return _decode_arrays(meta, frames, names, head)
    view = memoryview(meta)
    if info is None:
        info = peek(view)  # (raises the precise error for another version or a short header)
    stamp, wire_name, kind, flags, start, n_data, data_len = info
    mid, seq, ts, src, dst = stamp
    reply_to, crc = _REPLY_CHECK.unpack_from(view)
    cls = Message if wire_name == BASE_NAME else resolve(wire_name)
    if kind not in _MESSAGE_KINDS:
        raise DecodeError(f"message {mid} from node index {src} has unknown kind {kind}")
    if flags & FLAG_COMPRESSED:
        # The sender compressed some frames (`compression.shrink`): decompress them, and read
        # meta without the table it appended, so that the rest section ends where it did.
        view, frames = compression.expand(view, frames, mid, src)
    end = start + data_len
    size = len(view)
    if (end != size) if not flags & FLAG_REST else (end >= size):
        # (a damaged length field would cut the data short, or shift the rest section)
        raise length_error(mid, src, data_len, size, start)
    # A damaged pickle can make C pickle allocate without bound (a PUT's memo index): the
    # checksum refuses damaged bytes before any of them reach it.
    checked = kind in _PICKLED_KINDS or flags & FLAG_REST
    if checked and pickled_checksum(view, kind, flags, start) != crc:
        raise _checksum_error(mid, src)
    try:
        if kind == KIND_SMALL_ARRAY:
            data = small_array(view, start, end)
        elif kind == KIND_ARRAY:
            dtype, shape, fortran, _ = read_descriptor(view, start, end)
            data = rebuild_array(frames[0], dtype, shape, fortran)
        elif kind == KIND_TEXT:
            data = str(view[start:end], "utf-8")
        elif kind == KIND_ARRAY_DICT:
            data = maps.join(view[start:end], frames[:n_data])
        else:
            data = pickle.loads(view[start:end], buffers=frames[:n_data] if frames else None)
        state = _state(data, mid, seq, ts, src, dst, reply_to, names)
        if view[ROUTE_AT] & ROUTE_QOS:  # (never on the fast path above: its route section)
            priority, ttl = header.qos(view)
            state["priority"] = priority
            state["ttl"] = ttl or None
        return _built(cls, state, view[end:] if flags & FLAG_REST else None, frames[n_data:])
    except DecodeError:
        raise
    except Exception as exc:  # anything the bytes made numpy, pickle or the class raise
        raise decode_error(short_name(wire_name), mid, src, exc) from exc


def decode_plain(
    meta: bytes | bytearray | memoryview,
    frames: Sequence[np.ndarray[Any, Any]],
    names: Sequence[str],
    owned: bool,
    head: tuple[Any, ...],
) -> Message:
    """`decode` of a plain Message (no class name, route or rest section, not compressed; its
    data a pickle without arrays, a text, a small array in meta, or one array in its frame),
    from the header its caller read and checked (``head``: `header.LEAD`'s fields): without
    the general machinery, and without reading the header again.

    Raises:
        DecodeError: the data section is damaged or does not decode.
    """
    lead, mid, seq, ts, src, dst, _, _, data_len, reply_to, crc = head
    kind = lead >> 8 & 0xFF
    if HEAD_SIZE + data_len != len(meta):  # (a damaged length field would cut the data short)
        raise length_error(mid, src, data_len, len(meta))
    data: Any
    try:
        if kind == KIND_TEXT:  # (the commonest small message first)
            data = str(meta[HEAD_SIZE : HEAD_SIZE + data_len], "utf-8")
        else:  # (a small array in a whole bytearray taken for good is a view of it)
            view = memoryview(meta) if isinstance(meta, bytearray) else meta
            if kind == KIND_PICKLE:
                section = view[HEAD_SIZE : HEAD_SIZE + data_len]
                if _checksum(section) != crc:
                    raise _checksum_error(mid, src)
                data = pickle.loads(section)
            elif kind == KIND_ARRAY:
                dtype, shape, fortran, _ = read_descriptor(view, HEAD_SIZE, HEAD_SIZE + data_len)
                data = rebuild_array(frames[0], dtype, shape, fortran)
            else:
                data = small_array(view, HEAD_SIZE, HEAD_SIZE + data_len, owned)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(
            f"cannot decode a Message message {mid} from node index {src}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return plain_message(data, mid, seq, ts, src, dst, reply_to, names)
