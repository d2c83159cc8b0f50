"""The receive-buffer pool: a buffer is reused only when nothing refers to it any more."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from geode_mpi.transport.pool import HUGE_PAGE, MADV_HUGEPAGE, BufferPool, huge_page_buffer

MiB = 2**20


def test_buffer_is_reused_only_after_every_view_is_gone() -> None:
    pool = BufferPool(max_bytes=64 * MiB)
    first = pool.take(4 * MiB)
    view = first.view(np.float64).reshape(64, -1)[::2]
    del first
    second = pool.take(4 * MiB)
    assert pool.reused == 0 and not np.shares_memory(second, view), "a view still holds it"
    del view, second
    third = pool.take(3 * MiB)  # fits a free 4 MiB buffer (at most twice its size)
    assert pool.reused == 1 and third.nbytes == 3 * MiB


def test_small_frames_and_a_disabled_pool_get_fresh_buffers() -> None:
    pool = BufferPool(max_bytes=0)
    a = pool.take(8 * MiB)
    del a
    pool.take(8 * MiB)
    assert pool.reused == 0 and pool.held == 0
    small = BufferPool().take(100)
    assert small.nbytes == 100 and small.flags.writeable


def test_the_pool_holds_at_most_max_bytes_evicting_free_buffers() -> None:
    pool = BufferPool(max_bytes=10 * MiB)
    a, b = pool.take(4 * MiB), pool.take(4 * MiB)
    c = pool.take(4 * MiB)  # no room, nothing free: handed out, not kept
    assert pool.held == 8 * MiB
    del a, b, c
    pool.take(8 * MiB)  # evicts the free 4 MiB buffers to make room
    assert pool.held == 8 * MiB


def test_clear_lets_go_of_every_pooled_buffer_and_keeps_those_in_use_valid() -> None:
    """A closing transport clears its pool, so that its memory goes back at close()."""
    pool = BufferPool(max_bytes=64 * MiB)
    kept, free = pool.take(4 * MiB), pool.take(4 * MiB)
    kept[:] = 7
    owner = weakref.ref(free.base)  # the pooled allocation the view lives in
    del free
    pool.clear()
    assert owner() is None, "a free pooled buffer outlived clear()"
    assert pool.held == 0 and int(kept.sum()) == 7 * 4 * MiB
    pool.take(4 * MiB)
    assert pool.reused == 0


def test_the_environment_sets_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEODE_RECV_POOL_BYTES", str(5 * MiB))
    assert BufferPool().max_bytes == 5 * MiB


def test_a_bad_pool_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEODE_RECV_POOL_BYTES", "256M")
    with pytest.raises(ValueError, match="GEODE_RECV_POOL_BYTES must be a number of bytes"):
        BufferPool()


def test_pooled_buffers_start_on_a_huge_page_and_ask_for_huge_pages() -> None:
    calls: list[tuple[int, int, int]] = []
    owner, offset, capacity = huge_page_buffer(3 * MiB, lambda *args: calls.append(args))
    assert (owner.ctypes.data + offset) % HUGE_PAGE == 0
    assert capacity == 4 * MiB and offset + capacity <= owner.nbytes
    assert calls == [(owner.ctypes.data + offset, 4 * MiB, MADV_HUGEPAGE)]
    taken = BufferPool(max_bytes=64 * MiB).take(5 * MiB)
    assert taken.ctypes.data % HUGE_PAGE == 0 and taken.nbytes == 5 * MiB


def test_a_shift_places_the_buffer_at_that_offset_within_its_page() -> None:
    pool = BufferPool(max_bytes=64 * MiB)
    first = pool.take(2 * MiB, shift=16)
    assert first.ctypes.data % 4096 == 16 and first.nbytes == 2 * MiB
    first[-1] = 7  # the whole shifted buffer lies inside the pooled region
    del first
    again = pool.take(2 * MiB, shift=4080)
    assert pool.reused == 1 and again.ctypes.data % 4096 == 4080
