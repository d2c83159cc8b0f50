"""The envelope: one MPI message holding a header, a frame table, the meta and small frames.

Layout (little-endian), documented in docs/wire-format.md:

    2s magic b"GM" | u8 version | pad | u32 frame count | u32 meta length | 4 pad bytes
    frame count x u64: frame length << 1 | 1 if the frame travels out of band
    meta bytes
    inline frames, each starting at a multiple of 16 bytes from the envelope start (empty
    frames take no room and no padding)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from geode_mpi.errors import EncodeError
from geode_mpi.transport.base import Frame, frame_bytes

MAGIC = b"GM"
VERSION = 1
# magic, transport version, frame count, meta length, 4 pad bytes so that meta starts 16-aligned
_HEADER = struct.Struct("<2sBxIIxxxx")
HEADER_SIZE = _HEADER.size
_ENTRY = struct.Struct("<Q")  # frame length << 1 | 1 if the frame follows out of band
ALIGN = 16
INLINE_MAX = 16 * 1024


_PADDING = bytes(ALIGN)
_U32_MAX = 2**32 - 1
_tables: dict[int, struct.Struct] = {}


def _align(offset: int) -> int:
    return (offset + ALIGN - 1) & ~(ALIGN - 1)


def check_envelope(meta: bytes) -> None:
    """Raise `EncodeError` if ``meta`` cannot go in an envelope (more than 4 GiB)."""
    if len(meta) > _U32_MAX:
        raise EncodeError(
            "a message",
            bytes,
            ValueError(f"its meta is {len(meta)} bytes; an envelope holds at most 4 GiB"),
        )


def build_envelope(
    meta: bytes, frames: Sequence[Frame], inline_max: int
) -> tuple[bytes, list[Frame]]:
    """Pack meta and small frames into one buffer; return it and the out-of-band frames."""
    check_envelope(meta)
    header = _HEADER.pack(MAGIC, VERSION, len(frames), len(meta))
    if not frames:
        return header + meta, []
    parts: list[Any] = [header]
    parts.extend(_ENTRY.pack(f.nbytes << 1 | (f.nbytes > inline_max)) for f in frames)
    parts.append(meta)
    end = len(header) + 8 * len(frames) + len(meta)
    oob: list[Frame] = []
    for frame in frames:
        size = frame.nbytes
        if size > inline_max:
            oob.append(frame)
        elif size:
            pad = -end % ALIGN
            if pad:
                parts.append(_PADDING[:pad])
            parts.append(_byte_view(frame))
            end += pad + size
    return b"".join(parts), oob


def _byte_view(frame: Frame) -> memoryview:
    """The frame's elements in C order as bytes, without copying when it is contiguous."""
    if frame.flags.c_contiguous:
        try:
            return memoryview(frame).cast("B")  # type: ignore[arg-type]
        except (ValueError, TypeError):
            pass  # dtypes without a buffer format (datetime64)
    return memoryview(frame_bytes(frame))  # type: ignore[arg-type]


def parse_envelope(
    buffer: bytearray | Frame,
) -> tuple[memoryview, list[memoryview | None], list[int]]:
    """Split a received envelope into meta, inline frames (None where out of band), oob sizes.

    Raises:
        ValueError: the buffer is not a geode_mpi envelope of a known version.
    """
    raw = memoryview(buffer)  # type: ignore[arg-type]
    if len(raw) < _HEADER.size:
        raise ValueError(f"envelope of {len(raw)} bytes is shorter than its header")
    magic, version, n_frames, meta_len = _HEADER.unpack_from(raw, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError(
            f"not a geode_mpi v{VERSION} envelope (magic {magic!r}, version {version}): "
            "are all ranks running the same geode_mpi?"
        )
    offset = _HEADER.size
    if not n_frames:
        return raw[offset : offset + meta_len], [], []
    table = _tables.get(n_frames)
    if table is None:
        table = _tables[n_frames] = struct.Struct(f"<{n_frames}Q")
    entries = table.unpack_from(raw, offset)
    offset += 8 * n_frames
    meta = raw[offset : offset + meta_len]
    end = offset + meta_len
    frames: list[memoryview | None] = []
    oob_sizes = []
    for entry in entries:
        size, big = entry >> 1, entry & 1
        if big:
            frames.append(None)
            oob_sizes.append(size)
        elif size:
            end = _align(end)
            frames.append(raw[end : end + size])  # writable when the buffer is
            end += size
        else:
            frames.append(raw[:0])
    return meta, frames, oob_sizes
