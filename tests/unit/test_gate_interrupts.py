"""A KeyboardInterrupt (Ctrl-C) at the worst moment of the gate's lock handling: right after
the lock was taken, right after it was let go for a pause, or while blocked taking it back.
Each leaves the lock as it was before the call, never held for ever, never released twice."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from geode_mpi import Geode
from geode_mpi.base.gate import Gate

TIMEOUT = 10.0


class Interrupt(BaseException):
    """Stands for the KeyboardInterrupt a SIGINT raises (which pytest would take for its own)."""


def interrupted_after(call: Callable[..., Any], times: list[int]) -> Callable[..., Any]:
    """``call``, then an interrupt as it returns (a SIGINT seen right after the call), on the
    calls numbered in ``times`` (1: the first)."""
    calls = [0]

    def wrapper(*args: Any) -> Any:
        result = call(*args)
        calls[0] += 1
        if calls[0] in times:
            raise Interrupt
        return result

    return wrapper


def levels(gate: Gate) -> int:
    """The levels of the gate's lock this thread holds."""
    return int(gate.lock._recursion_count())


@pytest.fixture
def geode() -> Iterator[Geode]:
    g = Geode()
    yield g
    g.close()


def test_an_interrupt_right_after_enter_takes_the_lock_gives_it_back(geode: Geode) -> None:
    runtime = geode._runtime
    gate = runtime.gate
    acquire = gate.acquire
    gate.acquire = interrupted_after(acquire, [1])  # (enter's first, non-blocking try)
    with pytest.raises(Interrupt):
        runtime.serialised(runtime.poll)
    gate.acquire = acquire
    assert levels(gate) == 0
    assert not gate.owned()


def test_an_interrupt_right_after_a_locked_call_takes_the_lock_gives_it_back(
    geode: Geode,
) -> None:
    gate = geode._runtime.gate
    acquire = gate.acquire
    gate.acquire = interrupted_after(acquire, [1])
    with pytest.raises(Interrupt):
        geode.stats()  # (a public call that always holds the gate)
    gate.acquire = acquire
    assert levels(gate) == 0


def test_an_interrupt_in_a_nested_call_gives_back_its_level_only(geode: Geode) -> None:
    runtime = geode._runtime
    gate = runtime.gate
    acquire = gate.acquire
    gate.acquire = interrupted_after(acquire, [2])  # the inner call's

    def outer() -> int:
        with pytest.raises(Interrupt):
            runtime.serialised(runtime.poll)
        return levels(gate)

    assert runtime.serialised(outer) == 1  # the outer call's level, still held
    gate.acquire = acquire
    assert levels(gate) == 0


@pytest.mark.parametrize("pause", ["sleep", "handoff", "unlocked"])
def test_an_interrupt_right_after_a_pause_lets_go_takes_it_back(geode: Geode, pause: str) -> None:
    runtime = geode._runtime
    gate = runtime.gate
    release_save = gate._release_save
    gate._release_save = interrupted_after(release_save, [1])
    held = []

    def waits() -> None:
        try:
            if pause == "sleep":
                gate.sleep(0.001)
            elif pause == "handoff":
                gate.handoff()
            else:
                gate.unlocked(print, "")
        finally:
            held.append(levels(gate))

    with pytest.raises(Interrupt):  # (not RuntimeError: cannot release un-acquired lock)
        runtime.serialised(runtime.serialised, waits)
    gate._release_save = release_save
    assert held == [2]  # both levels taken back before the callers unwound
    assert levels(gate) == 0


def test_an_interrupt_while_blocked_taking_the_lock_back_still_takes_it(geode: Geode) -> None:
    runtime = geode._runtime
    gate = runtime.gate
    holding = threading.Event()
    let_go = threading.Event()

    def other() -> None:
        runtime.serialised(let_go.wait, TIMEOUT)
        holding.set()

    restore = gate._restore
    tries = []

    def interrupted_restore(state: Any) -> None:
        tries.append(state)
        if len(tries) == 1:  # blocked, interrupted before it got the lock
            let_go.set()
            raise Interrupt
        restore(state)

    thread = threading.Thread(target=other)
    held = []

    def waits() -> None:
        gate._restore = interrupted_restore
        try:
            thread.start()
            gate.unlocked(lambda _: threading.Event().wait(0.2), None)
        finally:
            held.append(levels(gate))

    with pytest.raises(Interrupt):  # (not RuntimeError: cannot release un-acquired lock)
        runtime.serialised(waits)
    gate._restore = restore
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert holding.is_set()
    assert held == [1]  # taken back: the call's finally gave it back, once
    assert levels(gate) == 0
    assert gate.acquire(False)  # nobody holds it
    gate.release()
