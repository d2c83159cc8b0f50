"""submit() in the embedded world: it queues its task without the Geode's gate, which the
executor's thread holds while it waits (the thread puts the task on the work queue)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from geode_mpi import Geode
from geode_mpi.core.workqueues import WorkQueue

TIMEOUT = 30.0
TASKS = 2000


def echo(x: int) -> int:
    return x


def test_map_of_small_tasks_takes_the_gate_in_the_executors_thread_only() -> None:
    """Before, every submit put its task on the queue itself, through the gate: one acquisition
    a task at least, each waiting for the executor's thread to pause (164-182 us a trivial
    task with chunksize=1, most of the submitting thread's time spent blocked on the gate)."""
    taken: Counter[str] = Counter()
    with Geode(["node0", "node1"]) as geode:
        gate = geode.transport.gate
        acquire = gate.acquire

        def counted(*args: Any) -> bool:
            taken[threading.current_thread().name] += 1
            return acquire(*args)

        with geode.executor() as ex:
            assert ex is not None
            assert list(ex.map(echo, range(10), timeout=TIMEOUT)) == list(range(10))
            gate.acquire = counted
            try:
                assert list(ex.map(echo, range(TASKS), timeout=TIMEOUT)) == list(range(TASKS))
            finally:
                gate.acquire = acquire
    main = threading.main_thread().name
    assert taken[main] == 0, f"the submitting thread took the gate {taken[main]} times"
    assert sum(taken.values()) > TASKS  # (the executor's thread did: the count counts)


def test_a_task_the_executors_thread_cannot_put_fails_its_future_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A put that raises in the executor's thread (as it raised from submit before) fails
    that task's future; the others run."""
    put = WorkQueue.put

    def refuse_the_third(queue: WorkQueue, task: Any, *args: Any, **kwargs: Any) -> Any:
        if task.data[0] == 2:
            raise RuntimeError("refused on purpose")
        return put(queue, task, *args, **kwargs)

    monkeypatch.setattr(WorkQueue, "put", refuse_the_third)
    with Geode(["node0", "node1"]) as geode, geode.executor() as ex:
        assert ex is not None
        futures = [ex.submit(echo, k) for k in range(5)]
        with pytest.raises(RuntimeError, match="refused on purpose"):
            futures[2].result(timeout=TIMEOUT)
        assert [futures[k].result(timeout=TIMEOUT) for k in (0, 1, 3, 4)] == [0, 1, 3, 4]


_second_may_end = threading.Event()


def first_short() -> str:
    return "first"


def second_waits_for_the_first_future() -> bool:
    return _second_may_end.wait(TIMEOUT)


def test_a_finished_tasks_future_resolves_while_this_threads_next_task_runs() -> None:
    """Before, the executor's thread looked for a task to run before it looked at the
    outcomes that had come: a task's future resolved only once the next task it had taken
    (prefetched) had ended too (a probe: a 0.2 s task's future resolved after 2.2 s, behind a
    2 s task; `map(..., timeout=)` and `as_completed` fired wrongly). The second task here
    ends only once the first future has resolved: before, the first's result() timed out."""
    _second_may_end.clear()
    with Geode(["node0", "node1"]) as geode, geode.executor() as ex:
        assert ex is not None
        first = ex.submit(first_short)
        second = ex.submit(second_waits_for_the_first_future)
        try:
            assert first.result(timeout=5.0) == "first"
        finally:
            _second_may_end.set()
        assert second.result(timeout=TIMEOUT) is True


def add(x: int, y: int) -> int:
    return x + y


def test_a_future_passed_to_submit_is_named_as_such() -> None:
    """A Dask habit, `submit(add, future, 10)`: before, EncodeError "cannot send the arguments
    of 'add' of type builtins.tuple: TypeError: cannot pickle '_thread.RLock' object", naming
    neither the argument nor the Future."""
    with Geode(["node0", "node1"]) as geode, geode.executor() as ex:
        assert ex is not None
        first = ex.submit(add, 1, 2)
        with pytest.raises(
            TypeError, match=r"submit\('add'\): argument 0 is a Future.*\.result\(\)"
        ):
            ex.submit(add, first, 10)
        with pytest.raises(TypeError, match=r"keyword argument y is a Future"):
            ex.submit(add, 1, y=first)
        assert ex.submit(add, first.result(timeout=TIMEOUT), 10).result(timeout=TIMEOUT) == 13
