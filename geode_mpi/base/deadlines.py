"""The deadline of the wait each thread is in: a wait starts no handler run once it has passed
(but its first: a zero timeout still runs one, as a poll that processes what is there)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Concatenate, ParamSpec, Protocol, TypeVar


class _Current(threading.local):
    deadline: float | None = None  # a `time.monotonic` instant; None: no limit (or no wait)
    ran = False  # whether that wait has started a handler run


_current = _Current()


class Bounded(Protocol):
    """A wait with its deadline (`geode_mpi.delivery.waiting.Wait`)."""

    @property
    def deadline(self) -> float | None: ...


W = TypeVar("W", bound=Bounded)
P = ParamSpec("P")
R = TypeVar("R")


def past_deadline() -> bool:
    """Whether the innermost wait of this thread has a deadline, and it has passed: then that
    wait starts no handler run (a request's, a send's ack, a receive's, a run loop's). A
    handler run it began before goes to its end: Python cannot stop it from the outside."""
    deadline = _current.deadline
    return deadline is not None and _current.ran and time.monotonic() >= deadline


def running_one() -> None:
    """The innermost wait of this thread starts a handler run: from now on its deadline
    holds (`past_deadline`); its first run it starts whatever the deadline, so that
    ``run(timeout=0)`` or ``request(timeout=0)`` to a node of this rank still processes one."""
    _current.ran = True


def within(deadline: float | None, call: Callable[[], R]) -> R:
    """``call()``, with ``deadline`` as this thread's wait's (`past_deadline`) until it ends
    (a handler it runs has its own waits, each with its own deadline)."""
    outer = _current.deadline, _current.ran
    _current.deadline, _current.ran = deadline, False
    try:
        return call()
    finally:
        _current.deadline, _current.ran = outer


def bounded(method: Callable[Concatenate[W, P], R]) -> Callable[Concatenate[W, P], R]:
    """Run a wait's method `within` the wait's own deadline."""

    @wraps(method)
    def run(self: W, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return within(self.deadline, lambda: method(self, *args, **kwargs))

    return run
