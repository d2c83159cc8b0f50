"""Waiting without burning a core: spin briefly, yield while data moves, then sleep longer."""

from __future__ import annotations

import os
import time


class Backoff:
    """The pause between two polls of a wait loop.

    A wait first spins (lowest latency). While transfers are in flight (``busy``) it yields the
    core between polls, for up to ``busy_spin`` seconds since the last event: MPI moves data
    only inside MPI calls, and without the single-copy path (ranks outnumbering cores) both
    ends must poll for every chunk, so sleeping then would slow a 32 MiB transfer fivefold.
    When idle, or once ``busy_spin`` has passed, it sleeps with doubling intervals up to
    ``max_sleep``. `reset` after every event starts over.

    Args:
        spin: seconds of pure polling after the last event.
        busy_spin: seconds of yield-polling while transfers are in flight.
        min_sleep: the first sleep once idle.
        max_sleep: the longest sleep; bounds the latency an idle waiter adds.
    """

    def __init__(
        self,
        spin: float = 100e-6,
        busy_spin: float = 1.0,
        min_sleep: float = 20e-6,
        max_sleep: float = 1e-3,
    ) -> None:
        self.spin = spin
        self.busy_spin = busy_spin
        self.min_sleep = min_sleep
        self.max_sleep = max_sleep
        self.reset()

    def reset(self) -> None:
        """Start over: the next pauses spin again."""
        self._since = time.perf_counter()
        self._sleep = self.min_sleep

    def pause(self, busy: bool = False) -> None:
        """Pause before the next poll."""
        idle = time.perf_counter() - self._since
        if idle < self.spin:
            return
        if busy and idle < self.busy_spin:
            os.sched_yield()
            return
        time.sleep(self._sleep)
        self._sleep = min(self._sleep * 2, self.max_sleep)
