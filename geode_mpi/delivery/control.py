"""Control records between nodes: acknowledgements with flow-control credits.

Payload layout (little-endian), inside a codec control record (docs/wire-format.md):

    u8 type (1 = ack) | 3 pad | u32 credits | u32 range count |
    range count x (u64 first seq, u64 end seq, exclusive)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from geode_mpi.errors import DecodeError

ACK = 1
_HEAD = struct.Struct("<BxxxII")
_RANGE = struct.Struct("<QQ")

Range = tuple[int, int]  # [first, end)


def ranges(seqs: Iterable[int]) -> list[Range]:
    """Sequence numbers as sorted, merged half-open ranges: [3, 4, 5, 9] -> [(3, 6), (9, 10)]."""
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and out[-1][1] == seq:
            out[-1][1] = seq + 1
        else:
            out.append([seq, seq + 1])
    return [(first, end) for first, end in out]


def encode_ack(credits: int, acked: list[Range]) -> bytes:
    """An ack payload: ``credits`` returned, and the ranges of sequence numbers processed."""
    parts = [_HEAD.pack(ACK, credits, len(acked))]
    parts.extend(_RANGE.pack(first, end) for first, end in acked)
    return b"".join(parts)


def decode_ack(payload: memoryview | bytes) -> tuple[int, list[Range]]:
    """(credits, ranges) of an ack payload.

    Raises:
        DecodeError: not an ack payload of this version.
    """
    if len(payload) < _HEAD.size:
        raise DecodeError(f"control record of {len(payload)} bytes is too short")
    kind, credits, count = _HEAD.unpack_from(payload, 0)
    if kind != ACK or len(payload) != _HEAD.size + count * _RANGE.size:
        raise DecodeError(f"unknown control record (type {kind}, {len(payload)} bytes)")
    acked = [_RANGE.unpack_from(payload, _HEAD.size + k * _RANGE.size) for k in range(count)]
    return credits, acked
