"""Sealed memory: read-only frames geode owns, handed to every subscriber of a process uncopied.

A frame is *sealed* when its memory belongs to a `Sealable` that was sealed: a read-only copy of
a large published frame (`seal`), a notice's view of a node's shared segment
(transport/shared.py), or a zero-copy array (`lease`) once published (`hand_over`). Nobody
can write sealed memory through geode's views, so the transports deliver a sealed frame to a
node of their own rank as a read-only view (`keep_or_copy`) instead of a copy, and the engine
hands one arrival's sealed frames to each of its local subscribers. The memory lives while any
view of it does.

Topic messages of `SHARED_MIN` bytes or more are sealed once per process (`seal`): in the
embedded world, and for the subscribers on the publisher's own rank, one copy serves every
subscriber, as one copy in the node's segment serves the other ranks of the node.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.transport.base import Frame, copy_frame, frame_bytes

if TYPE_CHECKING:
    import numpy as np
else:
    from geode_mpi.base.ondemand import on_first_use

    np = on_first_use("numpy", globals(), "np")

# Topic frames with this many out-of-band bytes or more are shared within a node: the other
# ranks' subscribers read one copy in the node's segment (transport/shared.py), this process's
# subscribers one sealed copy (see benchmarks/README.md, "Node-local shared memory").
SHARED_MIN = 256 * 2**10


class Sealable:
    """The owner of a block of memory that geode hands out as arrays: writable until sealed.

    Args:
        address: where the memory starts.
        nbytes: its size.
        sealed: read-only from the start (a copy or a view made to be shared).
        keep: what holds the memory (kept alive as long as this object).
    """

    __slots__ = ("__array_interface__", "__weakref__", "keep", "root", "sealed", "user")

    def __init__(self, address: int, nbytes: int, sealed: bool, keep: Any = None) -> None:
        self.__array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (address, sealed),
            "version": 3,
        }
        self.sealed = sealed
        self.keep = keep
        self.user: Callable[[], np.ndarray[Any, Any] | None] | None = None  # a lease's array
        # The array over this memory that a lease's array views (weakly: it refers to this
        # object). Sealed, it turns read-only too: numpy refuses `flags.writeable = True` on
        # every view of a read-only base array, where over this object alone it allows it.
        self.root: Callable[[], np.ndarray[Any, Any] | None] | None = None

    def seal(self) -> None:
        """Make the memory read-only for good: the array given out (not views taken of it
        before) turns read-only, and its flag cannot be set back; geode shares it from now
        on."""
        self.sealed = True
        for ref in (self.root, self.user):
            array = ref() if ref is not None else None
            if array is not None:
                array.flags.writeable = False


def owner_of(frame: Any) -> Sealable | None:
    """The `Sealable` whose memory ``frame`` views, if any."""
    base = frame
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, Sealable) else None


def is_sealed(frame: Any) -> bool:
    """Whether ``frame`` views sealed memory."""
    owner = owner_of(frame)
    return owner is not None and owner.sealed


def read_only(frame: Frame) -> Frame:
    """A read-only uint8 view of ``frame``'s elements in C order (a copy only if strided)."""
    view: Frame = frame_bytes(frame)  # (always a new array object)
    view.flags.writeable = False
    return view


def keep_or_copy(frame: Frame) -> Frame:
    """What a node of this process gets of ``frame``: a read-only view when it is sealed, a
    private writable copy otherwise."""
    if frame.nbytes >= SHARED_MIN and is_sealed(frame):
        return read_only(frame)
    return copy_frame(frame)


def sealed_copy(frame: Frame) -> Frame:
    """A sealed copy of ``frame``'s elements in C order, as uint8 (one copy)."""
    memory = copy_frame(frame)
    owner = Sealable(memory.ctypes.data, memory.nbytes, sealed=True, keep=memory)
    copied: Frame = np.asarray(owner)
    return copied


def seal(frames: Sequence[Frame]) -> Sequence[Frame]:
    """A publish's frames for the subscribers in this process: every large frame sealed (a
    published shared array is sealed in place; another frame is copied once, read-only),
    small ones as they are (the transport copies them)."""
    if not any(frame.nbytes >= SHARED_MIN for frame in frames):
        return frames
    return [_sealed(frame) if frame.nbytes >= SHARED_MIN else frame for frame in frames]


def _sealed(frame: Frame) -> Frame:
    owner = owner_of(frame)
    if owner is None:
        return sealed_copy(frame)
    owner.seal()
    return read_only(frame)


def hand_over(frames: Sequence[Frame]) -> None:
    """Seal every shared array among a publish's frames: published, it is read-only for good."""
    for frame in frames:
        if frame.nbytes >= SHARED_MIN:
            owner = owner_of(frame)
            if owner is not None and not owner.sealed:
                owner.seal()


def nbytes_of(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    """The bytes of an array of ``shape`` and ``dtype``.

    Raises:
        ValueError: a negative dimension.
        TypeError: a dtype of Python objects (those are pickled, never shared).
    """
    if dtype.hasobject:
        raise TypeError(f"dtype must not hold Python objects, got {dtype}")
    if any(extent < 0 for extent in shape):
        raise ValueError(f"shape must not have negative dimensions, got {shape}")
    return dtype.itemsize * math.prod(shape)


def process_memory(nbytes: int) -> Sealable:
    """``nbytes`` of this process's memory, not sealed yet."""
    block = np.empty(max(nbytes, 1), np.uint8)
    return Sealable(block.ctypes.data, nbytes, sealed=False, keep=block)


def lease(memory: Sealable, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """A writable array of ``shape`` and ``dtype`` over ``memory`` (not sealed yet, exactly its
    size), sealed when it is published (`hand_over`)."""
    root = np.asarray(memory)
    array: np.ndarray[Any, Any] = root.view(dtype).reshape(shape)
    memory.root = weakref.ref(root)
    memory.user = weakref.ref(array)
    return array
