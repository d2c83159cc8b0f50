"""Receive buffers for large frames, reused once nothing refers to them any more.

A fresh 64 MiB buffer costs more in first-touch page faults than receiving into it, so large
frames land in pooled buffers. A buffer is free again when no array (the user's message, a view
of it, a queued parcel) refers to it any more, which CPython's reference count tells exactly.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

Buffer = np.ndarray[Any, Any]

POOL_VARIABLE = "GEODE_RECV_POOL_BYTES"
DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_MIN_SIZE = 2**20


class BufferPool:
    """Hands out uint8 buffers, reusing free pooled ones for frames of ``min_size`` or more.

    Args:
        max_bytes: the most memory the pool keeps (0 disables pooling); default from the
            GEODE_RECV_POOL_BYTES environment variable, else 256 MiB.
        min_size: smaller frames get fresh buffers (malloc reuses small blocks anyway).
    """

    def __init__(self, max_bytes: int | None = None, min_size: int = DEFAULT_MIN_SIZE) -> None:
        if max_bytes is None:
            text = os.environ.get(POOL_VARIABLE, "").strip()
            if text and not text.isdigit():
                raise ValueError(
                    f"{POOL_VARIABLE} must be a number of bytes (digits only), got {text!r}"
                )
            max_bytes = int(text) if text else DEFAULT_MAX_BYTES
        self.max_bytes = max_bytes
        self.min_size = min_size
        self._buffers: list[Buffer] = []
        self.held = 0
        self.reused = 0
        # References a buffer has when nothing outside the pool holds it, counted in a loop of
        # the same shape as the one that looks for a free buffer.
        self._buffers.append(np.empty(1, np.uint8))
        self._free_refs = self._probe()
        self._buffers.clear()

    def _probe(self) -> int:
        for buffer in self._buffers:
            return sys.getrefcount(buffer)
        return 0

    def _find(self, low: int, high: int) -> Buffer | None:
        """A free pooled buffer of ``low`` to ``high`` bytes, if there is one."""
        free = self._free_refs
        for buffer in self._buffers:
            if low <= buffer.nbytes <= high and sys.getrefcount(buffer) <= free:
                return buffer
        return None

    def take(self, nbytes: int) -> Buffer:
        """A writable uint8 buffer of exactly ``nbytes``."""
        if nbytes < self.min_size or self.max_bytes <= 0:
            return np.empty(nbytes, np.uint8)
        found = self._find(nbytes, 2 * nbytes)
        if found is not None:
            self.reused += 1
            view: Buffer = found[:nbytes]
            return view
        fresh = np.empty(nbytes, np.uint8)
        if self._make_room(nbytes):
            self._buffers.append(fresh)
            self.held += nbytes
        return fresh

    def _make_room(self, nbytes: int) -> bool:
        if nbytes > self.max_bytes:
            return False
        while self.held + nbytes > self.max_bytes:
            victim = self._find(0, self.max_bytes)
            if victim is None:
                return False
            self._buffers = [b for b in self._buffers if b is not victim]
            self.held -= victim.nbytes
        return True
