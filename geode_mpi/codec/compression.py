"""Optional compression of large array frames with Blosc (numcodecs): settings, the wire table.

A compressed message is the message `wire.encode` made, with some of its frames replaced by
their Blosc-compressed bytes, the header's `FLAG_COMPRESSED` set and a table appended to meta
saying which frames are compressed, with which codec, and how long each was (see
docs/wire-format.md, "Compressed frames"). `shrink` makes one, `expand` undoes it. numcodecs is
imported only when a setting asks for a codec or a compressed frame arrives: without it, a
setting is refused by `setting` and a compressed frame is a `DecodeError`, each naming the
extra to install.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from geode_mpi.base.record import Frozen, fill
from geode_mpi.codec.header import FLAG_COMPRESSED, FLAGS_AT, SIZE, message_id, source
from geode_mpi.errors import DecodeError

EXTRA = "pip install 'geode_mpi[compress]'"
# Codec ids on the wire (never reuse one): Blosc's compressor inside, byte shuffle by itemsize.
CODECS = {"lz4": 1, "zstd": 2, "blosclz": 3}
NAMES = {number: name for name, number in CODECS.items()}
DEFAULT_CODEC = "lz4"
DEFAULT_LEVEL = 5
# Frames smaller than this travel raw under "auto": a frame gains (1 - 1/ratio) * size /
# bandwidth of wire time, and Blosc's per-call costs (and the sample's) lower the bandwidth
# below which it pays as frames get smaller: integer counts here, 0.64 GB/s at 32 KiB, 1.05
# at 256 KiB, 1.48 at 1 MiB (docs/compression.md, "When it pays").
AUTO_MIN = 256 * 1024
SAMPLE = 64 * 1024  # bytes compressed first; a frame whose sample does not shrink goes raw
GAIN_MIN = 1.1  # the least ratio (raw / compressed) worth sending compressed
# ... under "auto": compression and decompression cost about as much time per byte as a
# 10 Gb/s link (docs/compression.md, "When it pays"), so only a frame that halves pays.
AUTO_GAIN_MIN = 2.0
# Blosc 1 compresses at most this many bytes in one buffer; larger frames travel raw.
LIMIT = 2**31 - 1 - 16

# After the rest section: entries `<IBBHQ` (frame index, codec id, level, 0, raw size), then
# `<I4s` (the entry count, the magic).
_ENTRY = struct.Struct("<IBBHQ")
_FOOT = struct.Struct("<I4s")
_MAGIC = b"GZT1"
# Blosc 1's 16-byte header: versions, flags, typesize, raw size, block size, compressed size.
_BLOSC = struct.Struct("<BBBBIII")


class Compression(Frozen):
    """A ``compress=`` setting: ``Compression("zstd", 3)`` is what ``compress="zstd:3"`` says.

    ``codec`` is one of "lz4", "zstd", "blosclz" (Blosc's compressors, with byte shuffle), or
    None for "off"; ``level`` 1 to 9; ``auto`` compresses only towards ranks reached over the
    network path; frames under ``min_size`` bytes travel raw.

    Raises:
        ValueError: an unknown codec, a level outside 1 to 9 or a negative ``min_size``.
        TypeError: a level or ``min_size`` that is not an int, or ``auto`` not a bool.
    """

    codec: str | None
    level: int
    auto: bool
    min_size: int
    __match_args__ = ("codec", "level", "auto", "min_size")

    def __init__(
        self, codec: str | None, level: int = DEFAULT_LEVEL, auto: bool = False, min_size: int = 0
    ) -> None:
        if codec is not None and codec not in CODECS:
            raise ValueError(
                f"Compression codec must be None or one of {sorted(CODECS)}, got {codec!r}"
            )
        for name, value in (("level", level), ("min_size", min_size)):
            if type(value) is not int:  # (not a bool either)
                raise TypeError(f"Compression {name} must be an int, got {value!r}")
        if not 1 <= level <= 9:
            raise ValueError(f"Compression level must be 1 to 9, got {level!r}")
        if min_size < 0:
            raise ValueError(f"Compression min_size must be >= 0, got {min_size!r}")
        if type(auto) is not bool:
            raise TypeError(f"Compression auto must be a bool, got {auto!r}")
        fill(self, codec, level, auto, min_size)


OFF = Compression(None)
AUTO = Compression(DEFAULT_CODEC, DEFAULT_LEVEL, auto=True, min_size=AUTO_MIN)


def setting(value: str | Compression | None, argument: str = "compress") -> Compression | None:
    """Read a ``compress=`` argument: None (not said here: the wider setting applies), "off",
    "auto", a codec name ("lz4", "zstd", "blosclz") with an optional level ("zstd:3", 1 to
    9), or a `Compression`.

    Raises:
        ValueError: another value.
        ModuleNotFoundError: a codec is asked for and numcodecs is not installed.
    """
    if value is None or isinstance(value, Compression):
        found = value
    elif value == "off":
        found = OFF
    elif value == "auto":
        found = AUTO
    elif isinstance(value, str) and value.partition(":")[0] in CODECS:
        name, _, level = value.partition(":")
        if level and not (level.isdigit() and 1 <= int(level) <= 9):
            raise ValueError(f"{argument} level must be 1 to 9, got {value!r}")
        found = Compression(name, int(level) if level else DEFAULT_LEVEL)
    else:
        raise ValueError(
            f"{argument} must be None, 'off', 'auto' or a codec {sorted(CODECS)} with an "
            f"optional level ('zstd:3'), got {value!r}"
        )
    if found is not None and found.codec is not None:  # (a Compression checked its fields)
        _blosc(f"{argument}={value!r}")
    return found


def _blosc(why: str) -> Any:
    """numcodecs' Blosc module, or a clear error naming the extra."""
    try:
        from numcodecs import blosc
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"{why} needs numcodecs, which is not installed: {EXTRA}", name="numcodecs"
        ) from exc
    return blosc


def _one_thread(blosc: Any, call: str, *args: Any) -> Any:
    """``blosc.<call>(*args)`` on the calling thread alone.

    numcodecs runs Blosc on a pool of threads (as many as the cores) when called from the main
    thread, but a rank's peers are busy on the other cores (a waiting rank polls): in a
    ping-pong of 16 MiB over MPICH's ofi/tcp path here a round trip took 42 ms with one
    thread, 72-75 ms with the pool (docs/compression.md). numcodecs has no per-call setting:
    its module-wide switch is turned off for the call, then put back.
    """
    saved = blosc.use_threads
    blosc.use_threads = False
    try:
        return getattr(blosc, call)(*args)
    finally:
        blosc.use_threads = saved


def shrink(
    meta: bytes, frames: Sequence[Any], chosen: Compression, raw: Sequence[int] = ()
) -> tuple[bytes, Sequence[Any]]:
    """Compress the frames of an encoded message that are worth it, but those at the indices
    ``raw`` (they travel as they are); ``(meta, frames)`` as they were when none is.

    A frame is tried if it is C-contiguous, holds at least ``chosen.min_size`` bytes and
    fits in one Blosc buffer. Its first `SAMPLE` bytes are compressed first, and if they do
    not shrink by `GAIN_MIN` (`AUTO_GAIN_MIN` under "auto"; noise, data compressed already)
    the frame travels raw: an incompressible frame costs one sample's compression (about
    30 us), not a whole pass.
    """
    assert chosen.codec is not None
    least = max(chosen.min_size, 1)
    gain = AUTO_GAIN_MIN if chosen.auto else GAIN_MIN
    table: list[bytes] = []
    out: list[Any] | None = None
    for index, frame in enumerate(frames):
        nbytes = frame.nbytes
        if nbytes < least or nbytes > LIMIT or not frame.flags.c_contiguous or index in raw:
            continue
        packed = _compress(frame, chosen, gain)
        if packed is None:
            continue
        if out is None:
            out = list(frames)
        out[index] = packed
        table.append(_ENTRY.pack(index, CODECS[chosen.codec], chosen.level, 0, nbytes))
    if out is None:
        return meta, frames
    flagged = bytearray(meta)
    flagged[FLAGS_AT] |= FLAG_COMPRESSED
    flagged += b"".join(table)
    flagged += _FOOT.pack(len(table), _MAGIC)
    return bytes(flagged), out


def _compress(frame: Any, chosen: Compression, gain: float) -> Any:
    """The frame's Blosc bytes as a uint8 array, or None if they would not shrink ``gain``
    times."""
    import numpy as np

    blosc = _blosc(f"compress={chosen.codec!r}")
    raw = frame.reshape(-1).view(np.uint8)  # (a 0-d frame too: no dtype change on 0-d)
    typesize = min(frame.dtype.itemsize, 255) or 1
    cname = chosen.codec.encode()  # type: ignore[union-attr]
    if raw.nbytes > 2 * SAMPLE:
        sample = _one_thread(
            blosc, "compress", raw[:SAMPLE], cname, chosen.level, blosc.SHUFFLE, 0, typesize
        )
        if len(sample) * gain > SAMPLE:
            return None
    packed = _one_thread(blosc, "compress", raw, cname, chosen.level, blosc.SHUFFLE, 0, typesize)
    if len(packed) * gain > raw.nbytes:
        return None
    return np.frombuffer(packed, np.uint8)


def table_size(meta: bytes | memoryview) -> int:
    """How many bytes the compression table takes at the end of a flagged meta."""
    if len(meta) < _FOOT.size:
        return -1
    count, magic = _FOOT.unpack_from(meta, len(meta) - _FOOT.size)
    return _FOOT.size + count * _ENTRY.size if magic == _MAGIC else -1


def expand(
    meta: bytes | memoryview, frames: Sequence[Any], mid: int, src: int
) -> tuple[memoryview, list[Any]]:
    """Meta without its compression table, and the frames decompressed (of a message with
    `FLAG_COMPRESSED`; ``mid`` and ``src`` name it in errors).

    Raises:
        DecodeError: the table or a compressed frame is damaged, or numcodecs is missing.
    """
    import numpy as np

    view = memoryview(meta)
    size = table_size(view)
    if size < 0 or size > len(view) - SIZE:
        raise DecodeError(f"message {mid} from node index {src}: its compression table is damaged")
    start = len(view) - size
    out = list(frames)
    for k in range(start, len(view) - _FOOT.size, _ENTRY.size):
        index, codec, _, _, nbytes = _ENTRY.unpack_from(view, k)
        name = NAMES.get(codec)
        if index >= len(out) or name is None or nbytes > LIMIT:
            raise DecodeError(
                f"message {mid} from node index {src}: its compression table names frame "
                f"{index} of {len(out)}, codec {codec}, {nbytes} bytes: damaged"
            )
        try:
            blosc = _blosc(f"message {mid} from node index {src} (compressed with {name})")
        except ModuleNotFoundError as exc:
            raise DecodeError(str(exc)) from exc
        packed = np.asarray(out[index]).reshape(-1).view(np.uint8)
        fields = _BLOSC.unpack_from(packed.data) if packed.nbytes >= _BLOSC.size else None
        if fields is None or fields[4] != nbytes or fields[6] != packed.nbytes:
            raise DecodeError(
                f"message {mid} from node index {src}: frame {index} is not the {name} "
                f"compression of {nbytes} bytes its table says (damaged on the way)"
            )
        raw = np.empty(nbytes, np.uint8)
        try:
            _one_thread(blosc, "decompress", packed, raw)
        except Exception as exc:
            raise DecodeError(
                f"message {mid} from node index {src}: frame {index} does not decompress "
                f"({name}): {type(exc).__name__}: {exc}"
            ) from exc
        out[index] = raw
    return view[:start], out


def expanded(
    meta: bytes | memoryview, frames: Sequence[Any]
) -> tuple[bytes | memoryview, Sequence[Any]]:
    """An encoded message as it would be uncompressed (for what is saved in checkpoints):
    unchanged unless it is compressed and carries its frames."""
    if not meta[FLAGS_AT] & FLAG_COMPRESSED or not frames:
        return meta, frames
    plain, out = expand(meta, frames, message_id(meta), source(meta))
    flags = bytearray(plain)
    flags[FLAGS_AT] &= ~FLAG_COMPRESSED & 0xFF
    return bytes(flags), out
