"""The one wait loop: every blocking call of a Geode waits here.

A blocking call (a receive, a request, a run loop, a send waiting for room, its data or its
ack, a work queue's serve, close) says what it waits for as a *step*, a function that looks
once and returns either its result, `IDLE` (nothing yet) or `WORKED` (nothing yet, but it did
some work, such as running a handler). Between two looks the loop keeps the rank useful and
cheap: it forwards what a sequencer holds, serves the requests whose senders wait (this
rank's handlers answer them wherever it waits), resends what a lossy transport lost, flushes
acks once the wait lasts, then spins on the transport and backs off with growing sleeps
(`geode_mpi.base.backoff.Backoff`), handing the gate to other threads at its pauses.
A SIGTERM's grace running out raises `Terminated` from a pause (termination.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Final, Protocol, TypeVar

from geode_mpi.base.deadlines import bounded
from geode_mpi.base.interrupts import interruptible
from geode_mpi.errors import ClosedError
from geode_mpi.transport import Backoff, Transport, together_backoff

_T = TypeVar("_T")


class Engine(Protocol):
    """What the loop asks of the delivery engine (`geode_mpi.delivery.engine.Engine`)."""

    @property
    def transport(self) -> Transport: ...

    def poll(self) -> bool: ...

    @property
    def forwards(self) -> Collection[object]: ...

    @property
    def waited(self) -> Collection[int]: ...

    @property
    def held_for_room(self) -> bool: ...

    @property
    def resend_after(self) -> float | None: ...

    @property
    def closer(self) -> threading.Thread | None: ...

    @property
    def close_unfinished(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def serve_waiting(self, leave: Collection[int] = ()) -> bool: ...

    def flush_after(self, started: float) -> None: ...


class Marker:
    """What a step returns while the wait goes on (`IDLE`, `WORKED`)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


IDLE: Final = Marker("IDLE")  # a step found nothing yet
WORKED: Final = Marker("WORKED")  # a step found nothing yet but did some work: look again


class Wait:
    """One wait of a blocking call: `until` loops over a step until it has a result or the
    deadline passes.

    Args:
        engine: the rank's delivery engine (its transport, gate and pending work).
        deadline: a `time.monotonic` instant, or None for no limit.
        started: when the wait began (`time.perf_counter`; default now): acks owed are
            flushed once it has lasted `FLUSH_AFTER`.
        poll: run the progress engine before every look (for steps that do not).
        leave: local nodes whose waited-for requests the step itself handles (a run loop's).
        serving: the caller works between looks (a run loop): its wait for flushing acks
            counts from its last work, not from ``started``, and `paused` adds up the time
            it spent with nothing to do.
        looked: the caller looked just before it waits: the loop starts by waiting.
        together: every rank waits at once, for a collective step (close's first barrier):
            pause as `together_backoff` says with this yield time, not with `Backoff`'s
            defaults (None).
        call: the public call that waits (``"request"``, say): once close() begins in
            another thread, the wait ends with `ClosedError` naming it, before it touches
            the transport again (None: the step sees to it, as a receive's does).
        what: what the wait is for, in words, for the notice of a long wait and the
            --hang-timeout report (`Backoff.what`; None: the call's name says it).
    """

    __slots__ = (
        "call",
        "deadline",
        "engine",
        "leave",
        "looked",
        "paused",
        "poll",
        "serving",
        "started",
        "together",
        "what",
    )

    def __init__(
        self,
        engine: Engine,
        deadline: float | None,
        started: float | None = None,
        poll: bool = False,
        leave: Collection[int] = (),
        serving: bool = False,
        looked: bool = False,
        together: float | None = None,
        call: str | None = None,
        what: Callable[[], str] | None = None,
    ) -> None:
        self.engine = engine
        self.what = what
        self.call = call
        self.deadline = deadline
        self.started = time.perf_counter() if started is None else started
        self.poll = poll
        self.leave = leave
        self.serving = serving
        self.looked = looked
        self.paused = 0.0  # with ``serving``: seconds spent in spins and pauses
        self.together = together

    @bounded  # (the handler runs it starts begin before its deadline: `past_deadline`)
    @interruptible  # (between its looks: a step's result is returned before any)
    def until(
        self, step: Callable[[], _T | Marker], alone: Callable[[], bool] | None = None
    ) -> _T | None:
        """Look with ``step`` until it returns a result (returned), or the deadline (None).

        ``alone``: True when nothing can arrive any more (one process, and no other thread
        that could send): then the wait ends after one last look.
        """
        engine = self.engine
        transport = engine.transport
        gate = transport.gate
        # lets other threads in while this one waits
        together = self.together
        backoff = Backoff(gate=gate) if together is None else together_backoff(gate, together)
        if self.what is not None:
            backoff.what = self.what
        turns = gate.turns
        idle_since = self.started
        deadline = self.deadline
        serving = self.serving
        moved = False  # an event since the last look: the back-off starts over
        outcome: _T | Marker = IDLE
        look = not self.looked  # the caller may have looked just before it waits
        call = self.call
        while True:
            if call is not None and engine.closer is not None:
                self.check_closing(call)
            if look:
                if self.poll:
                    engine.poll()
                outcome = step()
                if outcome is WORKED:
                    moved = True
                    if serving:
                        idle_since = time.perf_counter()
                elif outcome is not IDLE:
                    return outcome  # type: ignore[return-value]
            look = True
            if moved:
                backoff.reset()
                moved = False
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if outcome is WORKED:
                continue
            if alone is not None and alone():
                outcome = step()
                return None if isinstance(outcome, Marker) else outcome
            if (
                engine.forwards
                or engine.waited
                or engine.held_for_room
                or engine.resend_after is not None
            ) and (engine.serve_waiting(self.leave)):
                continue  # a sequencer's forwards may have landed in the very queue looked at
            engine.flush_after(idle_since)  # the senders may be waiting for acks or credits
            paused = time.perf_counter() if serving else 0.0
            if gate.turns != turns or transport.spin(backoff.slice(transport.busy)):
                turns = gate.turns  # an event, or other threads ran: one may have done it
                moved = True
            else:
                backoff.pause(transport.busy)
            if serving:
                self.paused += time.perf_counter() - paused

    def check_closing(self, call: str) -> None:
        """Raise `ClosedError` for ``call`` if close() began in another thread (or ended):
        its transport may be gone at the next look, and nothing more will come."""
        check_closing(self.engine, call)


def check_closing(engine: Engine, call: str) -> None:
    """`Wait.check_closing` for a wait that has not begun (a send's ack, once its data went)."""
    closer = closing(engine)
    if closer is not None:
        raise ClosedError(call, closer.name, engine.close_unfinished)


def closing(engine: Engine) -> threading.Thread | None:
    """The thread whose close() ends a wait now: close() began in another thread, or ended
    (None otherwise; the asyncio awaits ask it too, `geode_mpi.core.aio`)."""
    closer = engine.closer
    if closer is not None and (engine.closed or closer is not threading.current_thread()):
        return closer
    return None


def sent_by_close(
    engine: Engine, done: Callable[[], bool], deadline: float | None, call: str
) -> bool:
    """A send's wait for its data (``done()``) once close() began in another thread: that
    close() completes every send in flight (its message is delivered), so wait for it,
    without touching the transport, which close() frees: True once ``done()``, False at the
    deadline.

    Raises:
        ClosedError: (``in_flight``) that close() ended (unfinished, say) with the send not
            done: its message stays in flight.
    """
    backoff = Backoff(gate=engine.transport.gate)
    while not done():
        check_close_ended(engine, call)
        if deadline is not None and time.monotonic() >= deadline:
            return False
        backoff.pause()
    return True


def check_close_ended(engine: Engine, call: str) -> None:
    """Raise `ClosedError` (``in_flight``) for the send ``call`` once the close() that began
    while it waited ended, unfinished or not (`sent_by_close`)."""
    closer = engine.closer
    if closer is not None and (engine.closed or engine.close_unfinished):
        raise ClosedError(call, closer.name, engine.close_unfinished, in_flight=True)


def ended_elsewhere(engine: Engine) -> bool:
    """Whether a close() of another thread ended unfinished (the Geode stays closing): a
    receive waiting in this thread ends, as it would once closed (the closing thread's own
    calls wait on, as during its close())."""
    return engine.close_unfinished and engine.closer is not threading.current_thread()


def wait_for(
    engine: Engine,
    done: Callable[[], bool],
    deadline: float | None,
    together: float | None = None,
    call: str | None = None,
    what: Callable[[], str] | None = None,
) -> bool:
    """Wait until ``done()`` (True) or the deadline (False); ``together``, ``call``,
    ``what``: see `Wait`."""
    wait = Wait(engine, deadline, together=together, call=call, what=what)
    return wait.until(lambda: True if done() else IDLE) is True
