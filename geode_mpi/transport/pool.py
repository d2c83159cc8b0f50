"""Receive buffers for large frames, reused once nothing refers to them any more.

A fresh 64 MiB buffer costs more in first-touch page faults than receiving into it, so large
frames land in pooled buffers. A buffer is free again when no array (the user's message, a view
of it, a queued parcel) refers to it any more, which CPython's reference count tells exactly.

Pooled buffers start on a 2 MiB boundary and, on Linux, ask for transparent huge pages
(``madvise(MADV_HUGEPAGE)``): a copy between processes then pins and maps a few 2 MiB pages
instead of hundreds of 4 KiB ones, and numpy work on the received array misses the TLB less.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import TYPE_CHECKING, Any, TypeAlias

from geode_mpi.base.ondemand import on_first_use

if TYPE_CHECKING:
    import numpy as np
else:  # imported when the first large frame arrives
    np = on_first_use("numpy", globals(), "np")


Buffer: TypeAlias = "np.ndarray[Any, Any]"

POOL_VARIABLE = "GEODE_RECV_POOL_BYTES"
DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_MIN_SIZE = 2**20
HUGE_PAGE = 2 * 2**20
MADV_HUGEPAGE = 14  # linux/mman.h


@functools.cache
def _madvise() -> Any:
    """libc's madvise, or None where there is none to call. Looked up once a process: each
    lookup builds ctypes types in reference cycles, which only the cyclic collector frees."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    function.restype = ctypes.c_int
    return function


def huge_page_buffer(nbytes: int, madvise: Any = None) -> tuple[Buffer, int, int]:
    """A fresh allocation with a 2 MiB-aligned region of at least ``nbytes`` inside.

    Returns:
        The allocation (the array that owns the memory), the region's offset in it, and the
        region's size (``nbytes`` rounded up to whole huge pages). With ``madvise`` (libc's),
        the region is advised to use transparent huge pages; failing to is harmless.
    """
    capacity = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    owner = np.empty(capacity + HUGE_PAGE, np.uint8)
    offset = -owner.ctypes.data % HUGE_PAGE
    if madvise is not None:
        madvise(owner.ctypes.data + offset, capacity, MADV_HUGEPAGE)
    return owner, offset, capacity


class BufferPool:
    """Hands out uint8 buffers, reusing free pooled ones for frames of ``min_size`` or more.

    Args:
        max_bytes: the most memory the pool keeps (0 disables pooling); default from the
            GEODE_RECV_POOL_BYTES environment variable, else 256 MiB.
        min_size: smaller frames get fresh buffers (malloc reuses small blocks anyway).
        huge_pages: advise pooled buffers to use transparent huge pages (Linux).
    """

    def __init__(
        self,
        max_bytes: int | None = None,
        min_size: int = DEFAULT_MIN_SIZE,
        *,
        huge_pages: bool = True,
    ) -> None:
        if max_bytes is None:
            text = os.environ.get(POOL_VARIABLE, "").strip()
            if text and not text.isdigit():
                raise ValueError(
                    f"{POOL_VARIABLE} must be a number of bytes (digits only), got {text!r}"
                )
            max_bytes = int(text) if text else DEFAULT_MAX_BYTES
        self.max_bytes = max_bytes
        self.min_size = min_size
        self._madvise = _madvise() if huge_pages else None
        # Per pooled buffer: the array that owns its memory (every view handed out refers to
        # it, so its reference count says whether one is alive), its aligned offset and size.
        self._buffers: list[Buffer] = []
        self._regions: list[tuple[int, int]] = []
        self.held = 0  # bytes of the pooled regions (the unaligned slack is never touched)
        self.reused = 0
        # References an owner has when nothing outside the pool holds it, counted in a loop of
        # the same shape as the one that looks for a free buffer (the same for any object:
        # not an array, which would import numpy for a job that never receives a frame).
        self._buffers.append(object())  # type: ignore[arg-type]
        self._free_refs = self._probe()
        self._buffers.clear()

    def _probe(self) -> int:
        for _, buffer in enumerate(self._buffers):
            return sys.getrefcount(buffer)
        return 0

    def _find(self, low: int, high: int) -> int:
        """The index of a free pooled buffer of ``low`` to ``high`` bytes, or -1."""
        free = self._free_refs
        for index, buffer in enumerate(self._buffers):
            if sys.getrefcount(buffer) <= free and low <= self._regions[index][1] <= high:
                return index
        return -1

    def take(self, nbytes: int, shift: int = 0) -> Buffer:
        """A writable uint8 buffer of exactly ``nbytes``.

        Args:
            nbytes: its size.
            shift: where a pooled buffer starts within a page (0 to 4095, a multiple of 16
                keeps every dtype aligned); the sender's offset makes the copy fastest.
        """
        if nbytes < self.min_size or self.max_bytes <= 0:
            return np.empty(nbytes, np.uint8)
        need = nbytes + shift
        index = self._find(need, 2 * need + HUGE_PAGE)
        if index >= 0:
            self.reused += 1
            start = self._regions[index][0] + shift
            view: Buffer = self._buffers[index][start : start + nbytes]
            return view
        owner, offset, capacity = huge_page_buffer(need, self._madvise)
        if self._make_room(capacity):
            self._buffers.append(owner)
            self._regions.append((offset, capacity))
            self.held += capacity
        fresh: Buffer = owner[offset + shift : offset + shift + nbytes]
        return fresh

    def clear(self) -> None:
        """Let go of every pooled buffer (a closing transport's), now rather than whenever the
        cyclic collector frees the transport: a closed Geode's objects refer to each other, and
        up to ``max_bytes`` would stay resident until then. Buffers still in use stay valid
        (the arrays handed out keep their memory alive)."""
        self._buffers.clear()
        self._regions.clear()
        self.held = 0

    def _make_room(self, nbytes: int) -> bool:
        if nbytes > self.max_bytes:
            return False
        while self.held + nbytes > self.max_bytes:
            index = self._find(0, self.max_bytes)
            if index < 0:
                return False
            del self._buffers[index]
            self.held -= self._regions.pop(index)[1]
        return True
