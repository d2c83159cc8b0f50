"""An executor's task as data: its call pickled, run on a worker, its outcome read back."""

from __future__ import annotations

import itertools
import pickle
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from geode_mpi.codec import pickling
from geode_mpi.errors import EncodeError, RemoteTraceback, TaskError

# A task's outcome, as its message carries it: (task id, ok, pickled value or exception (b"" if
# it could not be pickled), its arrays, (exception type, text, traceback) or None, the task's
# function as `label` says it ("" if its task could not be unpickled)).
OutcomeData = tuple[int, bool, bytes, list[Any], tuple[str, str, str] | None, str]


def run_chunk(fn: Callable[..., Any], chunk: Sequence[tuple[Any, ...]]) -> list[Any]:
    """``map(chunksize=n)``'s task: ``fn`` over n argument tuples."""
    return [fn(*args) for args in chunk]


def chunks(items: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def pack(value: Any) -> tuple[bytes, list[Any]]:
    frames: list[Any] = []
    return pickling.dumps(value, frames), frames


def label(fn: object) -> str:
    return repr(getattr(fn, "__qualname__", None) or fn)


def check_function(fn: object) -> None:
    """A task's function must be callable and travel by reference (pickle).

    Raises:
        TypeError: ``fn`` is not callable.
        EncodeError: it cannot be pickled (a lambda, a function defined inside another).
    """
    if not callable(fn):
        raise TypeError(f"an executor task needs a callable, got {fn!r}")
    try:
        pickle.dumps(fn, protocol=5)
    except Exception as exc:  # pickle raises several kinds (PicklingError, AttributeError)
        raise EncodeError(
            f"the function {label(fn)} (a task's function travels by reference: define it at "
            "the top level of a module every rank imports, not as a lambda or inside a "
            "function)",
            type(fn),
            exc,
        ) from None


def check_arguments(fn: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Arguments that failed to pickle: say so plainly when one is a `Future` (a Dask habit:
    pass a future on to the next task), which cannot travel.

    Raises:
        TypeError: an argument (or an item of one, a few levels down) is a `Future`.
    """
    found = _future_in(args, "argument ", 0)
    if found is None:
        found = _future_in(kwargs, "keyword argument ", 0)
    if found is not None:
        raise TypeError(
            f"submit({label(fn)}): {found} is a Future, which cannot be sent to a worker (it "
            "lives in this process): pass its value instead, future.result(), once it is "
            "done (concurrent.futures.wait or as_completed)"
        )


def _future_in(value: Any, where: str, depth: int) -> str | None:
    """Where a `Future` sits in ``value`` (a tuple, list or dict, down to 3 levels), or None."""
    if isinstance(value, Future):
        return where.strip()
    if depth >= 3:
        return None
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (tuple, list)):
        items = enumerate(value)
    for key, item in items:
        found = _future_in(item, f"{where}{key}" if depth == 0 else f"{where}[{key!r}]", depth + 1)
        if found is not None:
            return found
    return None


def run_task(task_id: int, blob: bytes, frames: list[Any], node: str, rank: int) -> OutcomeData:
    """Run a task on worker ``node`` of ``rank``: its outcome, whatever it raises but
    `SystemExit` (which ends the job)."""
    try:
        fn, args, kwargs = pickling.loads(blob, frames)
    except Exception as exc:
        return failed(
            task_id,
            TaskError(
                f"a task's function and arguments could not be unpickled on {node} (rank "
                f"{rank}): {type(exc).__name__}: {exc} (a task's function must exist on "
                "every rank: define it at the top level of a module every rank imports)",
                node,
                rank,
            ),
        )
    name = label(fn)
    try:
        value = fn(*args, **kwargs)
    except SystemExit:
        raise  # (the job ends: `Serving.serve`)
    except BaseException as exc:  # its future's, as concurrent.futures and mpi4py.futures do:
        return failed(task_id, exc, skip=1, name=name)  # CancelledError, KeyboardInterrupt too
    try:
        blob, frames = pack(value)
    except Exception as exc:
        return failed(
            task_id,
            TaskError(
                f"the result of {name} on {node} (rank {rank}) cannot be pickled: "
                f"{type(exc).__name__}: {exc}",
                node,
                rank,
            ),
            name=name,
        )
    return task_id, True, blob, frames, None, name


def failed(task_id: int, exc: BaseException, skip: int = 0, name: str = "") -> OutcomeData:
    """The outcome of a task (of function ``name``, `label`) that raised ``exc``: the
    exception if it pickles both ways, and its traceback (less the executor's own ``skip``
    frames) as text."""
    tb = exc.__traceback__
    for _ in range(skip):
        tb = tb.tb_next if tb is not None else None
    trace = "".join(traceback.format_exception(type(exc), exc, tb))
    try:
        blob, frames = pack(exc)
        pickling.loads(blob, frames)  # an exception whose __init__ takes other arguments
    except Exception:
        blob, frames = b"", []
    return task_id, False, blob, frames, (type(exc).__qualname__, str(exc), trace), name


def settle(future: Future[Any], outcome: Sequence[Any], node: str, rank: int, client: str) -> None:
    """Resolve ``future`` with the outcome (`OutcomeData`, as it arrived) that worker ``node``
    of ``rank`` sent ``client``."""
    _, ok, blob, frames, text, name = outcome
    task = f"task {name}" if name else "a task"
    try:
        value = pickling.loads(blob, frames) if blob else None
    except Exception as exc:
        what = "result" if ok else f"exception ({text[0]}: {text[1]})"
        future.set_exception(
            TaskError(
                f"the {what} of {task} from {node} (rank {rank}) cannot be unpickled on "
                f"{client}: {type(exc).__name__}: {exc}",
                node,
                rank,
            )
        )
        return
    if ok:
        future.set_result(value)
        return
    kind, said, trace = text
    if not isinstance(value, BaseException):
        value = TaskError(
            f"{task} raised {kind}: {said} (the exception could not travel: on its worker it "
            "did not pickle, or its copy did not unpickle)",
            node,
            rank,
        )
    value.__cause__ = RemoteTraceback(trace, node, rank)
    future.set_exception(value)
