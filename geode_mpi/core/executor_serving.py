"""The executor's serving side: the loop of the client's thread, of its runner and of a worker
rank's ``with``, which takes tasks at this rank's worker nodes, runs them and sends their
outcomes back, and on the client's rank takes the outcomes and resolves their futures."""

from __future__ import annotations

import contextlib
import sys
import threading
from concurrent.futures import InvalidStateError
from typing import TYPE_CHECKING, Any, cast

from geode_mpi.base.failure import rank_label
from geode_mpi.base.gate import count_as_sender
from geode_mpi.base.logger import log
from geode_mpi.core.executor_state import (
    _DONE,
    _FINISH,
    _PUT,
    _REST,
    ExecutorState,
    _Absent,
    _Outcome,
    _Signal,
)
from geode_mpi.core.tasks import run_task, settle
from geode_mpi.core.workqueues import WorkDone
from geode_mpi.delivery.waiting import IDLE, Marker, Wait
from geode_mpi.errors import GeodeError, TaskError
from geode_mpi.message import Message
from geode_mpi.transport import abort_world

if TYPE_CHECKING:
    from collections.abc import Sequence

    from geode_mpi.queues import Parcel


# (the executor whose task it is, its local worker node's index, what Engine.take returned)
Taken = tuple["Serving", int, tuple["Parcel", Any]]


class Serving(ExecutorState):
    """The serving loop of `GeodeExecutor` and what it calls: a mixin of core/executor.py."""

    if TYPE_CHECKING:
        _peers: Sequence[Serving]  # this Geode's executors (`Channels.executors_made`)

    def _resting(self) -> bool:
        """The client's rank with nothing to do: no future, and not shut down (its thread
        and runner go idle, out of geode_mpi's waits)."""
        return self.is_client and not self._futures and not self._shutdown

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
        log.error("executor %r: its thread failed", self.name, exc_info=exc)
        self._break(exc)

    def _break(self, exc: BaseException) -> None:
        """Fail every future with `_failure` (``exc`` itself if a `TaskError`), take no
        more tasks."""
        self._broken = exc
        failure = self._failure()
        with self._lock:  # (a submit from now on raises the failure)
            self._shutdown = True
            futures, self._futures = list(self._futures.values()), {}
            self._submitted.clear()  # (their futures fail below: none goes on the queue)
        for future in futures:
            try:
                future.set_exception(failure)
            except InvalidStateError:  # cancelled: tell its waiters (`wait`, `as_completed`)
                with contextlib.suppress(RuntimeError):  # (told already)
                    future.set_running_or_notify_cancel()
        self._wake.set()  # (the other thread, idle, goes on to end the queue)
        self._wake_runner.set()

    def serve(self) -> None:
        """Run tasks on this rank's worker nodes until the client's executor has shut down
        (what entering the ``with`` block does on the ranks that do not host the client; on
        the client's rank, its thread does this: return at once).

        A task's `SystemExit` (``sys.exit()``, ``quit()``) ends the job, every rank: the
        client would wait for its outcome for ever.
        """
        self._served = True
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
                    "Taken | _Outcome | _Absent | _Signal | None",
                    Wait(runtime.engine, None).until(look),
                )
                if found is _PUT:
                    self._put_submitted()
                    continue
                if found is _FINISH:
                    self._finish()
                    continue
                if found is _REST:
                    continue  # (to `_idle`, out of geode_mpi's waits)
                if found is _DONE or found is None:
                    if client:
                        self._queue.serve()  # until every worker was told
                    return
                if isinstance(found, (_Outcome, _Absent)):
                    message: Message = found
                else:
                    assert not isinstance(found, _Signal)
                    owner, index, taken = found  # (a worker rank's: any executor's task)
                    message = owner.open_task(index, taken)
            finally:
                gate.leave(level)
            if isinstance(message, _Outcome):
                self._resolve(message)
                continue
            if isinstance(message, _Absent):
                self._break(self._absent_error(message))
                continue
            owner.answer_task(message, index)
            if taken[1] is not None:  # the node's queue wants explicit acks
                message.ack()

    def answer_task(self, message: Message, index: int) -> None:
        """Run a task opened at worker node ``index`` and send its outcome (nothing for the
        end, `WorkDone`, or once the executor broke)."""
        if not isinstance(message, WorkDone) and self._broken is None:
            # To the client as the queue's traffic (`_intercept`), never into its queue.
            self._queue.put(self._run(message, index), index)

    def open_task(self, index: int, taken: Any) -> Message:
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
        """The queue's dispatcher (the client) got ``message``: an outcome is this executor's,
        and so is a worker rank's word that it never served (`_Absent`): the dispatcher
        counts that worker as told of the end, and hands it nothing more."""
        if isinstance(message, _Absent):
            worker = message.data[0]
            state = self._queue.dispatch
            state.told.add(worker)
            kept = [index for index in state.wanting if index != worker]
            state.wanting.clear()
            state.wanting.extend(kept)
        elif not isinstance(message, _Outcome):
            return False
        self._outcomes.append(message)
        return True

    def _absent_error(self, message: Message) -> TaskError:
        """The failure of every future once a worker rank said it never served (`_Absent`)."""
        worker, rank = message.data
        node = self._runtime.names[worker]
        return TaskError(
            f"executor {self.name!r}: its worker {node} (rank {rank}) never ran its tasks: "
            f"rank {rank} reached close() without entering the executor's with block (every "
            "rank enters it, `with geode.executor() as ex:`, ex None on the worker ranks; or "
            "calls ex.serve() there)",
            node,
            rank,
        )

    def take_task(self) -> tuple[Any, int, Any] | None:
        """A task (or the end) taken at one of this rank's workers, or None."""
        take = self._runtime.engine.take
        for index in self._mine:
            found = take(index, self._is_task, None, False)
            if found is not None:
                self._served = True  # (by a peer's with block too: `leave_unserved`)
                return self, index, found
        return None

    def _look_worker(self) -> Taken | _Signal | Marker:
        """A worker rank's look, or a runner's: a task, or the end of every local worker.
        A worker rank serves the other executors it has workers of too (made before this
        one's ``with``, whose client may use them meanwhile); it stops with this one's end."""
        found = self.take_task()
        if found is not None:
            return found
        if not self.is_client:
            for other in self._peers:
                if other is not self and not other.is_client:
                    found = other.take_task()
                    if found is not None:
                        return found
        if self._resting():
            return _REST  # the runner, its last task's outcome in: a computing client is busy
        return IDLE if self._mine else _DONE

    def _look(self) -> Taken | _Outcome | _Absent | _Signal | Marker:
        """The client's thread's look: outcomes first (a finished task's future resolves
        before this thread runs another of its rank's tasks, which may take long)."""
        if self._outcomes:
            return self._outcomes.popleft()
        if self._submitted:
            return _PUT
        if not self._split:
            found = self.take_task()
            if found is not None:
                return found
        if not self._finishing:
            if self._shutdown and all(future.done() for future in self._futures.values()):
                return _FINISH
        elif not self._mine:
            return _DONE
        return IDLE

    def _put_submitted(self) -> None:
        """Put the tasks `submit` queued on the work queue, in their order (the gate held,
        outside the wait's look: a put may wait for room). A put that fails fails its future
        (as it raised from `submit` before: a Geode closed meanwhile, say)."""
        submitted = self._submitted
        while submitted:
            task = submitted.popleft()
            try:
                self._queue.put(task, self._client)
            except Exception as exc:
                future = self._futures.get(task.data[0])
                if future is not None and not future.cancelled():
                    del self._futures[task.data[0]]
                    future.set_exception(exc)

    def _finish(self) -> None:
        """Shut down, every future resolved: notify the cancelled ones still held by the
        dispatcher, and tell the workers (through the queue) that no task will come."""
        for task_id in list(self._futures):
            self._futures.pop(task_id).set_running_or_notify_cancel()
        if self._broken is not None:  # (their futures failed: and no worker may be left)
            self._queue.dispatch.tasks.clear()
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
