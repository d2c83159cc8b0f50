"""Over MPI, a Message subclass's own ``__getstate__`` and ``__setstate__`` are honoured on
every lane (first send, express sends, isend runs, out-of-band arrays), as pickle does."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from payloads import Locked, Packed, SlotSet, Stateless, Unlocked

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


def test_queued_messages_come_back_through_setstate_after_a_restart(directory: Path) -> None:
    """Queued at the checkpoint (encoded, as their __getstate__ made them), then restarted on
    the same ranks: each is rebuilt by __setstate__, its lock and cache made again."""
    first = Geode(checkpoint_dir=directory)
    after = first.nodes[(first.rank + 1) % first.size]
    first.send(Locked(np.arange(5.0) + first.rank, f"saved{first.rank}"), first.node, after)
    first.send(Packed([first.rank], 0.5), first.node, after)
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, restart=True)
    before = (second.rank - 1) % second.size
    got = second.receive(second.node, timeout=TIMEOUT)
    assert type(got) is Locked and got.restored == 1 and got.label == f"saved{before}"
    assert isinstance(got.lock, LOCK) and got.total == float(np.sum(np.arange(5.0) + before))
    got = second.receive(second.node, timeout=TIMEOUT)
    assert type(got) is Packed and got.data == [before] and got.unpacked
    second.close(timeout=TIMEOUT)


def test_pickles_slots_pair_and_a_none_state_cross_ranks(geode: Geode) -> None:
    """A ``__setstate__`` written for pickle's (dict, slots) pair gets that pair (it was
    dead-lettered: a merged dict), and a None state calls no ``__setstate__``; data and
    headers arrive with both, on every lane (first send, express, isend runs, frames)."""
    after = geode.nodes[(geode.rank + 1) % geode.size]
    before = geode.nodes[(geode.rank - 1) % geode.size]
    previous = (geode.rank - 1) % geode.size
    for step in range(3):
        for mine, theirs in (
            ([geode.rank, step], [previous, step]),
            (np.arange(100_000.0) + step, np.arange(100_000.0) + step),
        ):
            message = SlotSet(mine, (geode.rank, step))
            message.headers = {"step": step}
            handle = geode.isend(message, geode.node, after)
            got = geode.receive(geode.node, source=before, timeout=TIMEOUT)
            handle.wait(timeout=TIMEOUT)
            assert type(got) is SlotSet and got.restored, f"rank {geode.rank}: {got!r}"
            assert got.a == (previous, step) and got.headers == {"step": step}
            assert np.array_equal(got.data, theirs)
            handle = geode.isend(Stateless(mine), geode.node, after)
            got = geode.receive(geode.node, source=before, timeout=TIMEOUT)
            handle.wait(timeout=TIMEOUT)
            assert type(got) is Stateless and "lock" not in vars(got)
            assert np.array_equal(got.data, theirs)
