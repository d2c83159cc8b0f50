"""Pickle protocol 5 with every numpy array out of band, contiguous or not."""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.codec.arrays import array_frame, is_raw_array, read_descriptor, rebuild_array

if TYPE_CHECKING:
    import numpy as np
else:  # used only once an array (or another out-of-band buffer) is pickled or unpickled
    np = on_first_use("numpy", globals(), "np")

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


class _Frames:
    """Where a pickling's out-of-band buffers go. Apart from the pickler, so that the pickler
    is not a reference cycle (its buffer callback a method of itself): a cycle would keep every
    array it pickled alive until the cyclic garbage collector ran, and with them the pooled
    receive buffers of arrays being forwarded."""

    __slots__ = ("frames", "standing_in")

    def __init__(self, frames: list[np.ndarray[Any, Any]]) -> None:
        self.frames = frames
        self.standing_in: dict[int, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = {}

    def on_buffer(self, buffer: pickle.PickleBuffer) -> bool:
        view = memoryview(buffer)
        found = self.standing_in.pop(id(view.obj), None)
        if found is not None:
            self.frames.append(found[1])
            return False
        if isinstance(view.obj, np.ndarray):
            self.frames.append(view.obj)
            return False
        if not view.contiguous:
            return True  # a foreign strided buffer: let pickle copy it in band
        self.frames.append(np.frombuffer(view.cast("B"), dtype=np.uint8))
        return False


class _Pickler(pickle.Pickler):
    """Sends arrays as out-of-band frames in their own memory, strided ones included.

    Pickle only accepts contiguous buffers out of band, and some dtypes (datetime64) cannot
    export a buffer at all, so each array is stood for by an empty placeholder buffer; the
    buffer callback swaps the real array in as the frame.
    """

    def __init__(self, file: io.BytesIO, out: _Frames) -> None:
        super().__init__(file, protocol=5, buffer_callback=out.on_buffer)
        self._out = out

    def reducer_override(self, obj: Any) -> Any:
        if is_raw_array(obj):
            descriptor, frame = array_frame(obj)
            token = np.empty(0, np.uint8)
            self._out.standing_in[id(token)] = (token, frame)
            return _rebuild, (pickle.PickleBuffer(token), descriptor)  # type: ignore[arg-type]
        return NotImplemented


def dumps(obj: Any, frames: list[np.ndarray[Any, Any]]) -> bytes:
    """Pickle ``obj``; append its arrays (and other large buffers) to ``frames``.

    Raises:
        Exception: whatever pickle raises for an unpicklable object.
    """
    if is_plain(obj):
        return pickle.dumps(obj, protocol=5)
    out = io.BytesIO()
    _Pickler(out, _Frames(frames)).dump(obj)
    return out.getvalue()


def loads(data: bytes | memoryview, frames: Sequence[Any]) -> Any:
    """Unpickle what `dumps` produced, given the frames it appended, in order."""
    return pickle.loads(data, buffers=frames)
