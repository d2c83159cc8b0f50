"""Reading a message's tracking fields, and control records: the delivery layer's bytes as a
message's data section, which the codec never interprets."""

from __future__ import annotations

from geode_mpi.codec import header
from geode_mpi.codec.header import KIND_CONTROL, VERSION, Track
from geode_mpi.codec.peeking import _HEAD, HEAD_SIZE, _tuple_new, peek

_track_fields = header.track_fields


def track(meta: bytes | memoryview) -> Track:
    """Flags, seq, source, dest and reply_to of an encoded message (or control record).

    Raises:
        DecodeError: the bytes are not a message of this codec version.
    """
    if len(meta) < HEAD_SIZE or meta[0] != VERSION:
        peek(meta)  # raises the precise error
    return _tuple_new(Track, _track_fields(meta))


def is_control(meta: bytes | memoryview) -> bool:
    """True if ``meta`` is a control record rather than a message."""
    return len(meta) > 1 and meta[header.KIND_AT] == KIND_CONTROL


def encode_control(source: int, dest: int, payload: bytes) -> bytes:
    """A control record from node index ``source`` to ``dest`` carrying ``payload``."""
    head = _HEAD.pack(
        VERSION, KIND_CONTROL, 0, 0, 0, 0, 0.0, source, dest, 0, 0, 0, len(payload), -1, 0, 0
    )
    return head + payload


def control_payload(meta: bytes | memoryview) -> memoryview:
    """The payload of a control record."""
    view = memoryview(meta)
    return view[HEAD_SIZE : HEAD_SIZE + header.data_length(view)]
