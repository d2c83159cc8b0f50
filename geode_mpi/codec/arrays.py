"""Numpy arrays as (descriptor, frame): the frame is the array's own memory, never a pickle."""

from __future__ import annotations

import math
import pickle
import struct
from typing import Any

import numpy as np

# order (b"C" or b"F"), dtype encoding (0 = dtype.str, 1 = pickled dtype), ndim, dtype length
_DESC = struct.Struct("<cBHI")
_DIM = struct.Struct("<q")
_BYTE = np.dtype(np.uint8)


def is_raw_array(obj: object) -> bool:
    """True for arrays that travel as raw memory (exact ndarray, no Python objects inside)."""
    return type(obj) is np.ndarray and not obj.dtype.hasobject


_described: dict[tuple[np.dtype[Any], tuple[int, ...], bytes], bytes] = {}
_DESCRIBED_MAX = 4096


def array_frame(arr: np.ndarray[Any, Any]) -> tuple[bytes, np.ndarray[Any, Any]]:
    """Split an array into a descriptor and the frame to send.

    The frame is ``arr`` itself (C order), or ``arr.T`` for a Fortran-contiguous array, so that a
    transport sending the frame's elements in C order never has to copy a contiguous array.
    Non-contiguous arrays are returned as they are; the transport sends them strided.
    """
    if arr.ndim > 1 and not arr.flags.c_contiguous and arr.flags.f_contiguous:
        order, frame = b"F", arr.T
    else:
        order, frame = b"C", arr
    key = (arr.dtype, arr.shape, order)
    found = _described.get(key)
    if found is None:
        found = _describe(arr.dtype, arr.shape, order)
        if len(_described) >= _DESCRIBED_MAX:
            _described.clear()
        _described[key] = found
    return found, frame


def _describe(dtype: np.dtype[Any], shape: tuple[int, ...], order: bytes) -> bytes:
    if dtype.names is None and dtype.subdtype is None:
        dt_kind, dt_bytes = 0, dtype.str.encode()
    else:
        dt_kind, dt_bytes = 1, pickle.dumps(dtype, protocol=5)
    parts = [_DESC.pack(order, dt_kind, len(shape), len(dt_bytes)), dt_bytes]
    parts.extend(_DIM.pack(n) for n in shape)
    return b"".join(parts)


_parsed: dict[bytes, tuple[np.dtype[Any], tuple[int, ...], bool, int]] = {}
_PARSED_MAX = 4096


def read_descriptor(
    meta: bytes | memoryview, offset: int, end: int | None = None
) -> tuple[np.dtype[Any], tuple[int, ...], bool, int]:
    """Parse a descriptor at ``offset``; return (dtype, shape, fortran, next offset).

    Parsed descriptors are cached: a job sends the same dtype and shape again and again.
    ``end``, when the caller knows it, is where the descriptor ends (saves parsing its length).
    """
    if end is not None:
        found = _parsed.get(bytes(meta[offset:end]))
        if found is not None:
            return found[0], found[1], found[2], end
    order, dt_kind, ndim, dt_len = _DESC.unpack_from(meta, offset)
    length = _DESC.size + dt_len + 8 * ndim
    key = bytes(meta[offset : offset + length])
    found = _parsed.get(key)
    if found is None:
        start = _DESC.size
        raw = key[start : start + dt_len]
        dtype = np.dtype(raw.decode()) if dt_kind == 0 else pickle.loads(raw)
        dims = start + dt_len
        shape = tuple(_DIM.unpack_from(key, dims + 8 * k)[0] for k in range(ndim))
        found = (dtype, shape, order == b"F", length)
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[key] = found
    dtype, shape, fortran, length = found
    return dtype, shape, fortran, offset + length


def rebuild_array(
    buffer: Any, dtype: np.dtype[Any], shape: tuple[int, ...], fortran: bool
) -> np.ndarray[Any, Any]:
    """View a received byte buffer (writable uint8 array or memoryview) as its array, no copy.

    Raises:
        ValueError: the buffer size does not match the descriptor.
    """
    if dtype.itemsize == 0:
        return np.empty(shape, dtype)
    try:
        array: np.ndarray[Any, Any]
        if type(buffer) is np.ndarray and buffer.dtype == _BYTE and buffer.ndim == 1:
            # A received frame (a uint8 buffer): itself, or a view of it, is cheaper than a
            # new array through the buffer protocol.
            array = buffer if dtype == _BYTE else buffer.view(dtype)
        else:
            array = np.frombuffer(buffer, dtype)
        if fortran:
            return array.reshape(shape[::-1]).T  # type: ignore[no-any-return]
        return array if array.shape == shape else array.reshape(shape)
    except ValueError:
        held = memoryview(buffer).nbytes
        raise ValueError(
            f"array frame holds {held} bytes, but dtype {dtype} and shape {shape} "
            f"need {math.prod(shape) * dtype.itemsize}"
        ) from None
