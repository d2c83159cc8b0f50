"""The executor in the embedded world: every node in this process, tasks run by its thread."""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geode_mpi import (
    EncodeError,
    Geode,
    GeodeExecutor,
    GeodeTimeoutError,
    Message,
    QueueConfig,
    ReceiveTimeout,
    RemoteTraceback,
    TaskError,
    ThreadError,
    UnknownNodeError,
)
from geode_mpi.core.topics import EXECUTOR_BASE

TIMEOUT = 30.0
ran: list[Any] = []  # what the tasks ran, in this process
_geode: Geode | None = None  # the Geode a task that receives uses


class Go(Message):
    """Lets `wait_for_go` return."""


def square(x: int) -> int:
    ran.append(x)
    return x * x


def add(x: int, y: int, z: int = 0) -> int:
    return x + y + z


def fail(x: int) -> None:
    raise ValueError(f"task {x} fails on purpose")


class Odd(Exception):
    """An exception that pickles but cannot be unpickled (its __init__ wants two arguments)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"odd {a} {b}")


def fail_oddly() -> None:
    raise Odd(1, 2)


def unpicklable_result() -> Any:
    return threading.Lock()


def _refuse() -> None:
    raise ValueError("this value cannot be rebuilt")


class Unloadable:
    """A value that pickles, but whose unpickling raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ())


def unloadable_result() -> Any:
    return Unloadable()


def fail_with_geode_error() -> None:
    raise UnknownNodeError("node9", ["node0", "node1"])


def array(n: int) -> np.ndarray[Any, Any]:
    return np.arange(n, dtype=np.float64)


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def wait_for_go(node: str) -> Any:
    """Block the worker until the test sends it a Go (no sleep: the test decides when)."""
    assert _geode is not None
    return _geode.receive(node, type=Go, timeout=TIMEOUT).data


def receive_here(node: str) -> Any:
    """A receive of the user's own on ``node``, run by the executor's thread as a task."""
    assert _geode is not None
    try:
        return _geode.receive(node, timeout=0).data
    except ReceiveTimeout:
        return None


class Progress(Message):
    """What `send_progress` sends node0."""


def send_progress(k: int) -> int:
    """A task that works a moment, then sends node0 a message of the user's."""
    assert _geode is not None
    time.sleep(0.1)  # (its work: nothing is waited for here)
    _geode.send(Progress(k), "node1", "node0")
    return k


def exit_on_zero(x: int) -> int:
    if x == 0:
        sys.exit("bad input")
    return x


release = threading.Event()  # lets `exit_when_released` go on


def exit_when_released(x: int) -> int:
    if x == 0:
        release.wait(TIMEOUT)
        sys.exit("bye")
    return x


def slow(x: int) -> int:
    time.sleep(0.05)
    return x


@pytest.fixture
def geode() -> Any:
    global _geode
    g = _geode = Geode()
    ran.clear()
    yield g
    _geode = None
    g.close(timeout=TIMEOUT)


def test_the_block_gives_an_executor_in_the_embedded_world(geode: Geode) -> None:
    with geode.executor() as ex:
        assert isinstance(ex, GeodeExecutor)
        assert isinstance(ex, concurrent.futures.Executor)
        assert ex.client == "node0" and ex.workers == ("node1",)  # one thread runs tasks
        future = ex.submit(square, 7)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(timeout=TIMEOUT) == 49
    assert repr(ex) == "<GeodeExecutor 'executor-1' client=node0 workers=['node1'] prefetch=1>"


def test_map_yields_in_order_with_chunks_and_several_iterables(geode: Geode) -> None:
    with geode.executor() as ex:
        assert ex is not None
        assert list(ex.map(square, range(50))) == [x * x for x in range(50)]
        assert list(ex.map(square, range(23), chunksize=5)) == [x * x for x in range(23)]
        assert list(ex.map(add, [1, 2, 3], [10, 20])) == [11, 22]  # the shortest, as map()
        assert ex.submit(add, 1, 2, z=3).result(timeout=TIMEOUT) == 6
        with pytest.raises(ValueError, match="chunksize must be an int >= 1, got 0"):
            ex.map(square, range(3), chunksize=0)


def test_wait_and_as_completed_see_every_future(geode: Geode) -> None:
    with geode.executor() as ex:
        assert ex is not None
        futures = [ex.submit(square, x) for x in range(20)]
        done = {f.result() for f in concurrent.futures.as_completed(futures, timeout=TIMEOUT)}
        assert done == {x * x for x in range(20)}
        finished, pending = concurrent.futures.wait(futures, timeout=TIMEOUT)
        assert len(finished) == 20 and not pending


def test_an_exception_comes_back_with_its_traceback_naming_node_and_rank(geode: Geode) -> None:
    with geode.executor(workers=["node2"]) as ex:
        assert ex is not None
        future = ex.submit(fail, 5)
        with pytest.raises(ValueError, match="task 5 fails on purpose") as caught:
            future.result(timeout=TIMEOUT)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert (cause.node, cause.rank) == ("node2", 0)
    assert "Traceback on node2 (rank 0), most recent call last:" in str(cause)
    assert 'raise ValueError(f"task {x} fails on purpose")' in cause.traceback
    assert "in fail" in cause.traceback and "run_task" not in cause.traceback  # the task's frames


def test_an_exception_that_cannot_be_unpickled_still_says_what_and_where(geode: Geode) -> None:
    with geode.executor() as ex:
        assert ex is not None
        odd = r"task 'fail_oddly' raised Odd: odd 1 2 \(the exception could not travel: "
        with pytest.raises(TaskError, match=odd) as e:
            ex.submit(fail_oddly).result(timeout=TIMEOUT)
        assert isinstance(e.value.__cause__, RemoteTraceback)
        assert "raise Odd(1, 2)" in e.value.__cause__.traceback
        with pytest.raises(TaskError, match="the result of 'unpicklable_result' on node"):
            ex.submit(unpicklable_result).result(timeout=TIMEOUT)
        with pytest.raises(TaskError, match="the result of task 'unloadable_result' from node"):
            ex.submit(unloadable_result).result(timeout=TIMEOUT)  # (before: "a task's result")
        assert ex.submit(square, 3).result(timeout=TIMEOUT) == 9  # the executor goes on


def test_a_task_raising_a_geode_error_raises_it_at_the_client(geode: Geode) -> None:
    """geode_mpi's own exceptions did not pickle back: `except UnknownNodeError` missed it,
    a `TaskError` "(not picklable)" came instead."""
    with geode.executor() as ex:
        assert ex is not None
        with pytest.raises(UnknownNodeError, match="unknown node 'node9'") as e:
            ex.submit(fail_with_geode_error).result(timeout=TIMEOUT)
        assert e.value.nodes == ("node0", "node1")
        assert isinstance(e.value.__cause__, RemoteTraceback)


def test_a_function_that_cannot_travel_by_reference_is_named(geode: Geode) -> None:
    def local(x: int) -> int:
        return x

    with geode.executor() as ex:
        assert ex is not None
        with pytest.raises(EncodeError, match=r"the function '.*<lambda>' \(a task's function"):
            ex.submit(lambda x: x, 1)
        with pytest.raises(EncodeError, match="<locals>.local' .*define it at the top level"):
            ex.submit(local, 1)
        with pytest.raises(EncodeError, match="the function .*local"):
            ex.map(local, range(4), chunksize=2)
        with pytest.raises(EncodeError, match="the arguments of 'square'"):
            ex.submit(square, threading.Lock())
        with pytest.raises(TypeError, match="needs a callable, got 3"):
            ex.submit(3)  # type: ignore[arg-type]


def test_queued_tasks_cancel_and_never_run(geode: Geode) -> None:
    with geode.executor(workers=["node1"]) as ex:
        assert ex is not None
        blocker = ex.submit(wait_for_go, "node1")
        queued = [ex.submit(square, x) for x in range(6)]
        cancelled = [f for f in queued if f.cancel()]
        # One task runs; at most prefetch (1) more was handed to the worker: the rest cancel.
        assert len(cancelled) >= 5
        geode.send(Go("go"), dest="node1")
        assert blocker.result(timeout=TIMEOUT) == "go"
        for future in queued:
            if future in cancelled:
                assert future.cancelled()
                with pytest.raises(concurrent.futures.CancelledError):
                    future.result(timeout=TIMEOUT)
            else:
                assert future.result(timeout=TIMEOUT) == queued.index(future) ** 2
        done, _ = concurrent.futures.wait(queued, timeout=TIMEOUT)
        assert len(done) == 6
    assert sorted(ran) == sorted(queued.index(f) for f in queued if f not in cancelled)


def test_shutdown_cancels_queued_tasks_and_refuses_new_ones(geode: Geode) -> None:
    ex = geode.executor(workers=["node3"])
    blocker = ex.submit(wait_for_go, "node3")
    queued = [ex.submit(square, x) for x in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert sum(f.cancelled() for f in queued) >= 4
    with pytest.raises(RuntimeError, match=r"submit\('square'\) after shutdown\(\)"):
        ex.submit(square, 1)
    geode.send(Go("go"), dest="node3")
    ex.shutdown(wait=True)  # returns once the blocker and the handed-out task are done
    assert blocker.done() and all(f.done() for f in queued)
    assert len(ran) <= 1


def test_a_raise_in_the_block_cancels_what_is_queued(geode: Geode) -> None:
    futures: list[concurrent.futures.Future[Any]] = []
    with pytest.raises(KeyError), geode.executor(workers=["node1"]) as ex:
        assert ex is not None
        futures.append(ex.submit(wait_for_go, "node1"))
        futures += [ex.submit(square, x) for x in range(4)]
        geode.send(Go("go"), dest="node1")
        raise KeyError("the job's own error")
    assert all(f.done() for f in futures)
    # At most two were handed to the worker (one running, prefetch 1): the rest cancelled.
    assert sum(not f.cancelled() for f in futures) <= 2
    assert sorted(ran) == [x for x, f in enumerate(futures[1:]) if not f.cancelled()]


def test_large_array_results_come_back_whole(geode: Geode) -> None:
    with geode.executor() as ex:
        assert ex is not None
        n = 2**20  # 8 MiB each
        results = list(ex.map(array, [n, n, 3]))
        assert [r.shape for r in results] == [(n,), (n,), (3,)]
        assert all(np.array_equal(r, np.arange(len(r), dtype=np.float64)) for r in results)
        assert ex.submit(np.sum, np.ones(n)).result(timeout=TIMEOUT) == n  # a large argument


def test_map_times_out_and_cancels_the_rest(geode: Geode) -> None:
    with geode.executor(workers=["node1"]) as ex:
        assert ex is not None
        results = ex.map(nap, [0.5, 0.0, 0.0, 0.0], timeout=0.05)
        with pytest.raises(TimeoutError):
            next(results)


def test_two_executors_one_after_the_other_and_nothing_left_unreceived(
    geode: Geode, caplog: pytest.LogCaptureFixture
) -> None:
    for k in (1, 2):
        with geode.executor(prefetch=2) as ex:
            assert ex is not None and ex.name == f"executor-{k}" and ex.prefetch == 2
            assert sum(ex.map(square, range(10))) == 285
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        geode.close(timeout=TIMEOUT)
    assert "never received" not in caplog.text


def test_the_client_may_be_a_worker_and_the_only_one(geode: Geode) -> None:
    with geode.executor("node2", workers=["node2"]) as ex:
        assert ex is not None and ex.client == "node2"
        assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]


def test_bad_arguments_are_named() -> None:
    with Geode() as geode:
        with pytest.raises(UnknownNodeError, match="unknown client 'node9'"):
            geode.executor("node9")
        with pytest.raises(UnknownNodeError, match="unknown worker 'node7'"):
            geode.executor(workers=["node1", "node7"])
        with pytest.raises(TypeError, match="workers must be a list of nodes, got 'node1'"):
            geode.executor(workers="node1")
        with pytest.raises(ValueError, match=r"workers must be distinct nodes, .* got \[\]"):
            geode.executor(workers=[])
        with pytest.raises(ValueError, match="prefetch must be an int >= 1, got 0"):
            geode.executor(prefetch=0)


def test_an_mpi_below_the_serialized_thread_level_is_refused_clearly(geode: Geode) -> None:
    gate = geode.transport.gate
    gate.main_only = "MPI was started at thread level 'funneled'"
    try:
        with pytest.raises(ThreadError, match="does its client's work in a thread, but MPI was"):
            geode.executor()
    finally:
        gate.main_only = None


def test_an_executor_made_after_a_restart_is_not_the_saved_one(tmp_path: Path) -> None:
    """The checkpoint saved executor-1's queue finished, with no worker asking: restored, it
    would hold every new task forever."""
    with Geode(checkpoint_dir=tmp_path) as geode:
        with geode.executor() as ex:
            assert ex is not None and list(ex.map(square, range(3))) == [0, 1, 4]
        geode.checkpoint()
    with Geode(checkpoint_dir=tmp_path, restart=True) as geode, geode.executor() as ex:
        assert ex is not None and ex.name == "executor-2"
        assert list(ex.map(square, range(3), timeout=TIMEOUT)) == [0, 1, 4]


def test_a_users_queue_named_like_an_executor_is_made_again_at_a_restart(tmp_path: Path) -> None:
    """A user's work queue "executor-2", made before two executors (they took executor-1 and
    executor-3, around it): before, the restart's work_queue("executor-2") raised "work queue
    'executor-2' already exists" (executor names up to the restored count were taken), and
    its saved task was stranded (found by a review)."""
    with Geode(["node0", "node1"], checkpoint_dir=tmp_path) as geode:
        queue = geode.work_queue("executor-2", ["node1"], producers=["node0"])
        for name in ("executor-1", "executor-3"):
            with geode.executor() as ex:
                assert ex is not None and ex.name == name
                assert list(ex.map(square, range(3), timeout=TIMEOUT)) == [0, 1, 4]
        queue.put("task", "node0")
        geode.checkpoint()
    with Geode(["node0", "node1"], checkpoint_dir=tmp_path, restart=True) as geode:
        queue = geode.work_queue("executor-2", ["node1"], producers=["node0"])
        assert queue.get("node1", timeout=TIMEOUT).data == "task"
        queue.finish("node0")
        with geode.executor() as ex:
            assert ex is not None and ex.name == "executor-4"


def test_a_job_restarted_from_a_checkpoint_holding_an_executor_checkpoints_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: every checkpoint after the restart raised CheckpointError ("work queue
    'executor-1' of checkpoint 1 (restarted from) not made again"): the saved executor's
    queue counted as one to make again, though no executor ever takes its name."""
    with Geode(checkpoint_dir=tmp_path) as geode:
        with geode.executor() as ex:
            assert ex is not None and sum(ex.map(square, range(10))) == 285
        assert geode.checkpoint() == 1
    with Geode(checkpoint_dir=tmp_path, restart=True) as geode:
        assert geode.checkpoint() == 2  # no executor made yet: its saved queue is dropped
        with geode.executor() as ex:
            assert ex is not None and sum(ex.map(square, range(10), timeout=TIMEOUT)) == 285
        assert geode.checkpoint() == 3
    with Geode(checkpoint_dir=tmp_path, restart=True) as geode:
        assert geode.restored_epoch == 3 and geode.checkpoint() == 4
    assert "unfinished" not in caplog.text  # (each saved executor was finished)


def test_a_full_drop_oldest_queue_drops_the_users_messages_never_a_task() -> None:
    """Before: node1's full drop_oldest queue dropped the oldest parcel, a task of the
    executor waiting there (prefetch 2): its future never resolved, and the block hung."""
    global _geode
    geode = _geode = Geode(queue=QueueConfig(capacity=2, policy="drop_oldest"))
    try:
        ex = geode.executor(prefetch=2)  # (no with: a dropped task would hang its end)
        futures = [ex.submit(wait_for_go, "node1"), ex.submit(square, 5)]
        assert geode.try_receive("node2") is None  # (a poll: both tasks handed out)
        for k in range(3):  # node1's queue: the tasks, and more of the user's than room
            geode.send(Message(k), "node2", "node1")
        geode.send(Go("go"), "node2", "node1")
        _, pending = concurrent.futures.wait(futures, timeout=10)
        assert not pending, "a task of the executor was dropped"
        assert [future.result() for future in futures] == ["go", 25]
        ex.shutdown()
        assert geode.stats("node1").dropped == 2  # the user's 0 and 1
        assert geode.receive("node1", timeout=0).data == 2
    finally:
        _geode = None
        with contextlib.suppress(GeodeTimeoutError):  # (a task dropped: its future pends)
            geode.close(timeout=1)


def test_a_receive_of_your_own_on_the_client_node_never_takes_a_result(geode: Geode) -> None:
    """Outcomes travel on the executor's queue, not in the client node's receive queue: the
    second task receives on the client node right after the first one's result came back."""
    with geode.executor(prefetch=2) as ex:
        assert ex is not None
        futures = [ex.submit(wait_for_go, "node1"), ex.submit(receive_here, "node0")]
        assert geode.try_receive("node2") is None  # (a poll: both tasks are handed out)
        geode.send(Go("go"), "node2", "node1")
        assert futures[1].result(timeout=TIMEOUT) is None  # (nothing of the user's queued)
        assert futures[0].result(timeout=TIMEOUT) == "go"
        geode.send(Message("mine"), dest="node0")  # and the executor never takes the user's
        assert ex.submit(square, 2).result(timeout=TIMEOUT) == 4
    assert geode.receive(timeout=0).data == "mine"


def test_a_receive_of_your_own_on_a_worker_node_never_takes_a_task(geode: Geode) -> None:
    """The client's node is the only worker: tasks wait in its queue, hidden from receive."""
    with geode.executor(workers=["node0"]) as ex:
        assert ex is not None
        futures = [ex.submit(wait_for_go, "node0"), ex.submit(square, 4)]
        with pytest.raises(ReceiveTimeout):
            geode.receive("node0", timeout=0.3)  # (the second task waits at node0)
        geode.send(Go("go"), "node2", "node0")
        assert futures[0].result(timeout=TIMEOUT) == "go"
        assert futures[1].result(timeout=TIMEOUT) == 16
        geode.send(Message("after"), dest="node0")
        assert geode.receive("node0", timeout=TIMEOUT).data == "after"


def test_two_executors_at_once_on_one_client_keep_their_own_results(geode: Geode) -> None:
    made = geode.executor(), geode.executor()  # (both before the first with: as on MPI)
    with made[0] as first, made[1] as second:
        assert first is not None and second is not None
        ones = [first.submit(square, k) for k in range(20)]
        twos = [second.submit(add, k, 100) for k in range(20)]
        assert [f.result(timeout=TIMEOUT) for f in ones] == [k * k for k in range(20)]
        assert [f.result(timeout=TIMEOUT) for f in twos] == [k + 100 for k in range(20)]


def test_an_executor_made_inside_another_ones_block_is_refused_as_on_mpi(geode: Geode) -> None:
    """Before: it worked here, and hung under mpiexec (a worker rank serves the first block
    until the client's ends, so it never makes the second with the client's rank)."""
    with geode.executor() as outer:
        with pytest.raises(RuntimeError, match="inside the with block of executor 'executor-1'"):
            geode.executor()
        assert outer is not None and outer.submit(square, 3).result(timeout=TIMEOUT) == 9
    with geode.executor() as after:  # (the refused one made nothing: the next is executor-2)
        assert after is not None and after.name == "executor-2"


@pytest.mark.parametrize("prefetch", [2, 3])
def test_a_worker_node_receives_only_its_own_after_a_block(geode: Geode, prefetch: int) -> None:
    """Before: with prefetch >= 2 the queue's end reached the worker once per open request;
    the executor took the first and the user's receive on node1 took the others."""
    with geode.executor(prefetch=prefetch) as ex:
        assert ex is not None and sum(ex.map(square, range(10))) == 285
    geode.send("mine", "node0", "node1")
    first = geode.receive("node1", timeout=TIMEOUT)
    assert (type(first), first.data, first.source) == (Message, "mine", "node0")
    assert geode.pending("node1") == 0


def test_a_restart_after_a_block_with_prefetch_leaves_nothing_stale(tmp_path: Path) -> None:
    """Before: the checkpoint saved the worker's leftover ends of executor-1's queue; after
    the restart, node1's try_receive raised DecodeError (no work queue had that stream), and
    the new executor (on the same stream number) took one as its first task: map hung."""
    with Geode(checkpoint_dir=tmp_path) as geode:
        with geode.executor(prefetch=2) as ex:
            assert ex is not None and list(ex.map(square, range(4))) == [0, 1, 4, 9]
        geode.checkpoint()
    with Geode(checkpoint_dir=tmp_path, restart=True) as geode:
        assert geode.try_receive("node1") is None
        with geode.executor(prefetch=2) as ex:
            assert ex is not None
            assert list(ex.map(square, range(4), timeout=10)) == [0, 1, 4, 9]


released = threading.Event()  # lets `held` return
started = threading.Event()  # set by `held`


def held(x: int) -> int:
    """x, once the test sets `released` (no sleep: the test decides when)."""
    started.set()
    released.wait(TIMEOUT)
    return x


def unacked_after_settling(geode: Geode) -> dict[str, int]:
    """Each node's unacknowledged messages, once none is left or after 5 s of progress."""
    deadline = time.monotonic() + 5.0
    while True:
        unacked = {node: geode.stats(node).unacked for node in geode.nodes}
        if not any(unacked.values()) or time.monotonic() > deadline:
            return unacked
        geode.pending(geode.nodes[0])  # (progress: acks arrive)


def test_tasks_a_restart_drops_at_the_workers_are_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the prefetched tasks a checkpoint caught at the workers were dropped at the
    restart but never acknowledged: node0 kept them unacked for good (resending them with
    ``resend_after``, saving them again in every checkpoint)."""
    released.clear()
    started.clear()
    with Geode(checkpoint_dir=tmp_path) as geode, geode.executor(prefetch=3) as ex:
        assert ex is not None
        futures = [ex.submit(held, x) for x in range(3 * len(geode.nodes))]
        assert started.wait(TIMEOUT)
        assert geode.checkpoint(timeout=TIMEOUT) == 1
        released.set()
        assert [f.result(timeout=TIMEOUT) for f in futures] == list(range(len(futures)))
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        again = Geode(checkpoint_dir=tmp_path, restart=True)
    with again, again.executor(prefetch=3) as ex:
        assert "task(s) of an executor waited on this rank" in caplog.text
        assert ex is not None and list(ex.map(square, range(4), timeout=10)) == [0, 1, 4, 9]
        assert unacked_after_settling(again) == dict.fromkeys(again.nodes, 0)
        stats = [again.stats(node) for node in again.nodes]
        assert [(s.received, s.duplicates) for s in stats] == [(s.processed, 0) for s in stats]


def test_a_receive_waits_for_what_a_pending_task_sends(geode: Geode) -> None:
    """Before: the executor's thread is a daemon, so receive() on node0 raised at once that
    nothing can arrive in one process, while the task that sends was pending."""
    with geode.executor() as ex:
        assert ex is not None
        future = ex.submit(send_progress, 1)
        got = geode.receive("node0", timeout=TIMEOUT)
        assert (type(got), got.data) == (Progress, 1)
        assert future.result(timeout=TIMEOUT) == 1


def test_run_is_not_quiescent_while_a_task_that_sends_is_pending(geode: Geode) -> None:
    """Before: run() ended "quiescent" before the last task sent its message."""
    seen: list[int] = []
    geode.on(Progress, node="node0")(lambda msg: seen.append(msg.data))
    with geode.executor() as ex:
        assert ex is not None
        futures = [ex.submit(send_progress, k) for k in range(3)]
        summary = geode.run(timeout=TIMEOUT)
        assert summary.reason == "quiescent" and sorted(seen) == [0, 1, 2]
        assert [f.result(timeout=TIMEOUT) for f in futures] == [0, 1, 2]


def test_a_task_that_exits_fails_every_future_and_close_still_works(
    geode: Geode, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the futures failed with TaskError, but close() then raised RuntimeError
    ("Future in unexpected state"): the failed futures stayed, and the dispatcher asked them
    to run."""
    with caplog.at_level(logging.ERROR, logger="geode_mpi"), geode.executor() as ex:
        assert ex is not None
        futures = [ex.submit(exit_on_zero, k) for k in range(3)]
        for future in futures:
            with pytest.raises(TaskError, match="its thread on node0 .* failed with SystemExit"):
                future.result(timeout=TIMEOUT)
        with pytest.raises(TaskError, match="SystemExit: bad input"):
            ex.submit(square, 2)
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        geode.close(timeout=TIMEOUT)
    assert "never received" not in caplog.text


def test_futures_cancelled_before_a_task_exits_are_told_to_their_waiters(
    geode: Geode, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: `concurrent.futures.wait` and `as_completed` waited for the cancelled ones
    until their timeout (for ever without), though each said done()."""
    release.clear()
    with caplog.at_level(logging.CRITICAL, logger="geode_mpi"), geode.executor() as ex:
        assert ex is not None
        futures = [ex.submit(exit_when_released, x) for x in range(6)]
        deadline = time.monotonic() + TIMEOUT
        while not futures[0].running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [f.cancel() for f in futures[3:]] == [True, True, True]
        release.set()
        done, not_done = concurrent.futures.wait(futures, timeout=TIMEOUT)
        assert (len(done), len(not_done)) == (6, 0)
        assert len(list(concurrent.futures.as_completed(futures, timeout=TIMEOUT))) == 6
        assert [f.cancelled() for f in futures] == [False] * 3 + [True] * 3
        with pytest.raises(TaskError, match="failed with SystemExit: bye"):
            futures[1].result(timeout=0)


def test_close_names_its_timeout_as_given_when_futures_are_still_pending() -> None:
    """Before: close(timeout=0.3) said "timed out after 0.299999 s" (what was left of it)."""
    geode = Geode()
    ex = geode.executor()
    future = ex.submit(nap, 2.0)
    with pytest.raises(GeodeTimeoutError, match=r"close\(\) timed out after 0\.3 s: executor"):
        geode.close(timeout=0.3)
    assert future.result(timeout=TIMEOUT) == 2.0
    geode.close(timeout=TIMEOUT)


def test_close_shuts_down_an_executor_left_running(geode: Geode) -> None:
    """Before: futures pending at close() stayed pending for ever, and the executor's thread
    died on ClosedError (under MPI, the job hung: its workers never told)."""
    ex = geode.executor()
    futures = [ex.submit(slow, k) for k in range(10)]
    geode.close(timeout=TIMEOUT)
    assert [f.result(timeout=0) for f in futures] == list(range(10))
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 2)


def _executor_pairs(geode: Geode) -> tuple[int, int]:
    """How many pair records (sending, receiving sides) the engine holds for executors'
    work-queue streams."""
    engine = geode._runtime.engine
    first = len(geode.nodes) + EXECUTOR_BASE
    streams = [key for key in engine.pairs_out if key[0] >= first]
    return len(streams), len([key for key in engine.pairs_in if key[0] >= first])


@pytest.mark.parametrize("resend_after", [None, 30.0])
def test_one_executor_after_another_holds_the_pairs_of_the_last_ones_only(
    resend_after: float | None,
) -> None:
    """Before: each finished executor left its (queue stream, worker) pairs' records for
    good, both sides (30 executors: 30 and 30). Both go once idle, at the next executor (the
    last few wait for their acks, sent within ACK_DELAY); with resends on, a receiving side
    stays: it is what tells a late copy from a new task."""
    with Geode(resend_after=resend_after) as geode:
        for _ in range(30):
            with geode.executor() as ex:
                assert ex is not None and list(ex.map(abs, [-1, -2, -3])) == [1, 2, 3]
        sending, receiving = _executor_pairs(geode)
        assert sending < 10
        assert receiving < 10 if resend_after is None else receiving == 30
