"""Waiting without burning a core: spin briefly, then yield, then sleep longer and longer."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from geode_mpi.base.interrupts import interruptible
from geode_mpi.base.launch import launch_info

if TYPE_CHECKING:
    from geode_mpi.base.gate import Gate

F = TypeVar("F", bound=Callable[..., None])


class Hook(Generic[F]):
    """A function that the waits call at one place (`call`; None: nothing to call).

    The caller reads `call` once and calls it if set, so a hook costs one attribute read while
    None. `set` installs one; `unset` takes one off only while it is still the one set.
    """

    __slots__ = ("call",)

    def __init__(self) -> None:
        self.call: F | None = None

    def set(self, hook: F | None) -> None:
        """Call ``hook`` from now on (None: nothing)."""
        self.call = hook

    def unset(self, hook: F) -> None:
        """Stop calling ``hook``, unless another was set since."""
        if self.call == hook:
            self.call = None


# From every sleeping pause, with the seconds since the wait last saw an event and what the
# wait is for (`Backoff.what`): the hang watchdog (geode_mpi.transport.watchdog).
idle_hook: Hook[Callable[[float, Callable[[], str] | None], None]] = Hook()
# From every sleeping pause, with what the wait is for: the notice of a long wait
# (geode_mpi.transport.notice).
long_wait_hook: Hook[Callable[[Callable[[], str] | None], None]] = Hook()
# From every sleeping pause (and `look_for_notices`): --stats and --trace listen there for a
# failing rank's request to leave their parts before the job ends.
notice_hook: Hook[Callable[[], None]] = Hook()
# From every poll of the progress engine: the watchdog answers questions from there while its
# rank runs without waiting.
activity_hook: Hook[Callable[[], None]] = Hook()
# From every pause past the first spin, once a SIGTERM arrived: geode_mpi.core's termination
# raises Terminated from it when a wait goes on too long. (The hot path never pauses.)
term_hook: Hook[Callable[[], None]] = Hook()


def look_for_notices() -> None:
    """Call the notice hook now (from a wait loop that does not pause through Backoff)."""
    notice = notice_hook.call
    if notice is not None:
        notice()


# How long an idle wait yield-polls after its last event before it sleeps. With ranks
# outnumbering cores (or when nothing says how many share the host), briefly: a rank that
# yields still takes turns from ranks with work (64 ranks on 2 cores). With a core per rank,
# long, as MPI's own blocking calls poll: over a network a message moves only while both
# ends are inside MPI calls, so a receiver asleep when its peer starts a large send stalls
# it (MPICH over ofi/tcp, 16 MiB one way: 10.7 ms sleeping, 5.1 yielding; raw Send 3.6).
IDLE_YIELD = 2e-3
OWN_CORE_YIELD = 50e-3
_idle_yield: float | None = None  # which of the two, once known (`idle_yield`)


def idle_yield() -> float:
    """The yield time of an idle wait on this host: `OWN_CORE_YIELD` when the launcher says
    every rank here has a core of its own, else `IDLE_YIELD`."""
    global _idle_yield
    if _idle_yield is None:
        _idle_yield = OWN_CORE_YIELD if launch_info().core_per_rank else IDLE_YIELD
    return _idle_yield


class Backoff:
    """The pause between two polls of a wait loop.

    A wait first spins (lowest latency), then yields the core between polls (so that an
    oversubscribed peer can run) for ``yield_time`` seconds since the last event, and for
    ``busy_spin`` seconds while transfers are in flight (``busy``): MPI moves data only inside
    MPI calls, and without the single-copy path (ranks outnumbering cores) both ends must poll
    for every chunk, so sleeping then would slow a 32 MiB transfer fivefold. After that it
    sleeps with doubling intervals up to ``max_sleep``. `reset` after every event starts over.

    Args:
        spin: seconds of pure polling after the last event.
        yield_time: seconds of yield-polling after the last event when idle (None:
            `idle_yield`, which depends on whether this host has a core per rank).
        busy_spin: seconds of yield-polling after the last event while transfers are in flight.
        min_sleep: the first sleep.
        max_sleep: the longest sleep; bounds the latency an idle waiter adds.
        gate: the lock the waiting call holds: released while it sleeps, handed over at
            every pause while another thread waits for it (None: no lock).

    ``what``, set by the wait that pauses (None: nothing said), tells in words what the wait
    is for: the notice of a long wait and the --hang-timeout report call it, never the pauses.
    """

    what: Callable[[], str] | None = None

    def __init__(
        self,
        spin: float = 50e-6,
        yield_time: float | None = None,
        busy_spin: float = 1.0,
        min_sleep: float = 20e-6,
        max_sleep: float = 1e-3,
        gate: Gate | None = None,
    ) -> None:
        self.gate = gate
        self.spin = spin
        if yield_time is None:
            yield_time = _idle_yield or idle_yield()
        self.yield_time = yield_time
        self.busy_spin = busy_spin
        self.min_sleep = min_sleep
        self.max_sleep = max_sleep
        self.busy_slice = 2e-3
        self._since = time.perf_counter()  # not reset(): creating one never lets others in
        self._sleep = min_sleep

    def reset(self) -> None:
        """Start over: the next pauses spin again. (An event: while another thread waits for
        the gate, hand it over here too, or a wait that keeps seeing events would starve it.)"""
        gate = self.gate
        if gate is not None and gate.waiters:
            gate.handoff()
        self._since = time.perf_counter()
        self._sleep = self.min_sleep

    def slice(self, busy: bool = False) -> float:
        """How long the next poll may spin without a pause.

        While data moves (and for at most ``busy_spin`` since the last event) a long slice:
        MPI copies a large message a chunk per call, so each pause between calls slows it.
        """
        if busy and time.perf_counter() - self._since < self.busy_spin:
            return self.busy_slice
        return self.spin

    @interruptible
    def pause(self, busy: bool = False) -> None:
        """Pause before the next poll (letting other threads in, see `Gate`)."""
        gate = self.gate
        if gate is not None and gate.waiters:
            gate.handoff()
        idle = time.perf_counter() - self._since
        if idle < self.spin:
            return
        terminating = term_hook.call
        if terminating is not None:
            terminating()  # may raise: a SIGTERM ends the wait
        if idle < (self.busy_spin if busy else self.yield_time):
            os.sched_yield()
            return
        if gate is None:
            time.sleep(self._sleep)
        else:
            gate.sleep(self._sleep)
        self._sleep = min(self._sleep * 2, self.max_sleep)
        hook = idle_hook.call
        if hook is not None:
            hook(idle, self.what)
        noticing = long_wait_hook.call
        if noticing is not None:
            noticing(self.what)
        notice = notice_hook.call
        if notice is not None:
            notice()


# How long a wait for a collective step that every rank waits in at once yield-polls before it
# sleeps: longer than such a step takes with every rank there (a raw Barrier at 64 ranks on 2
# cores: 6-8 ms quiet, 50-150 ms under load), short enough that ranks waiting for a late one
# soon leave it the cores. Ranks asleep slow a collective down, each step waiting for its
# rank's next wake-up: at 64 ranks on 2 cores an Ibarrier took 10 ms yield-polling, 25-40 ms
# yield-polling 2 ms then sleeping (up to 1 ms a sleep). drain() (a checkpoint's cut), whose
# ranks may arrive one by one from their work, yields TOGETHER_YIELD; close(), whose steps
# cost a barrier each and whose ranks arrive together more often than not, CLOSING_YIELD.
TOGETHER_YIELD = 20e-3
CLOSING_YIELD = 0.1


def together_backoff(gate: Gate | None = None, yield_time: float = TOGETHER_YIELD) -> Backoff:
    """The pauses of a wait for a collective step: no spin, one poll per turn, yielding the
    core between polls for up to ``yield_time``, then sleeping."""
    return Backoff(spin=0.0, yield_time=yield_time, gate=gate)


def tighten_timer_slack(nanoseconds: int = 1000) -> bool:
    """Ask Linux for precise short sleeps (its default slack turns 20 us into about 90 us).

    Returns:
        True if the setting took effect (Linux only; harmless elsewhere).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(29, nanoseconds, 0, 0, 0) == 0)  # 29 = PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        return False
