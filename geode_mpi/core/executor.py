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
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from functools import partial
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from geode_mpi.base.gate import count_as_sender, own_thread
from geode_mpi.base.logger import log
from geode_mpi.core.executor_serving import Serving
from geode_mpi.core.executor_state import _Absent as _Absent
from geode_mpi.core.executor_state import _Outcome as _Outcome  # (its wire name's module)
from geode_mpi.core.executor_state import _Task as _Task
from geode_mpi.core.tasks import check_arguments, check_function, chunks, label, pack, run_chunk
from geode_mpi.errors import EncodeError, GeodeTimeoutError, TaskError
from geode_mpi.message import Message
from geode_mpi.transport import internal

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.core.workqueues import WorkQueue
    from geode_mpi.queues import Parcel

_P = ParamSpec("_P")
_T = TypeVar("_T")


class GeodeExecutor(Serving, Executor):
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
        self,
        runtime: Runtime,
        queue: WorkQueue,
        client: int,
        workers: Sequence[int],
        peers: list[GeodeExecutor] | None = None,
        forget: Callable[[GeodeExecutor], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._forget = forget  # lets go of it once finished (`staffing.forget`)
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
        self._outcomes: deque[_Outcome | _Absent] = deque()
        # Tasks submitted, not yet on the queue: `submit` appends without the gate (which
        # the client's thread holds while it waits), the client's thread puts them.
        self._submitted: deque[_Task] = deque()
        # This Geode's executors, this one too: a worker rank's with block serves them all.
        peers = [] if peers is None else peers
        peers.append(self)
        self._peers = peers
        self._served = False
        self._in_block = False
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
                own_thread(thread)  # (not a user's: `any_sender_may_run`)
                internal(thread)  # its waits are not the job's: no notice of a long wait
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

    @property
    def in_block(self) -> bool:
        """Inside its ``with`` block on this rank (entered, not yet left)."""
        return self._in_block

    def over(self) -> bool:
        """Nothing of it left to do on this rank: outside its block, and shut down (its
        client's rank) or served (a worker rank's, or told by close())."""
        if self._in_block:
            return False
        return self._shutdown if self.is_client else self._served and not self._mine

    def finished(self) -> bool:
        """`over`, and its threads ended: every future resolved, every worker told."""
        return self.over() and not any(thread.is_alive() for thread in self._threads)

    def release(self) -> None:
        """Finished on this rank (`finished`): let go of its work queue and of itself (a job
        holds only the executors not finished, and a checkpoint saves none of the others)."""
        forget, self._forget = self._forget, None
        if forget is not None:
            self._queue.admit = self._queue.intercept = None
            forget(self)

    @property
    def queue(self) -> WorkQueue:
        """Its work queue."""
        return self._queue

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
            TypeError: ``fn`` is not callable, or an argument is a `Future` (pass its result).
            EncodeError: ``fn`` cannot be pickled by reference, or the arguments at all.
            TaskError: the executor's thread failed (its message says how).
        """
        self._check_client("submit")
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {fn!r}")
        try:
            blob, frames = pack((fn, args, kwargs))
        except Exception as exc:
            check_function(fn)  # says so when the function is what fails
            check_arguments(fn, args, kwargs)  # and when an argument is a Future
            raise EncodeError(f"the arguments of {label(fn)}", type(args), exc) from None
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
            # Without the gate: the client's thread puts it on the queue (`_put_submitted`).
            self._submitted.append(_Task((task_id, blob, frames)))
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
            self._in_block = True
            return self
        self.serve()
        self._in_block = True
        return None

    def __exit__(self, *raised: object) -> None:
        self._in_block = False
        if self.is_client:  # (a raise in the block: cancel what is still queued)
            self.shutdown(wait=True, cancel_futures=raised[0] is not None)
        if self.finished():
            self.release()

    def _check_client(self, call: str) -> None:
        if not self.is_client:
            raise RuntimeError(
                f"{call}() on rank {self._runtime.rank}: executor {self.name!r} takes tasks on "
                f"its client {self.client}'s rank {self._runtime.placement.rank_of(self._client)}"
                " only (in a with block, ex is None on the other ranks: `if ex is not None:`)"
            )

    def _failure(self) -> TaskError:
        if isinstance(self._broken, TaskError):
            return self._broken  # (said as it is: a worker rank never served, `_absent_error`)
        rank = self._runtime.rank
        return TaskError(
            f"executor {self.name!r}: its thread on {self.client} (rank {rank}) failed with "
            f"{type(self._broken).__name__}: {self._broken}",
            self.client,
            rank,
        )

    def _at_exit(self) -> None:
        self.shutdown(wait=True)

    def end_at_close(self, timeout: float | None, given: float | None = None) -> None:
        """`Geode.close` on the client's rank, the gate released: shut down as leaving the
        ``with`` block does (the pending futures complete, then the workers are told), so
        that the workers' ranks reach close() too. ``timeout``: what is left of close()'s
        ``given`` one (which the error names, as the user gave it).

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
            shown = timeout if given is None else given
            raise GeodeTimeoutError(
                f"close() timed out after {shown!r} s: executor {self.name!r} on "
                f"{self.client} still has {pending} future(s) pending (shut it down, or leave "
                "its with block, before close())"
            )

    def leave_unserved(self) -> None:
        """`Geode.close` on a rank that hosts workers of this executor (not its client) not
        told of its end: tell the client, which counts them as told, and whose futures fail
        then (`_absent_error`) instead of waiting for ever. Said here as an error when this
        rank never served them (no ``with`` block, no `serve`, no task of theirs run in
        another executor's block). The notice goes at once, room or not at the client (its
        dispatcher takes it in: `WorkQueue.notify`), so that a client node whose queue the
        user filled learns it at once too."""
        if self.is_client or not self._mine:
            return
        runtime = self._runtime
        nodes = ", ".join(runtime.names[index] for index in self._mine)
        if self._served:  # (in another executor's with block, or a serve() that raised)
            log.info(
                "close() on rank %s: executor %r's worker node(s) here (%s) take no more of its "
                "tasks; telling its client %s",
                runtime.rank,
                self.name,
                nodes,
                self.client,
            )
        else:
            log.error(
                "close() on rank %s: executor %r has worker node(s) here (%s) that never ran "
                "its tasks: this rank never entered its with block (every rank enters it, `with "
                "geode.executor() as ex:`, ex None on the worker ranks; or calls ex.serve()); "
                "its client %s's futures fail with TaskError",
                runtime.rank,
                self.name,
                nodes,
                self.client,
            )
        for index in self._mine:
            self._queue.notify(_Absent((index, runtime.rank)), index)
        self._mine.clear()  # (what waits at them stays private to the executor)
        self._served = True

    def _pending(self) -> bool:
        """True while a future is not yet done (its task may still send)."""
        return any(not future.done() for future in list(self._futures.values()))

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
