"""Pickle protocol 5 with every numpy array out of band, contiguous or not."""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from geode_mpi.codec.arrays import array_frame, is_raw_array, read_descriptor, rebuild_array

# Exact types that pickle quickly and never hold arrays: no Pickler object needed.
ATOMIC = frozenset((str, bytes, int, float, bool, type(None), complex))


def is_plain(obj: Any, depth: int = 2) -> bool:
    """True if ``obj`` is atomic, or a dict (its values), list or tuple of atomic items or of
    such containers, ``depth`` levels down: it holds no array, and C pickle alone pickles it
    several times faster than the array-aware pickler.

    Only a shortcut: what it turns away is pickled correctly all the same, just slower (and a
    dict key cannot be an array, being unhashable).
    """
    kind = type(obj)
    if kind in ATOMIC:
        return True
    items: Any
    if kind is dict:
        items = obj.values()
    elif kind is list or kind is tuple:
        items = obj
    else:
        return False
    for item in items:
        if type(item) not in ATOMIC and (depth == 0 or not is_plain(item, depth - 1)):
            return False
    return True


def _rebuild(buffer: Any, descriptor: bytes) -> np.ndarray[Any, Any]:
    dtype, shape, fortran, _ = read_descriptor(memoryview(descriptor), 0)
    return rebuild_array(np.asarray(buffer), dtype, shape, fortran)


class _Pickler(pickle.Pickler):
    """Sends arrays as out-of-band frames in their own memory, strided ones included.

    Pickle only accepts contiguous buffers out of band, and some dtypes (datetime64) cannot
    export a buffer at all, so each array is stood for by an empty placeholder buffer; the
    buffer callback swaps the real array in as the frame.
    """

    def __init__(self, file: io.BytesIO, frames: list[np.ndarray[Any, Any]]) -> None:
        super().__init__(file, protocol=5, buffer_callback=self._on_buffer)
        self._frames = frames
        self._standing_in: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}

    def reducer_override(self, obj: Any) -> Any:
        if is_raw_array(obj):
            descriptor, frame = array_frame(obj)
            token = np.empty(0, np.uint8)
            self._standing_in[id(token)] = (token, frame)
            return _rebuild, (pickle.PickleBuffer(token), descriptor)  # type: ignore[arg-type]
        return NotImplemented

    def _on_buffer(self, buffer: pickle.PickleBuffer) -> bool:
        view = memoryview(buffer)
        found = self._standing_in.pop(id(view.obj), None)
        if found is not None:
            self._frames.append(found[1])
            return False
        if isinstance(view.obj, np.ndarray):
            self._frames.append(view.obj)
            return False
        if not view.contiguous:
            return True  # a foreign strided buffer: let pickle copy it in band
        self._frames.append(np.frombuffer(view.cast("B"), dtype=np.uint8))
        return False


def dumps(obj: Any, frames: list[np.ndarray[Any, Any]]) -> bytes:
    """Pickle ``obj``; append its arrays (and other large buffers) to ``frames``.

    Raises:
        Exception: whatever pickle raises for an unpicklable object.
    """
    if is_plain(obj):
        return pickle.dumps(obj, protocol=5)
    out = io.BytesIO()
    _Pickler(out, frames).dump(obj)
    return out.getvalue()


def loads(data: bytes | memoryview, frames: Sequence[Any]) -> Any:
    """Unpickle what `dumps` produced, given the frames it appended, in order."""
    return pickle.loads(data, buffers=frames)
