"""The gate: one lock per runtime, held by every public call, handed over while a call waits."""

from __future__ import annotations

import _thread
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from functools import wraps
from typing import Any, Protocol, TypeVar

from geode_mpi.base.interrupts import interruptible
from geode_mpi.errors import ThreadError

# How many Python threads run besides the main one (those started by `threading` or
# `_thread`): while it is 0, no other thread can be inside a geode_mpi call, and the hot
# paths (send, isend, receive) skip the lock. CPython's own counter; about 20 ns a call.
other_threads: Callable[[], int] = getattr(_thread, "_count", None) or (
    lambda: threading.active_count() - 1
)

_MAIN = threading.main_thread()
R = TypeVar("R")


# geode_mpi's own daemon threads that may still send, each with its test of whether it has
# work that may (an executor's thread while a future is pending: its tasks may send).
_busy_daemons: dict[threading.Thread, Callable[[], bool]] = {}


def count_as_sender(thread: threading.Thread, busy: Callable[[], bool] | None) -> None:
    """Count daemon ``thread`` in `senders_may_run` while ``busy()`` is True (None: no more)."""
    if busy is None:
        _busy_daemons.pop(thread, None)
    else:
        _busy_daemons[thread] = busy


# geode_mpi's own threads (`own_thread`): the start-up and SIGTERM watchers, an executor's, a
# checkpoint's fsync, close()'s seal step. None sends a job's message but an executor's, which
# counts as a sender while it has work (`count_as_sender`).
_own: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def own_thread(thread: threading.Thread) -> threading.Thread:
    """Mark ``thread`` as one of geode_mpi's own (`any_sender_may_run` leaves it out)."""
    _own.add(thread)
    return thread


def daemons_busy() -> bool:
    """True while one of geode_mpi's own daemon threads besides this one has work that may send
    (`count_as_sender`)."""
    me = threading.current_thread()
    return any(
        thread is not me and thread.is_alive() and busy()
        for thread, busy in list(_busy_daemons.items())
    )


def senders_may_run() -> bool:
    """True while another thread that is not a daemon runs, or one of geode_mpi's own daemon
    threads has work (`count_as_sender`): in one process, only such a thread can still send to
    a receive that waits (a notebook's or a test runner's own threads are daemons, and do not
    count)."""
    me = threading.current_thread()
    if daemons_busy():
        return True
    return any(
        thread is not me and not thread.daemon and thread.is_alive()
        for thread in threading.enumerate()
    )


def any_sender_may_run() -> bool:
    """True while any other thread runs that is not one of geode_mpi's own (`own_thread`),
    daemon or not, or one of geode_mpi's own has work that may send (`count_as_sender`): what
    a wait asks before it concludes that nothing can reach it any more from other ranks (a
    user's daemon thread may send as well as any; a wait that only gives up sooner in one
    process keeps to `senders_may_run`)."""
    me = threading.current_thread()
    if daemons_busy():
        return True
    return any(
        thread is not me and thread.is_alive() and thread not in _own
        for thread in threading.enumerate()
    )


def _levels(lock: Any) -> Callable[[], int]:
    """How many levels the calling thread holds of Python's own RLock (`threading._PyRLock`)."""

    def count() -> int:
        return int(lock._count) if lock._owner == _thread.get_ident() else 0

    return count


HANDOFF = 2e-3  # seconds a waiting holder lets a blocked thread take the lock, at most


class Gate:
    """The lock of everything above one transport: its Geode (or all the Geodes of one
    `InProcHub`), their engines, queues and the transport itself.

    Every public call holds it (reentrant: handlers called from ``run()`` send). A call that
    waits lets other threads in at its back-off pauses: before sleeping it releases the lock
    and takes it back after; and while another thread is blocked on the lock, every pause
    hands the lock over (`handoff`), so that a thread waiting in ``receive()`` never starves a
    thread that wants to send.
    """

    __slots__ = (
        "_release_save",
        "_restore",
        "acquire",
        "count",
        "entries",
        "lock",
        "main_only",
        "owned",
        "release",
        "turns",
        "waiters",
    )

    def __init__(self) -> None:
        lock = threading.RLock()
        count: Callable[[], int] | None = getattr(lock, "_recursion_count", None)
        if count is None:  # Python 3.10: its C RLock cannot tell the levels held; this one can
            lock = threading._PyRLock()  # type: ignore[attr-defined]
            count = _levels(lock)
        self.lock = lock
        self.acquire = self.lock.acquire
        self.release = self.lock.release
        # RLock's own helpers (the ones threading.Condition uses): release every level this
        # thread holds, and take them all back.
        self.owned: Callable[[], bool] = self.lock._is_owned  # type: ignore[attr-defined]
        self._release_save: Callable[[], Any] = self.lock._release_save  # type: ignore[attr-defined]
        self._restore: Callable[[Any], None] = self.lock._acquire_restore  # type: ignore[attr-defined]
        # The levels this thread holds (0: none). A call notes it before `enter` and, in its
        # finally, releases only if it is higher (`leave`): a KeyboardInterrupt may come
        # between any two calls, after the lock was taken or before, and either is then undone
        # right.
        self.count = count
        self.waiters: deque[None] = deque()  # one entry per thread blocked on the lock
        self.entries = 0  # times a blocked thread got the lock (changed only under it)
        # Times a holder let the lock go while it waited: other threads may have changed
        # anything meanwhile (delivered the message it waits for, say), so it looks again.
        self.turns = 0
        # Why only the main thread may enter (an MPI library below the SERIALIZED thread
        # level), or None: any thread may.
        self.main_only: str | None = None

    @interruptible
    def enter(self) -> None:
        """Take the lock, blocking (counted as a waiter) while another thread holds it.

        Raises:
            ThreadError: only the main thread may enter (`main_only`), and this is another.
        """
        if self.main_only is not None and threading.current_thread() is not _MAIN:
            raise ThreadError(
                f"a geode_mpi call from thread {threading.current_thread().name!r}: "
                f"{self.main_only}, so only the main thread may call geode_mpi (start MPI at "
                "level 'serialized' or 'multiple', mpi4py.rc.thread_level, or call geode_mpi "
                "from the main thread only)"
            )
        # (An interrupt once the lock is taken leaves it taken: the caller's `leave` gives it
        # back, as it does not give back one never taken.)
        if self.acquire(False):
            return
        waiters = self.waiters
        waiters.append(None)  # deque.append and pop are atomic: no lock needed for the count
        try:
            self.acquire()
        finally:
            waiters.pop()
        self.entries += 1

    def call(self, call: Callable[..., R], *args: Any) -> R:
        """``call(*args)`` holding the lock (taken and given back as `locked` does)."""
        level = self.count()
        try:
            self.enter()
            return call(*args)
        finally:
            self.leave(level)

    def leave(self, level: int) -> None:
        """Release the level `enter` took after this thread held ``level`` (`count` before
        it), if it took one: an interrupt may have come before."""
        if self.count() > level:
            self.release()

    @interruptible
    def sleep(self, seconds: float) -> None:
        """Sleep, without the lock if this thread holds it."""
        held = self.count()
        if not held:
            time.sleep(seconds)
            return
        try:
            self._release_save()
            time.sleep(seconds)
        finally:
            self._take_back(held)

    def unlocked(self, call: Callable[[Any], R], arg: Any) -> R:
        """``call(arg)`` without the lock (if this thread holds it): a user's handler, which
        may block on other threads; its own geode_mpi calls take the lock again."""
        held = self.count()
        if not held:
            return call(arg)
        try:
            self._release_save()
            return call(arg)
        finally:
            self._take_back(held)

    @interruptible
    def handoff(self) -> None:
        """Let the threads blocked on the lock take it, then take it back (a wait's pause).

        Releasing alone would not do: the releasing thread would usually take the lock again
        before a woken waiter runs. So it sleeps until one got in (or `HANDOFF` passed).
        """
        held = self.count()
        if not held:
            return
        entries = self.entries
        try:
            self._release_save()
            until = time.perf_counter() + HANDOFF
            while self.waiters and self.entries == entries and time.perf_counter() < until:
                time.sleep(0)  # gives up the GIL: the woken waiter runs
        finally:
            self._take_back(held)

    def _take_back(self, held: int) -> None:
        """Take back the ``held`` levels let go (by ``_release_save``, whose state is not kept:
        an interrupt could come between its return and the assignment), unless this thread
        still holds them (the interrupt came before). Blocked here, an interrupt still waits
        for the lock: the callers unwinding from it give their levels back (`leave`)."""
        if self.owned():
            return
        state = (held, _thread.get_ident())
        waiters = self.waiters
        waiters.append(None)  # a holder that waits in its turn hands the lock back to us
        try:
            try:
                self._restore(state)
            except BaseException:
                if not self.owned():
                    self._restore(state)
                raise
        finally:
            waiters.pop()
        self.turns += 1


# The gate of every MPI transport in this process when MPI lets only one thread in at a time
# (thread level below MULTIPLE): one lock for all their MPI calls, whichever Geode makes them.
# At MULTIPLE (the default) each transport keeps its own, and nothing here is used.
PROCESS_GATE = Gate()


class Gated(Protocol):
    """An object whose public calls go through a gate."""

    _gate: Gate


F = TypeVar("F", bound=Callable[..., Any])


def locked(method: F) -> F:
    """Run ``method`` holding ``self._gate`` (for the public calls off the hot path)."""

    @wraps(method)
    def call(self: Gated, *args: Any, **kwargs: Any) -> Any:
        gate = self._gate
        level = gate.count()
        try:
            gate.enter()
            return method(self, *args, **kwargs)
        finally:
            gate.leave(level)

    return call  # type: ignore[return-value]
