"""What the parts of `GeodeExecutor` share: the signals of its serving loop, its two messages
and the state its ``__init__`` sets, declared for the mixin it inherits (executor_serving.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geode_mpi.message import Message

if TYPE_CHECKING:
    import threading
    from collections import deque
    from collections.abc import Callable
    from concurrent.futures import Future

    from geode_mpi.base.gate import Gate
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.core.workqueues import WorkQueue
    from geode_mpi.errors import TaskError
    from geode_mpi.queues import Parcel

# A message class travels by its wire name, ``module:qualname`` (`geode_mpi.codec.classes`):
# the two below keep the module that defined them before the split (it re-exports them), so
# that what is sent, and a checkpoint of an executor's queue, still name them as before.
_HOME = "geode_mpi.core.executor"


class _Signal:
    """What the serving loop's look found besides a message."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_FINISH = _Signal("finish")  # the client: shut down and every future done, tell the workers
_DONE = _Signal("done")  # every local worker was told, and the client finished
_PUT = _Signal("put")  # the client: tasks submitted, to put on the queue (`_put_submitted`)
_REST = _Signal("rest")  # the runner: no future pending any more, go idle (`_idle`)


class _Task(Message):
    """A task, on the executor's work queue: (task id, pickled (fn, args, kwargs), its arrays)."""

    __module__ = _HOME


class _Outcome(Message):
    """A task's outcome, to the client: (task id, ok, pickled value or exception (b"" if it
    could not be pickled), its arrays, (exception type, text, traceback) or None, the task's
    function's name): `OutcomeData`."""

    __module__ = _HOME


class _Absent(Message):
    """A worker rank's close() to the client: (worker node index, its rank), a worker node
    of the executor that rank never served (no ``with`` block, no `serve`): its tasks never
    run."""

    __module__ = _HOME


class ExecutorState:
    """The state `GeodeExecutor.__init__` sets (core/executor.py), declared for its serving
    part, and what that part calls of the client's side."""

    if TYPE_CHECKING:  # declared only: at run time the class has no annotations to resolve
        _runtime: Runtime
        _gate: Gate
        _queue: WorkQueue
        _client: int
        _workers: tuple[int, ...]
        is_client: bool
        _mine: list[int]
        _futures: dict[int, Future[Any]]
        _lock: threading.Lock
        _wake: threading.Event
        _wake_runner: threading.Event
        _shutdown: bool
        _finishing: bool
        _broken: BaseException | None
        _is_task: Callable[[Parcel], bool]
        _outcomes: deque[_Outcome | _Absent]
        _submitted: deque[_Task]  # submitted, not yet put on the queue (defined below)
        _split: bool
        _served: bool  # `serve` was called (a ``with`` on a worker rank calls it)
        _in_block: bool  # inside its ``with`` block on this rank

        # defined in core/executor.py
        @property
        def client(self) -> str: ...

        @property
        def name(self) -> str: ...

        def _failure(self) -> TaskError: ...
