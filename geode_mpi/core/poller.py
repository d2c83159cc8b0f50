"""asyncio's poller: one per event loop drives MPI progress and wakes the coroutines that await.

MPI has no file descriptor to wait on, so the poller is a callback of the event loop that looks
once (the transport's non-blocking progress step, the requests this rank serves, the acks it
owes), wakes the awaiting coroutines whose condition now holds, and schedules its next look
with the back-off of the blocking waits (`geode_mpi.base.backoff.Backoff`): right away (and
yielding the core, once past the first spin) for a while after the last event, then later and
later. It runs only while some coroutine awaits, and only wakes them (`geode_mpi.core.aio`:
each takes its message itself).
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from geode_mpi.base.backoff import Backoff, idle_hook, long_wait_hook, look_for_notices, term_hook
from geode_mpi.base.gate import Gate, other_threads
from geode_mpi.delivery.waiting import Engine as WaitingEngine
from geode_mpi.delivery.waiting import ended_elsewhere
from geode_mpi.errors import GeodeError
from geode_mpi.queues import Parcel

if TYPE_CHECKING:  # asyncio itself loads with the first coroutine: a job without one never
    import asyncio  # pays for its imports (inspect, logging, traceback, ...)


class Credits(Protocol):
    """A pair's credits (`geode_mpi.delivery.pairs.PairOut`): None for no limit."""

    credits: int | None


class Engine(WaitingEngine, Protocol):
    """What the poller asks of the delivery engine: what the one wait loop asks, and a pair's
    credits (`geode_mpi.delivery.engine.Engine`)."""

    def closed_to(self, src: int, dst: int, pair: Any) -> bool: ...  # no credit will come

    def flush(self) -> None: ...

    def pair_out(self, src: int, dst: int) -> Credits: ...


class Driven(Protocol):
    """What the poller asks of the runtime it drives (`geode_mpi.core.runtime.Runtime`)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def gate(self) -> Gate: ...

    @property
    def closed(self) -> bool: ...

    def serialised(self, call: Callable[..., Any], *args: Any) -> Any: ...


class Waiter:
    """One awaiting coroutine: its future and what it waits for."""

    __slots__ = ("future", "idle", "queue", "ready")

    def __init__(
        self,
        future: asyncio.Future[bool],
        ready: Callable[[], bool],
        queue: deque[Parcel] | None,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        self.future = future
        self.ready = ready
        # An unfiltered receive's queue: a look wakes at most as many of them as it holds.
        self.queue = queue
        # Asked at the looks past the first spin only (nothing has happened for a while):
        # True wakes it too (an areceive once nothing can come, `aio.take`).
        self.idle = idle


class Poller:
    """The poller of one runtime on one event loop: every coroutine that awaits shares it.

    Args:
        runtime: the Geode's runtime (held weakly: a poller never keeps a Geode alive).
        loop: the event loop it runs on.
    """

    def __init__(self, runtime: Driven, loop: asyncio.AbstractEventLoop) -> None:
        self._runtime = weakref.ref(runtime)
        self.loop = loop
        self.waiters: list[Waiter] = []
        backoff = Backoff()  # the blocking waits' pauses, in loop callbacks instead
        self.spin = backoff.spin
        self.yield_time = backoff.yield_time
        self.min_sleep = max(backoff.min_sleep, MIN_SLEEP)
        self.max_sleep = max(backoff.max_sleep, MIN_SLEEP)
        self._sleep = self.min_sleep
        self._since = time.perf_counter()  # the last event
        self._next: asyncio.Handle | None = None  # the next look, if one is scheduled
        self._sleeping = False  # the next look is a timer (not an immediate callback)
        self.looks = 0  # looks so far (the tests count them)
        # Sends or frame receives in flight (the transport's ``busy``): MPI moves their data
        # only inside MPI calls, and with ranks outnumbering cores both ends must poll for
        # every chunk, so the poller keeps looking for `busy_spin` after the last event.
        self.busy = False
        self.busy_spin = backoff.busy_spin
        self.busy_slice = backoff.busy_slice
        self._flush_due = False  # a `flush_soon` callback is scheduled

    def flush_soon(self) -> None:
        """Send what isend holds to batch, and the acks due, at the loop's next turn: a
        coroutine that awaits something other than geode_mpi next (``asyncio.sleep``, another
        library) does not keep them (at most one callback a turn)."""
        if not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        runtime = self._runtime()
        if runtime is None or runtime.closed:
            return
        gate = runtime.gate
        if other_threads() and not gate.owned():
            level = gate.count()
            try:  # (released only if taken: an interrupt may come either side, `Gate.leave`)
                if not gate.acquire(False):  # another thread is inside a call (it flushes too)
                    self._flush_due = True
                    self.loop.call_later(MIN_SLEEP, self._flush)
                    return
                runtime.engine.flush()
            finally:
                gate.leave(level)
        else:
            runtime.engine.flush()

    async def until(
        self,
        ready: Callable[[], bool],
        deadline: float | None,
        queue: deque[Parcel] | None = None,
        kick: bool = True,
        idle: Callable[[], bool] | None = None,
    ) -> bool:
        """Wait until ``ready()`` (True) or the deadline passes (False, `time.monotonic`).

        True also when the runtime closed meanwhile: the caller looks at its state again.
        ``kick``: start looking at once, with the back-off reset (a new wait: its caller has
        probably just sent something and expects an answer soon). ``idle``: True also once
        ``idle()``, asked only by the looks that come once nothing happened for the yield
        time (those that back off: `Waiter.idle`).
        """
        future: asyncio.Future[bool] = self.loop.create_future()
        waiter = Waiter(future, ready, queue, idle)
        self.waiters.append(waiter)
        timer = None
        if deadline is not None:
            timer = self.loop.call_later(max(deadline - time.monotonic(), 0.0), _expire, future)
        if kick:
            self.kick()
        elif self._next is None:
            self._schedule(False)
        try:
            return await future
        except BaseException:
            if woken(future):
                self.kick()  # it was woken, then cancelled: another waiter may take its message
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if not future.done():
                future.cancel()  # (the next look drops it)

    def kick(self) -> None:
        """Look at once, the back-off started over."""
        self._since = time.perf_counter()
        self._sleep = self.min_sleep
        if self._next is not None and not self._sleeping:
            return  # a look comes right away anyway
        if self._next is not None:
            self._next.cancel()
        self._sleeping = False
        self._next = self.loop.call_soon(self._look)

    def _look(self) -> None:
        self._next = None
        waiters = self.waiters
        if not waiters:
            return  # nobody awaits: no more looks until one does
        runtime = self._runtime()
        if runtime is None:
            self._fail(GeodeError("the Geode these coroutines awaited was garbage-collected"))
            return
        gate = runtime.gate
        try:
            if other_threads() and not gate.owned():
                level = gate.count()
                try:  # (released only if taken, `Gate.leave`)
                    if not gate.acquire(False):  # another thread is inside a call: look later
                        self._schedule(False)
                        return
                    moved = self._progress(runtime)
                finally:
                    gate.leave(level)
            else:
                moved = self._progress(runtime)
        except Exception as exc:  # it goes to every awaiting coroutine
            self._fail(exc)
            return
        self._schedule(moved)

    def _progress(self, runtime: Driven) -> bool:
        """One look: progress, what a waiting rank does for the others, then wake the waiters
        whose condition holds; True if anything happened (the back-off starts over)."""
        self.looks += 1
        engine = runtime.engine
        closed = runtime.closed
        moved = False
        idle = False  # nothing happened for the yield time: ask the waiters' `idle` too
        if not closed:
            transport = engine.transport
            transport.flush()  # what isend or publish hold back to batch goes now
            moved = engine.poll()
            self.busy = transport.busy
            idle = not moved and time.perf_counter() - self._since >= self.yield_time_now()
            if not moved and not idle:
                # Soon after an event, spin on MPI as the blocking waits do (a reply is likely
                # within microseconds): a look holds the loop for `spin` at most, or for
                # `busy_slice` while data moves (MPI copies a large message a chunk per call:
                # 16 MiB each way between 4 ranks on 2 cores took 6x as long awaited as
                # blocking with 50 us spins and 1 ms sleeps, about as long with this).
                moved = transport.spin(self.busy_slice if self.busy else self.spin)
            if (engine.forwards or engine.waited or engine.resend_after is not None) and (
                engine.serve_waiting()
            ):
                moved = True
            engine.flush_after(self._since)  # the senders may be waiting for acks or credits
        # (a close() of another thread that ended unfinished ends the waits as closing does)
        ended = closed or ended_elsewhere(engine)
        idle = idle and not moved
        budgets: dict[int, int] = {}  # an unfiltered queue's parcels not yet promised
        still = []
        for waiter in self.waiters:
            future = waiter.future
            if future.done():
                continue  # cancelled, or its deadline passed
            queue = waiter.queue
            if ended:
                future.set_result(True)
            elif queue is not None:
                left = budgets.get(id(queue), len(queue))
                if left:
                    budgets[id(queue)] = left - 1
                    future.set_result(True)
                elif idle and waiter.idle is not None and waiter.idle():
                    future.set_result(True)
                else:
                    still.append(waiter)
            elif waiter.ready() or (idle and waiter.idle is not None and waiter.idle()):
                future.set_result(True)
            else:
                still.append(waiter)
        self.waiters = still
        return moved

    def _schedule(self, moved: bool) -> None:
        """The next look: at once after an event, yielding the core once past the first spin;
        later and later once idle for longer than the yield time (as `Backoff.pause`)."""
        if not self.waiters:
            return
        now = time.perf_counter()
        if moved:
            self._since = now
            self._sleep = self.min_sleep
        idle = now - self._since
        terminating = term_hook.call  # set once a SIGTERM came: it raises when waits last too long
        if terminating is not None and idle >= self.spin:
            try:
                terminating()
            except Exception as exc:  # Terminated: every awaiting coroutine gets it
                self._fail(exc)
                return
        if idle < self.yield_time_now():
            if idle >= self.spin:
                os.sched_yield()  # let a peer rank on this core run (ranks outnumbering cores)
            self._sleeping = False
            self._next = self.loop.call_soon(self._look)
            return
        self._sleeping = True
        self._next = self.loop.call_later(self._sleep, self._look)
        self._sleep = min(self._sleep * 2, self.max_sleep)
        hook = idle_hook.call  # the hang watchdog (--hang-timeout) counts this wait as idle
        if hook is not None:
            hook(idle, None)
        noticing = long_wait_hook.call  # the notice of a long wait
        if noticing is not None:
            noticing(None)
        look_for_notices()  # --stats / --trace of a failing rank

    def yield_time_now(self) -> float:
        """How long after the last event the looks come at once (`Backoff.pause`'s rule)."""
        return self.busy_spin if self.busy else self.yield_time

    def _fail(self, error: BaseException) -> None:
        for waiter in self.waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)
        self.waiters = []


# The first sleep of an idle poller: the event loop's selector counts in milliseconds, so a
# shorter timer sleeps a millisecond anyway.
MIN_SLEEP = 1e-3

_pollers: weakref.WeakKeyDictionary[Any, Poller] = weakref.WeakKeyDictionary()


def poller_of(runtime: Driven) -> Poller:
    """The poller of ``runtime`` on the running event loop (made at its first await)."""
    import asyncio  # (loaded already: a coroutine runs)

    return _poller(runtime, asyncio.get_running_loop())


def _poller(runtime: Driven, loop: asyncio.AbstractEventLoop) -> Poller:
    poller = _pollers.get(runtime)
    if poller is None or poller.loop is not loop:
        poller = _pollers[runtime] = Poller(runtime, loop)
    return poller


def flush_on_yield(runtime: Driven) -> None:
    """isend began holding a batch: if an event loop runs in this thread, flush it at the
    loop's next turn (`Poller.flush_soon`). No loop, no cost but a look (asyncio is not
    imported for it)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return
    loop = asyncio._get_running_loop()  # (None outside a coroutine; get_running_loop raises)
    if loop is not None:
        _poller(runtime, loop).flush_soon()


def woken(future: asyncio.Future[bool]) -> bool:
    """True if a look woke this future (its condition held), not its deadline or an error."""
    return (
        future.done()
        and not future.cancelled()
        and future.exception() is None
        and bool(future.result())
    )


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)
