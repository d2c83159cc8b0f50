"""populate() (madvise MADV_POPULATE_WRITE before a copy into /dev/shm): EINVAL from a kernel
that knows the advice (a mapping that refuses it) turned the check off for the whole process,
as if the kernel were older than 5.14."""

from __future__ import annotations

import errno
import mmap
import os

import numpy as np
import pytest

from geode_mpi.transport import shared_populate
from geode_mpi.transport.shared_populate import PAGE, populate

REFUSING = 1000 * PAGE  # a mapping that refuses the advice (read-only, VM_IO...)
FULL = 2000 * PAGE  # a range that /dev/shm has no room for


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a process that never called populate()."""
    monkeypatch.setattr(shared_populate, "_madvise", None)
    monkeypatch.setattr(shared_populate, "_unsupported", False)


def _libc(monkeypatch: pytest.MonkeyPatch, knows: bool) -> list[tuple[int, int]]:
    """Stand in for libc's madvise on a kernel that knows the advice, or one before 5.14
    (EINVAL for everything); returns the calls it gets."""
    calls: list[tuple[int, int]] = []

    def call(address: int, length: int) -> int:
        calls.append((address, length))
        if not knows or address == REFUSING:
            return errno.EINVAL
        return errno.ENOSPC if FULL <= address < FULL + 100 * PAGE else 0

    monkeypatch.setattr(shared_populate, "_load", lambda: call)
    return calls


@pytest.mark.usefixtures("fresh")
def test_an_einval_of_one_mapping_leaves_the_check_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _libc(monkeypatch, knows=True)
    assert populate(REFUSING, 10) == 0  # no check for that copy: it goes as before
    assert populate(FULL, 3 * PAGE) == errno.ENOSPC  # before: 0, and the copy met SIGBUS
    assert populate(FULL + PAGE + 1, PAGE) == errno.ENOSPC  # widened to whole pages
    (probe, *rest) = calls
    assert probe[0] not in (REFUSING, FULL) and probe[0] % PAGE == 0 and probe[1] == PAGE
    assert rest == [(REFUSING, PAGE), (FULL, 3 * PAGE), (FULL + PAGE, 2 * PAGE)]


@pytest.mark.usefixtures("fresh")
def test_a_kernel_without_the_advice_is_asked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _libc(monkeypatch, knows=False)
    assert populate(FULL, PAGE) == 0 and populate(FULL, PAGE) == 0
    assert len(calls) == 1 and calls[0][0] != FULL  # the probe of a page of its own only
    assert shared_populate._unsupported


@pytest.mark.usefixtures("fresh")
def test_a_real_read_only_mapping_does_not_turn_the_check_off() -> None:
    """This machine's kernel and libc: a read-only mapping gets EINVAL (insufficient
    permissions) from a kernel that knows MADV_POPULATE_WRITE."""
    release = tuple(int(part) for part in os.uname().release.split(".")[:2])
    page = mmap.mmap(-1, PAGE, prot=mmap.PROT_READ)
    address = np.frombuffer(page, dtype=np.uint8).ctypes.data
    assert populate(address, PAGE) == 0
    if release >= (5, 14):  # the kernel knows the advice: the check stays on
        assert shared_populate._madvise is not False and not shared_populate._unsupported
        writable = mmap.mmap(-1, PAGE)
        writable.write(b"x")  # (a page of its own, backed)
        assert populate(np.frombuffer(writable, dtype=np.uint8).ctypes.data, PAGE) == 0
