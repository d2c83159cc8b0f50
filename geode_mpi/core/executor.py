"""An executor over a work queue: `concurrent.futures`' ``submit`` and ``map`` on worker nodes.

`Geode.executor` creates one, collectively. Its tasks go on a work queue whose dispatcher is
the *client* node; the queue hands each to one *worker* node, by load (`WorkQueue`), and the
worker sends its outcome, the value or the exception with its traceback, back to the client
as a message. On the client's rank a thread drives all of that (it hands out tasks, takes the
outcomes, resolves the futures, and runs the tasks of any worker node hosted there: all of
them in the embedded world); every other rank serves its worker nodes in the ``with`` block's
``__enter__`` until the client's block ends, then gets None (mpi4py.futures'
``MPICommExecutor`` idiom).

The function, arguments and results are pickled (`geode_mpi.core.tasks`), each with its
arrays out of band (`geode_mpi.codec.pickling`), so that a task whose function or result cannot
cross fails its own future instead of the rank that met it.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, InvalidStateError
from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from geode_mpi.base.failure import rank_label
from geode_mpi.base.gate import count_as_sender
from geode_mpi.base.logger import log
from geode_mpi.core.tasks import check_function, chunks, label, pack, run_chunk, run_task, settle
from geode_mpi.core.workqueues import WorkDone, WorkQueue
from geode_mpi.delivery.waiting import IDLE, Marker, Wait
from geode_mpi.errors import EncodeError, GeodeError, GeodeTimeoutError, TaskError
from geode_mpi.message import Message
from geode_mpi.transport import abort_world

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.queues import Parcel

_P = ParamSpec("_P")
_T = TypeVar("_T")
Taken = tuple[int, tuple["Parcel", Any]]  # (local node index, what Engine.take returned)


class _Signal:
    """What the serving loop's look found besides a message."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_FINISH = _Signal("finish")  # the client: shut down and every future done, tell the workers
_DONE = _Signal("done")  # every local worker was told, and the client finished
_REST = _Signal("rest")  # the runner: no future pending any more, go idle (`_idle`)


class _Task(Message):
    """A task, on the executor's work queue: (task id, pickled (fn, args, kwargs), its arrays)."""


class _Outcome(Message):
    """A task's outcome, to the client: (task id, ok, pickled value or exception (b"" if it
    could not be pickled), its arrays, (exception type, text, traceback) or None): `OutcomeData`."""


class GeodeExecutor(Executor):
    """A `concurrent.futures.Executor` whose tasks run on the job's worker nodes.

    Create it with `Geode.executor` (collective: every rank does) and use it in a ``with``
    block. On the client node's rank, ``with`` gives the executor: `submit` and `map` as in
    `concurrent.futures`. On the other ranks, entering the block runs tasks on this rank's
    worker nodes until the client's block ends, then gives None. Leaving the block on the
    client shuts the executor down (``shutdown(wait=True)``; when the block raised, with
    ``cancel_futures=True``) and tells the workers; a worker's ``with`` ends then.

    A future is *running* once its task is handed to a worker (up to ``prefetch`` tasks wait
    at a worker beside the one it runs); until then `Future.cancel` works.
    """

    def __init__(
        self, runtime: Runtime, queue: WorkQueue, client: int, workers: Sequence[int]
    ) -> None:
        self._runtime = runtime
        self._gate = runtime.gate
        self._queue = queue
        self._client = client
        self._workers = tuple(workers)
        self.is_client: bool = client in runtime.inboxes  # this rank hosts the client node
        # This rank's worker nodes not yet told that the queue is finished.
        self._mine = [index for index in self._workers if index in runtime.inboxes]
        self._futures: dict[int, Future[Any]] = {}  # not yet resolved or dropped, by task id
        self._ids = itertools.count()
        self._lock = threading.Lock()  # submit against shutdown
        # Set by submit and shutdown for an idle client thread, and for an idle runner.
        self._wake = threading.Event()
        self._wake_runner = threading.Event()
        self._shutdown = False
        self._finishing = False  # the client told the queue that no task will come
        self._broken: BaseException | None = None  # what ended the client's thread
        number = queue.number
        self._is_task: Callable[[Parcel], bool] = lambda parcel: parcel.source == number
        # Tasks wait in their worker's queue where only this executor takes them, and outcomes
        # come on the queue's route to the client, here: a receive of the user's never sees
        # either, and neither does another executor of the same client.
        for index in self._mine:
            runtime.inboxes[index].private[number] = self._is_task
        self._outcomes: deque[_Outcome] = deque()
        # On the client's rank, when it hosts workers and other ranks do too: a second thread
        # (the runner) runs the tasks of this rank's workers, so that the client's thread
        # goes on handing tasks out to the others meanwhile.
        self._split = self.is_client and 0 < len(self._mine) < len(self._workers)
        self._threads: list[threading.Thread] = []
        if self.is_client:
            queue.admit = self._admit
            queue.intercept = self._intercept
            self._threads.append(
                threading.Thread(
                    target=self._client_thread, name=f"geode_mpi {queue.name}", daemon=True
                )
            )
            if self._split:
                self._threads.append(
                    threading.Thread(
                        target=self._runner_thread,
                        name=f"geode_mpi {queue.name} runner",
                        daemon=True,
                    )
                )
            for thread in self._threads:
                # In one process, a receive or run() that waits while a future is pending may
                # get what its task sends: the thread counts as a sender (`senders_may_run`).
                count_as_sender(thread, self._pending)
                thread.start()
            atexit.register(self._at_exit)  # runs before the Geodes' own exit, which waits

    # -- what it is ------------------------------------------------------------------------

    @property
    def client(self) -> str:
        """The node that submits the tasks and gets their outcomes."""
        return self._runtime.names[self._client]

    @property
    def workers(self) -> tuple[str, ...]:
        """The nodes that run the tasks."""
        return tuple(self._runtime.names[index] for index in self._workers)

    @property
    def prefetch(self) -> int:
        """Tasks that may wait at a worker besides the one it runs."""
        return self._queue.prefetch

    @property
    def name(self) -> str:
        """The name of its work queue."""
        return self._queue.name

    def __repr__(self) -> str:
        return (
            f"<GeodeExecutor {self.name!r} client={self.client} workers={list(self.workers)} "
            f"prefetch={self.prefetch}>"
        )

    # -- the client ------------------------------------------------------------------------

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue ``fn(*args, **kwargs)`` to run on a worker; its future at once.

        Raises:
            RuntimeError: called after `shutdown`, or on a rank that does not host the client.
            TypeError: ``fn`` is not callable.
            EncodeError: ``fn`` cannot be pickled by reference, or the arguments at all.
            TaskError: the executor's thread failed (its message says how).
        """
        self._check_client("submit")
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {fn!r}")
        with self._lock:
            if self._broken is not None:
                raise self._failure()
            if self._shutdown:
                raise RuntimeError(
                    f"submit({label(fn)}) after shutdown(): executor {self.name!r} takes no "
                    "new tasks once shut down (or once its with block ended)"
                )
            task_id = next(self._ids)
            future: Future[_T] = Future()
            self._futures[task_id] = future
        try:
            try:
                blob, frames = pack((fn, args, kwargs))
            except Exception as exc:
                check_function(fn)  # says so when the function is what fails
                raise EncodeError(f"the arguments of {label(fn)}", type(args), exc) from None
            self._queue.put(_Task((task_id, blob, frames)), self._client)
        except BaseException:
            del self._futures[task_id]
            raise
        self._wake.set()
        self._wake_runner.set()
        return future

    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[_T]:
        """``fn`` over the iterables, as the builtin ``map``: the results in order, each as it
        comes (every task is submitted at once). ``chunksize`` > 1 sends that many calls as
        one task (fewer messages for short tasks).

        Raises:
            TimeoutError: a result not there ``timeout`` seconds after the call (from the
                iterator; the tasks not yet handed out are cancelled).
            ValueError: ``chunksize`` < 1.
        """
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be an int >= 1, got {chunksize!r}")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        self._check_client("map")
        check_function(fn)
        pieces = chunks(zip(*iterables, strict=False), chunksize)
        results = super().map(partial(run_chunk, fn), pieces, timeout=timeout)
        return itertools.chain.from_iterable(results)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more tasks; once every future is resolved, tell the workers to stop.

        Args:
            wait: return once every future is resolved and every worker told.
            cancel_futures: cancel every task not yet handed to a worker.
        """
        with self._lock:
            self._shutdown = True
            queued = list(self._futures.values()) if cancel_futures else []
        self._wake.set()
        self._wake_runner.set()
        for future in queued:
            future.cancel()  # (only those not yet running: handed to a worker)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    def __enter__(self) -> GeodeExecutor | None:  # type: ignore[override]  # (None: a worker)
        """The executor on the client's rank; elsewhere `serve`, then None."""
        if self.is_client:
            return self
        self.serve()
        return None

    def __exit__(self, *raised: object) -> None:
        if self.is_client:  # (a raise in the block: cancel what is still queued)
            self.shutdown(wait=True, cancel_futures=raised[0] is not None)

    def _check_client(self, call: str) -> None:
        if not self.is_client:
            raise RuntimeError(
                f"{call}() on rank {self._runtime.rank}: executor {self.name!r} takes tasks on "
                f"its client {self.client}'s rank {self._runtime.placement.rank_of(self._client)}"
                " only (in a with block, ex is None on the other ranks: `if ex is not None:`)"
            )

    def _failure(self) -> TaskError:
        rank = self._runtime.rank
        return TaskError(
            f"executor {self.name!r}: its thread on {self.client} (rank {rank}) failed with "
            f"{type(self._broken).__name__}: {self._broken}",
            self.client,
            rank,
        )

    def _at_exit(self) -> None:
        self.shutdown(wait=True)

    def end_at_close(self, timeout: float | None) -> None:
        """`Geode.close` on the client's rank, the gate released: shut down as leaving the
        ``with`` block does (the pending futures complete, then the workers are told), so
        that the workers' ranks reach close() too.

        Raises:
            GeodeTimeoutError: futures still pending after ``timeout`` seconds.
        """
        self.shutdown(wait=False)
        if not self._threads or threading.current_thread() in self._threads:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        if any(thread.is_alive() for thread in self._threads):
            pending = sum(not future.done() for future in list(self._futures.values()))
            raise GeodeTimeoutError(
                f"close() timed out after {timeout:g} s: executor {self.name!r} on "
                f"{self.client} still has {pending} future(s) pending (shut it down, or leave "
                "its with block, before close())"
            )

    def _pending(self) -> bool:
        """True while a future is not yet done (its task may still send)."""
        return any(not future.done() for future in list(self._futures.values()))

    def _resting(self) -> bool:
        """The client's rank with nothing to do: no future, and not shut down (its thread
        and runner go idle, out of geode_mpi's waits)."""
        return self.is_client and not self._futures and not self._shutdown

    def _admit(self, task: Message) -> bool:
        """The dispatcher is about to hand ``task`` out: False if its future was cancelled
        (or is gone: it failed when the executor's thread broke)."""
        task_id = task.data[0]
        future = self._futures.get(task_id)
        if future is None:
            return False
        if future.set_running_or_notify_cancel():
            return True
        del self._futures[task_id]
        return False

    def _client_thread(self) -> None:
        try:
            self._thread_loop(True)
        finally:
            atexit.unregister(self._at_exit)

    def _runner_thread(self) -> None:
        self._thread_loop(False)

    def _thread_loop(self, client: bool) -> None:
        """The client's thread (``client``) or the runner's."""
        try:
            self._serve_loop(client)
        except BaseException as exc:
            self._fail(exc)
            # Then end the queue all the same, so that no rank waits for it: the tasks still
            # held are dropped, those at a worker here are taken unrun (their futures failed),
            # and every worker is told.
            with contextlib.suppress(GeodeError):  # (closed: nobody waits for it any more)
                self._serve_loop(client)
        finally:
            count_as_sender(threading.current_thread(), None)

    def _fail(self, exc: BaseException) -> None:
        """The thread broke on ``exc`` (a task's SystemExit, say): fail every future, take
        no more tasks."""
        self._broken = exc
        log.error("executor %r: its thread failed", self.name, exc_info=exc)
        failure = self._failure()
        with self._lock:  # (a submit from now on raises the failure)
            self._shutdown = True
            futures, self._futures = list(self._futures.values()), {}
        for future in futures:
            try:
                future.set_exception(failure)
            except InvalidStateError:  # cancelled: tell its waiters (`wait`, `as_completed`)
                with contextlib.suppress(RuntimeError):  # (told already)
                    future.set_running_or_notify_cancel()
        self._wake.set()  # (the other thread, idle, goes on to end the queue)
        self._wake_runner.set()

    # -- the workers (and the client's thread) ---------------------------------------------

    def serve(self) -> None:
        """Run tasks on this rank's worker nodes until the client's executor has shut down
        (what entering the ``with`` block does on the ranks that do not host the client; on
        the client's rank, its thread does this: return at once).

        A task's `SystemExit` (``sys.exit()``, ``quit()``) ends the job, every rank: the
        client would wait for its outcome for ever.
        """
        if not self.is_client:
            try:
                self._serve_loop(False)
            except SystemExit as exc:
                self._end_job(exc)

    def _end_job(self, exc: SystemExit) -> None:
        """A task on this worker rank raised ``exc``: abort the job with its status, 1 for
        ``sys.exit(0)`` (the job did not end well: its client still waited)."""
        runtime = self._runtime
        code = exc.code
        status = (code & 0xFF or 1) if isinstance(code, int) else 1  # (as the OS, never 0)
        sys.stdout.flush()
        sys.stderr.write(
            f"{rank_label(runtime.rank, runtime.size)} geode_mpi: a task of executor "
            f"{self.name!r} called sys.exit({code!r}) on a worker; ending the job with status "
            f"{status} (its client waited for the outcome)\n"
        )
        abort_world(status)

    def _serve_loop(self, client: bool) -> None:
        """The client's thread (``client``: it takes the outcomes, and runs the tasks of this
        rank's workers unless a runner does), a runner, or a worker rank's ``with``."""
        runtime = self._runtime
        gate = self._gate
        look = self._look if client else self._look_worker
        wake = self._wake if client else self._wake_runner
        while True:
            if self._resting():
                self._idle(wake)
                continue
            level = gate.count()
            try:
                gate.enter()
                found = cast(
                    "Taken | _Outcome | _Signal | None",
                    Wait(runtime.engine, None).until(look),
                )
                if found is _FINISH:
                    self._finish()
                    continue
                if found is _REST:
                    continue  # (to `_idle`, out of geode_mpi's waits)
                if found is _DONE or found is None:
                    if client:
                        self._queue.serve()  # until every worker was told
                    return
                if isinstance(found, _Outcome):
                    message: Message = found
                else:
                    assert not isinstance(found, _Signal)
                    index, taken = found
                    message = self._deliver(index, taken)
            finally:
                gate.leave(level)
            if isinstance(message, _Outcome):
                self._resolve(message)
                continue
            if not isinstance(message, WorkDone) and self._broken is None:
                # To the client as the queue's traffic (`_intercept`), never into its queue.
                self._queue.put(self._run(message, index), index)
            if taken[1] is not None:  # the node's queue wants explicit acks
                message.ack()

    def _deliver(self, index: int, taken: tuple[Parcel, Any]) -> Message:
        """Decode a task taken at worker node ``index`` (asking for the next); the last,
        `WorkDone`, ends the node's part."""
        message = self._runtime.deliver(index, taken)
        if isinstance(message, WorkDone):
            self._mine.remove(index)
            del self._runtime.inboxes[index].private[self._queue.number]
        return message

    def _idle(self, wake: threading.Event) -> None:
        """The client's thread (or its runner) with no task in flight: sleep until `submit` or
        `shutdown` sets ``wake``, out of geode_mpi's waits, so that a client computing
        meanwhile is busy, not waiting, to ``--hang-timeout`` (the workers' requests wait for
        the next task, as they would)."""
        wake.clear()
        if self._resting():  # (a submit or the shutdown may have come since)
            wake.wait()

    def _intercept(self, message: Message) -> bool:
        """The queue's dispatcher (the client) got ``message``: an outcome is this executor's."""
        if not isinstance(message, _Outcome):
            return False
        self._outcomes.append(message)
        return True

    def _take_task(self) -> Taken | None:
        """A task (or the end) taken at one of this rank's workers, or None."""
        take = self._runtime.engine.take
        for index in self._mine:
            found = take(index, self._is_task, None, False)
            if found is not None:
                return index, found
        return None

    def _look_worker(self) -> Taken | _Signal | Marker:
        """A worker rank's look, or a runner's: a task, or the end of every local worker."""
        found = self._take_task()
        if found is not None:
            return found
        if self._resting():
            return _REST  # the runner, its last task's outcome in: a computing client is busy
        return IDLE if self._mine else _DONE

    def _look(self) -> Taken | _Outcome | _Signal | Marker:
        """The client's thread's look."""
        if not self._split:
            found = self._take_task()
            if found is not None:
                return found
        if self._outcomes:
            return self._outcomes.popleft()
        if not self._finishing:
            if self._shutdown and all(future.done() for future in self._futures.values()):
                return _FINISH
        elif not self._mine:
            return _DONE
        return IDLE

    def _finish(self) -> None:
        """Shut down, every future resolved: notify the cancelled ones still held by the
        dispatcher, and tell the workers (through the queue) that no task will come."""
        for task_id in list(self._futures):
            self._futures.pop(task_id).set_running_or_notify_cancel()
        self._finishing = True
        self._queue.finish(self._client)

    def _run(self, message: Message, index: int) -> _Outcome:
        """Run a task on worker node ``index``: its outcome, whatever happens."""
        task_id, blob, frames = message.data
        return _Outcome(
            run_task(task_id, blob, frames, self._runtime.names[index], self._runtime.rank)
        )

    def _resolve(self, message: Message) -> None:
        """An outcome came back: resolve its future."""
        future = self._futures.pop(message.data[0], None)
        if future is None:
            return
        node = str(message.source)
        rank = self._runtime.placement.rank_of(self._runtime.index_of[node])
        settle(future, message.data, node, rank, self.client)
