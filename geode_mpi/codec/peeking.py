"""Reading an encoded message's header without decoding its payload: `peek` (its stamp, class
name, kind and sections), `class_name_of` (a type filter's test), and `make_stamp`."""

from __future__ import annotations

from geode_mpi.codec import header
from geode_mpi.codec.classes import BASE_NAME
from geode_mpi.codec.header import VERSION
from geode_mpi.codec.wire_parts import Peek, Stamp, _names, _new_name
from geode_mpi.errors import DecodeError

HEAD_SIZE = header.SIZE
_HEAD = header.HEAD
_tuple_new = tuple.__new__


def peek(meta: bytes | memoryview) -> Peek:
    """Read the stamp and class name of an encoded message.

    Raises:
        DecodeError: the bytes are not a message of a known codec version.
    """
    # The version first: another version's header may be shorter than this one's.
    if len(meta) and meta[0] != VERSION:
        raise DecodeError(
            f"message codec version {meta[0]} is not supported (this geode_mpi speaks {VERSION}): "
            "are all ranks running the same geode_mpi?"
        )
    if len(meta) < HEAD_SIZE:
        raise DecodeError(
            f"message meta is {len(meta)} bytes, shorter than the {HEAD_SIZE}-byte header"
        )
    _, kind, flags, _, mid, seq, ts, src, dst, name_len, route_len, n_data, data_len, _, _, _ = (
        _HEAD.unpack_from(meta, 0)
    )
    body = HEAD_SIZE + name_len + route_len
    name = _names.get(bytes(meta[HEAD_SIZE : HEAD_SIZE + name_len])) if name_len else BASE_NAME
    if name is None:
        name = _new_name(meta, HEAD_SIZE + name_len, body, mid, src)
    # tuple.__new__ builds a NamedTuple without its Python-level __new__ (0.25 us each).
    stamp = _tuple_new(Stamp, (mid, seq, ts, src, dst))
    return _tuple_new(Peek, (stamp, name, kind, flags, body, n_data, data_len))


def class_name_of(meta: bytes | memoryview) -> str:
    """The wire name of an encoded message's class, as `peek` gives it, read without the rest
    of the header when its name was met before (a type filter's test of each queued message).

    Raises:
        DecodeError: as `peek`.
    """
    if len(meta) < HEAD_SIZE or meta[0] != VERSION:
        return peek(meta).class_name  # (it says what is wrong)
    end = HEAD_SIZE + (meta[header.NAME_LEN_AT] | meta[header.NAME_LEN_AT + 1] << 8)
    if end == HEAD_SIZE:
        return BASE_NAME
    name = _names.get(bytes(meta[HEAD_SIZE:end]))
    return peek(meta).class_name if name is None else name


def make_stamp(id: int, seq: int, timestamp: float, source: int, dest: int) -> Stamp:
    """A Stamp, built the fast way (senders make one per message)."""
    return _tuple_new(Stamp, (id, seq, timestamp, source, dest))
