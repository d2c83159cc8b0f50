"""The envelope: one MPI message holding a header, a frame table, the meta and small frames.

Layout (little-endian), documented in docs/wire-format.md:

    2s magic b"GM" | u8 version | u8 flags | u32 frame count | u32 meta length | 4 pad bytes
    frame count x u64: frame length << 9 | page offset / 16 << 1 | 1 if out of band
    meta bytes
    inline frames, each starting at a multiple of 16 bytes from the envelope start (empty
    frames take no room and no padding)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from geode_mpi.errors import DecodeError, EncodeError
from geode_mpi.transport.base import Frame, frame_bytes

MAGIC = b"GM"
VERSION = 4  # 4: leads (transport/prepost.py); 3: the flags byte (FRAMES_AFTER); 2: no flags
# magic, transport version, flags, frame count, meta length, 4 pad bytes so that meta starts
# 16-aligned
_HEADER = struct.Struct("<2sBBIIxxxx")
HEADER_SIZE = _HEADER.size
FLAGS_BYTE = 3  # where the flags are
# Flag: the out-of-band frames follow the envelope (the network path), rather than go before it.
FRAMES_AFTER = 1
# frame length << 9 | (page offset of the sender's memory) / 16 << 1 | 1 if out of band
_ENTRY = struct.Struct("<Q")
ALIGN = 16
INLINE_MAX = 16 * 1024
PAGE = 4096


_PADDING = bytes(ALIGN)
_U32_MAX = 2**32 - 1
META_MAX = _U32_MAX  # the longest meta an envelope holds
_tables: dict[int, struct.Struct] = {}
_TABLES_MAX = 64


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
    meta: bytes,
    frames: Sequence[Frame],
    inline_max: int,
    offsets: Sequence[int] = (),
    flags: int = 0,
) -> tuple[bytes, list[Frame]]:
    """Pack meta and small frames into one buffer; return it and the out-of-band frames.

    Args:
        meta: the codec's meta bytes.
        frames: every frame of the message.
        inline_max: frames larger than this go out of band.
        offsets: for each out-of-band frame, where its memory starts within a page on the
            sender (a hint: the receiver lands it at the same offset, where copying is fastest);
            missing ones count as 0.
        flags: the header's flags (`FRAMES_AFTER`).
    """
    check_envelope(meta)
    header = _HEADER.pack(MAGIC, VERSION, flags, len(frames), len(meta))
    if not frames:
        return header + meta, []
    parts: list[Any] = [header]
    hints = iter(offsets)
    for frame in frames:
        if frame.nbytes > inline_max:
            hint = next(hints, 0) % PAGE // ALIGN
            parts.append(_ENTRY.pack(frame.nbytes << 9 | hint << 1 | 1))
        else:
            parts.append(_ENTRY.pack(frame.nbytes << 9))
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


_ONE_OUT_OF_BAND = struct.Struct("<2sBBIIxxxxQ")  # the header and one frame-table entry


def one_frame_envelope(meta: bytes, nbytes: int, address: int, flags: int = 0) -> bytes:
    """`build_envelope` for one out-of-band frame of ``nbytes`` whose memory starts at
    ``address`` (the same bytes, sooner: the commonest large message, an array alone)."""
    check_envelope(meta)
    entry = nbytes << 9 | (address % PAGE // ALIGN) << 1 | 1
    return _ONE_OUT_OF_BAND.pack(MAGIC, VERSION, flags, 1, len(meta), entry) + meta


def _byte_view(frame: Frame) -> memoryview:
    """The frame's elements in C order as bytes, without copying when it is contiguous."""
    if frame.flags.c_contiguous:
        try:
            return memoryview(frame).cast("B")  # type: ignore[arg-type]
        except (ValueError, TypeError):
            pass  # dtypes without a buffer format (datetime64)
    return memoryview(frame_bytes(frame))  # type: ignore[arg-type]


def _not_ours(magic: bytes, version: int) -> str:
    return (
        f"not a geode_mpi v{VERSION} envelope (magic {bytes(magic)!r}, version {version}): "
        "are all ranks running the same geode_mpi?"
    )


def message_bytes(
    meta: memoryview, inline: Sequence[memoryview | None], oob: Sequence[tuple[int, int]]
) -> int:
    """The bytes of the message a parsed envelope carries (`parse_envelope`): its meta and
    its frames, in band or out of it; not the envelope's header, frame table or padding.
    What its sender counted (`NodeStats.sent_bytes`), so `received_bytes` counts the same."""
    return (
        len(meta)
        + sum(frame.nbytes for frame in inline if frame is not None)
        + sum(size for size, _ in oob)
    )


def parse_envelope(
    buffer: bytearray | memoryview | Frame,
) -> tuple[memoryview, list[memoryview | None], list[tuple[int, int]]]:
    """Split a received envelope into meta, inline frames (None where out of band), and the
    out-of-band frames' (size, page offset on the sender).

    Raises:
        DecodeError: the buffer is not a geode_mpi envelope of a known version, or its
            lengths do not fit in it (also a ValueError).
    """
    raw = memoryview(buffer)  # type: ignore[arg-type]
    if len(raw) < HEADER_SIZE:
        raise DecodeError(f"envelope of {len(raw)} bytes is shorter than its header")
    magic, version, _, n_frames, meta_len = _HEADER.unpack_from(raw, 0)
    if magic != MAGIC or version != VERSION:
        raise DecodeError(_not_ours(magic, version))
    offset = HEADER_SIZE
    end = offset + 8 * n_frames + meta_len
    if end > len(raw):
        raise DecodeError(
            f"envelope of {len(raw)} bytes announces {n_frames} frames and {meta_len} bytes of "
            "meta, which do not fit in it"
        )
    if not n_frames:
        return raw[offset:end], [], []
    table = _tables.get(n_frames)
    if table is None:
        table = struct.Struct(f"<{n_frames}Q")
        if n_frames <= _TABLES_MAX:  # (garbage counts are not worth keeping)
            _tables[n_frames] = table
    entries = table.unpack_from(raw, offset)
    offset += 8 * n_frames
    meta = raw[offset:end]
    frames: list[memoryview | None] = []
    oob = []
    for entry in entries:
        size = entry >> 9
        if entry & 1:
            frames.append(None)
            oob.append((size, (entry >> 1 & 0xFF) * ALIGN))
        elif size:
            end = _align(end)
            frames.append(raw[end : end + size])  # writable when the buffer is
            end += size
        else:
            frames.append(raw[:0])
    if end > len(raw):
        raise DecodeError(
            f"envelope of {len(raw)} bytes announces inline frames that end at byte {end}"
        )
    return meta, frames, oob
