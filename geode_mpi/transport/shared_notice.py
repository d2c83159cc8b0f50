"""The prefix of a shared-memory notice: the slot and each frame's offset (transport/shared.py)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from geode_mpi.errors import DecodeError
from geode_mpi.transport.slots import SLOTS

_PREFIX = struct.Struct("<4sii")  # magic, slot, frames; then an int64 offset per frame
_OFFSET = struct.Struct("<q")  # the one offset of the usual notice (one large frame)
_ONE_FRAME = struct.Struct("<4siiq12x")  # a one-frame notice's whole prefix, padded to 16
_MAGIC = b"GDSH"


def notice_prefix(slot: int, offsets: Sequence[int]) -> bytes:
    """The prefix of a notice of frames at ``offsets`` in ``slot``, padded to 16 bytes (the
    envelope follows it)."""
    if len(offsets) == 1:
        return _ONE_FRAME.pack(_MAGIC, slot, 1, offsets[0])  # (a quarter of the general way)
    prefix = _PREFIX.pack(_MAGIC, slot, len(offsets)) + struct.pack(f"<{len(offsets)}q", *offsets)
    return prefix + bytes(-len(prefix) % 16)


def read_notice_prefix(buffer: bytearray, source: int) -> tuple[int, tuple[int, ...], int]:
    """A notice's slot, its frames' offsets and where its envelope starts.

    Raises:
        DecodeError: not a notice of this geode_mpi.
    """
    if len(buffer) < _PREFIX.size:
        raise DecodeError(f"rank {source} sent a damaged shared-memory notice")
    magic, slot, count = _PREFIX.unpack_from(buffer)
    start = _PREFIX.size + 8 * count
    if magic != _MAGIC or not 0 <= slot < SLOTS or count < 0 or len(buffer) < start:
        raise DecodeError(f"rank {source} sent a damaged shared-memory notice")
    if count == 1:
        offsets: tuple[int, ...] = _OFFSET.unpack_from(buffer, _PREFIX.size)
    else:
        offsets = struct.unpack_from(f"<{count}q", buffer, _PREFIX.size)
    return slot, offsets, start + (-start % 16)
