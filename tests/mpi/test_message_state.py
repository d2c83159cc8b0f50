"""Over MPI, a Message subclass's own ``__getstate__`` and ``__setstate__`` are honoured on
every lane (first send, express sends, isend runs, out-of-band arrays), as pickle does."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from payloads import Locked, Packed, Unlocked

from geode_mpi import Geode

TIMEOUT = 60.0
LOCK = type(threading.Lock())


def test_getstate_and_setstate_are_honoured_around_a_ring(geode: Geode) -> None:
    after = geode.nodes[(geode.rank + 1) % geode.size]
    before = geode.nodes[(geode.rank - 1) % geode.size]
    cases: list[Any] = [[geode.rank, 1], np.arange(3.0) + geode.rank, np.arange(100_000.0)]
    for step in range(3):
        for data in cases:
            handle = geode.isend(Locked(data, f"{geode.rank}:{step}"), geode.node, after)
            got = geode.receive(geode.node, source=before, timeout=TIMEOUT)
            handle.wait(timeout=TIMEOUT)
            assert type(got) is Locked and got.restored == 1, f"rank {geode.rank}: {got!r}"
            assert isinstance(got.lock, LOCK) and got.total == float(np.sum(got.data))
            assert got.label == f"{(geode.rank - 1) % geode.size}:{step}"
            handle = geode.isend(Unlocked(data), geode.node, after)
            got = geode.receive(geode.node, source=before, timeout=TIMEOUT)
            handle.wait(timeout=TIMEOUT)
            assert got.step == 3 and "lock" not in got.__dict__
    handles = [geode.isend(Packed([i], 0.5), geode.node, after) for i in range(5)]
    for i in range(5):
        got = geode.receive(geode.node, source=before, timeout=TIMEOUT)
        assert type(got) is Packed and got.data == [i] and got.scale == 0.5 and got.unpacked
    for handle in handles:
        handle.wait(timeout=TIMEOUT)
