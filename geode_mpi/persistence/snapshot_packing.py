"""Byte strings and encoded messages packed as a few arrays, for a checkpoint file, and back.

Variable-length bytes go into one concatenated ``bytes`` value plus an array of end offsets, so
that a queue of a million messages is a handful of HDF5 datasets, not a million.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.codec.compression import expanded
from geode_mpi.persistence.checks import as_int_array, brief
from geode_mpi.persistence.store import CheckpointError

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a checkpoint is written or read
    np = on_first_use("numpy", globals(), "np")


def pack_blobs(blobs: Sequence[bytes | memoryview]) -> dict[str, Any]:
    """Byte strings as one ``data`` value and their ``ends``."""
    ends = np.cumsum([len(blob) for blob in blobs], dtype=np.int64)
    return {"data": b"".join(blobs), "ends": ends}  # (join copies each buffer once)


def unpack_blobs(packed: Any) -> list[bytes]:
    """Back from `pack_blobs`.

    Raises:
        CheckpointError: ``packed`` is not what `pack_blobs` makes (a damaged checkpoint).
    """
    if not isinstance(packed, dict) or not isinstance(packed.get("data"), bytes):
        raise CheckpointError(f"packed bytes: expected {{data: bytes, ends}}, got {brief(packed)}")
    data, ends = packed["data"], as_int_array(packed.get("ends"), "packed bytes: ends")
    if ends.ndim != 1 or (len(ends) and (ends[-1] != len(data) or np.any(np.diff(ends) < 0))):
        raise CheckpointError(f"packed bytes: ends {brief(ends)} do not cut {len(data)} bytes")
    if len(ends) and ends[0] < 0:
        raise CheckpointError(f"packed bytes: ends start at {ends[0]}")
    if not len(ends) and data:
        raise CheckpointError(f"packed bytes: {len(data)} bytes and no ends")
    starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
    return [data[start:end] for start, end in zip(starts.tolist(), ends.tolist(), strict=True)]


def pack_messages(items: Sequence[tuple[bytes | memoryview, Sequence[Any]]]) -> dict[str, Any]:
    """Encoded messages (meta, frames) as a few arrays: the frames' bytes copied once, into
    the packed ``data``. Compressed frames are saved decompressed (docs/checkpoints.md)."""
    items = [expanded(meta, frames) for meta, frames in items]
    frames = [_raw(frame) for _, fs in items for frame in fs]
    return {
        "metas": pack_blobs([meta for meta, _ in items]),
        "frames": pack_blobs(frames),
        "frame_counts": np.array([len(fs) for _, fs in items], np.int64),
    }


def _raw(frame: Any) -> memoryview:
    """A frame's bytes as they travel: an array frame (of any dtype: a float64 array inside a
    tuple is one) viewed as bytes, never converted to uint8 value by value."""
    if isinstance(frame, np.ndarray):
        frame = np.ascontiguousarray(frame)
    return np.frombuffer(frame, np.uint8).data


def unpack_messages(packed: Any) -> list[tuple[bytes, list[np.ndarray[Any, Any]]]]:
    """Back from `pack_messages`.

    Raises:
        CheckpointError: ``packed`` is not what `pack_messages` makes.
    """
    if not isinstance(packed, dict):
        raise CheckpointError(f"packed messages: expected a group, got {brief(packed)}")
    metas = unpack_blobs(packed.get("metas"))
    frames = [np.frombuffer(blob, np.uint8).copy() for blob in unpack_blobs(packed.get("frames"))]
    counts = as_int_array(packed.get("frame_counts"), "frame_counts").reshape(-1).tolist()
    if len(counts) != len(metas) or min(counts, default=0) < 0 or sum(counts) != len(frames):
        raise CheckpointError(
            f"packed messages: {len(metas)} metas, {len(frames)} frames and frame counts "
            f"{brief(counts)} do not agree"
        )
    out = []
    k = 0
    for meta, count in zip(metas, counts, strict=True):
        out.append((meta, frames[k : k + count]))
        k += count
    return out
