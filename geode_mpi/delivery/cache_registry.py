"""The registry of shared arrays: `share`, and what a send asks of it (a frame's id, or the
shared array it is a part of; whether it is shared; sealed views for subscribers)."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.delivery.cache_budget import CACHE_MIN
from geode_mpi.errors import EncodeError
from geode_mpi.transport.sealed import SHARED_MIN, Sealable, is_sealed

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.transport.base import Frame
else:  # a job that shares nothing never needs numpy here
    np = on_first_use("numpy", globals(), "np")


class _Shared:
    """What the registry knows of a shared array: its id, size and memory's owner (None for a
    copy received through the cache, which the receiving rank's store keeps)."""

    __slots__ = ("key", "nbytes", "owner")

    def __init__(self, key: int, nbytes: int, owner: np.ndarray[Any, Any] | None) -> None:
        self.key = key
        self.nbytes = nbytes
        self.owner = owner


# address of a shared array's memory -> its entry; process-wide (every Geode of an in-process
# hub sends from the same memory). Entries leave when their array is garbage.
shared_arrays: dict[int, _Shared] = {}
_lock = threading.Lock()


def _new_key() -> int:
    """A random 64-bit id: a rank that passes on a copy it received keeps the sender's id, so
    ids must not collide across processes (two in 2**64 / n**2 would)."""
    return int.from_bytes(os.urandom(8), "little") or 1


def _address(array: np.ndarray[Any, Any]) -> int:
    address: int = array.__array_interface__["data"][0]
    return address


def share(array: Any) -> np.ndarray[Any, Any]:
    """A read-only copy of ``array`` that a send moves to each rank only once.

    Sending the returned array (alone, or inside a message's data or attributes) to a rank
    that already holds it moves a reference of a few dozen bytes instead of its bytes, as long
    as the rank's share of the cache budget (``Geode(cache_bytes=...)``) keeps it. The copy is
    made once, here; it cannot be written (``flags.writeable`` cannot be turned back on). To
    send changed data, share a new array. Sharing a shared array (or a view of all of it in
    C or Fortran order) returns it unchanged; a transposed, broadcast or reversed view of it is
    copied, as any array is.

    Args:
        array: a numpy array (or anything `numpy.asarray` takes) without Python objects.

    Returns:
        The shared array: same dtype, shape and values, read-only.

    Raises:
        TypeError: ``array`` holds Python objects (those are pickled, never cached).
    """
    given: np.ndarray[Any, Any] = np.asarray(array)
    if given.dtype.hasobject:
        raise TypeError(f"array must not hold Python objects to be shared, got dtype {given.dtype}")
    if given.base is not None and not given.flags.writeable and given.nbytes and _in_order(given):
        found = shared_arrays.get(_address(given))
        if found is not None and found.owner is given.base and found.nbytes == given.nbytes:
            return given  # already shared
    # (Fortran order kept, as a frame is the array's memory in order; a strided or permuted
    # array, a transposed view of a 3-D one, copied in C order so that it is too)
    owner = np.array(given, order="A", copy=True)
    owner.flags.writeable = False
    view: np.ndarray[Any, Any] = (
        owner.view()
    )  # a view of a read-only owner: its flag can never turn True again
    if not owner.nbytes:
        return view
    _register(view, _Shared(_new_key(), owner.nbytes, owner), _address(owner))
    return view


def _in_order(array: np.ndarray[Any, Any]) -> bool:
    """Whether ``array``'s elements in C or Fortran order are its memory in order (what the
    codec sends as its frame: the array, or its transpose); a transposed 3-D array, a
    broadcast or a reversed one are not, even where they start at a shared array's memory
    and span as many bytes."""
    return bool(array.flags.c_contiguous or array.flags.f_contiguous)


def _register(alive: np.ndarray[Any, Any], entry: _Shared, address: int) -> None:
    """Register ``entry`` for the memory at ``address`` for as long as ``alive`` lives."""
    with _lock:
        shared_arrays[address] = entry
    weakref.finalize(alive, _forget, address, entry)


def _forget(address: int, entry: _Shared) -> None:
    with _lock:
        if shared_arrays.get(address) is entry:
            del shared_arrays[address]


def shared_key(frame: Frame) -> int:
    """The id of the shared array whose whole memory ``frame`` is, in order, or 0.

    A frame travels as its elements in C order: only a C-contiguous frame that starts where
    the shared array does and spans its bytes is those bytes (a transposed or broadcast view
    of it may start there and span as many bytes, in another order).

    Raises:
        EncodeError: the array's memory was made writable again after `share` (through its
            ``base``): its receivers may hold other bytes, and it is not sent.
    """
    entry = shared_arrays.get(_address(frame))
    if entry is None or entry.nbytes != frame.nbytes or not frame.flags.c_contiguous:
        return 0
    if entry.owner is not None and entry.owner.flags.writeable:
        raise EncodeError(
            "a shared array",
            type(frame),
            ValueError(
                "its memory was made writable again after share(), so the copies that ranks "
                "hold may differ from it: share() a new array for changed data"
            ),
        )
    return entry.key


def shared_part(frame: Frame) -> tuple[int, int]:
    """The id of the shared array whose memory holds ``frame``'s elements as one C-ordered
    run (a slice such as ``field[10:]`` or ``field[2:5, :]`` of a shared array), and where they
    start in it; (0, 0) otherwise.

    Raises:
        EncodeError: that shared array's memory was made writable again (see `shared_key`).
    """
    base = frame.base
    # (a view of another buffer than an array's: bytes, a compressed frame's, is no part)
    if not isinstance(base, np.ndarray) or not frame.flags.c_contiguous:
        return 0, 0
    owner: np.ndarray[Any, Any] = base
    start = _address(owner)
    entry = shared_arrays.get(start)
    if entry is None or entry.owner is not owner:
        return 0, 0
    offset = _address(frame) - start
    if not 0 <= offset <= entry.nbytes - frame.nbytes:
        return 0, 0
    return shared_key(owner), offset


def through_cache(frames: Sequence[Frame]) -> bool:
    """Whether a message with these frames goes through `PayloadCache.send`: one of them is a
    shared array, or a part of one large enough (`CACHE_MIN`) to be sent as a reference."""
    return any(
        shared_key(frame) or (frame.nbytes >= CACHE_MIN and shared_part(frame)[0])
        for frame in frames
    )


def cache_bound(frames: Sequence[Frame]) -> tuple[int, ...]:
    """The indices of the frames that `through_cache` counts: they travel as they are (never
    compressed), as references when the receiver holds them."""
    return tuple(
        index
        for index, frame in enumerate(frames)
        if shared_key(frame) or (frame.nbytes >= CACHE_MIN and shared_part(frame)[0])
    )


def is_shared(frame: Frame) -> bool:
    """Whether ``frame`` is a whole shared array, in order (C-contiguous, as `shared_key`
    asks), whose memory is still read-only (immutable: kept or handed on without a copy).
    Never raises."""
    entry = shared_arrays.get(_address(frame))
    if entry is None or entry.nbytes != frame.nbytes or not frame.flags.c_contiguous:
        return False
    return entry.owner is None or not entry.owner.flags.writeable


def sealed_shared(frames: Sequence[Frame]) -> Sequence[Frame]:
    """``frames`` with each large C-ordered shared array as a sealed view of its own memory
    (transport/sealed.py): the subscribers of this process then get read-only views of it,
    where an unsealed frame is copied once per publish."""
    if not shared_arrays or not any(frame.nbytes >= SHARED_MIN for frame in frames):
        return frames
    return [
        _sealed_view(frame)
        if frame.nbytes >= SHARED_MIN and frame.flags.c_contiguous and is_shared(frame)
        else frame
        for frame in frames
    ]


def _sealed_view(frame: Frame) -> Frame:
    """A sealed uint8 view of ``frame``'s memory (no copy); it keeps ``frame`` alive."""
    if is_sealed(frame):
        return frame
    view: Frame = np.asarray(Sealable(_address(frame), frame.nbytes, sealed=True, keep=frame))
    return view
