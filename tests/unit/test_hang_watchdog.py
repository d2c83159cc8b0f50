"""--hang-timeout's watchdog with several Geodes open in one process (one rank, no MPI)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from geode_mpi.base import backoff
from geode_mpi.transport import watchdog as watching
from geode_mpi.transport.watchdog import Watchdog


class _Ended(Exception):
    """What the watchdog's exit raises here, instead of ending the test's process."""


@pytest.fixture
def no_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hang report ends in `_Ended` (its last words and os._exit not run)."""

    def ended(status: int) -> None:
        raise _Ended(status)

    monkeypatch.setattr(os, "_exit", ended)
    monkeypatch.setattr(watching, "last_words", lambda status: None)


class _Geode:
    """A Geode's part in the hang check: its state, and a count of its messages that moved."""

    def __init__(self, name: str) -> None:
        self.moves = 0
        self.watchdog = Watchdog(5.0, lambda: [f"{name}'s state"], lambda: self.moves, "[rank 0/1]")


@pytest.fixture
def both() -> Iterator[tuple[_Geode, _Geode]]:
    """Two Geodes open at once (A made first), both closed at the end."""
    first, second = _Geode("A"), _Geode("B")
    first.watchdog.install()
    second.watchdog.install()
    try:
        yield first, second
    finally:
        first.watchdog.uninstall()
        second.watchdog.uninstall()


def _paused_after(watchdog: Watchdog, seconds: float) -> None:
    """A sleeping pause of a wait on a rank whose last activity that ``watchdog`` saw is
    ``seconds`` old (the hook that the pauses call, looking at activity now)."""
    still = watchdog.still
    now = time.monotonic()
    still.last_pause = now
    still.next_look = 0.0
    still.waiting_since = still.last_activity = now - seconds
    hook = backoff.idle_hook.call
    assert hook is not None, "no watchdog installed"
    hook(0.0, None)


@pytest.mark.usefixtures("no_exit")
def test_a_message_of_the_first_geode_is_progress_while_the_second_is_open(
    both: tuple[_Geode, _Geode],
) -> None:
    busy, idle = both
    busy.moves += 1  # a message of A's moved: this rank is not stuck, whichever Geode waits
    _paused_after(idle.watchdog, 6.0)
    busy.moves += 1
    _paused_after(busy.watchdog, 6.0)


@pytest.mark.usefixtures("no_exit")
def test_closing_either_geode_keeps_the_other_watched(
    both: tuple[_Geode, _Geode], capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = both
    second.watchdog.uninstall()  # the last made closes first
    first.moves += 1
    _paused_after(first.watchdog, 1.0)  # (A moved: not stuck)
    with pytest.raises(_Ended):
        _paused_after(first.watchdog, 6.0)
    report = capsys.readouterr().err
    assert "no progress for 6.0 s (--hang-timeout 5)" in report
    assert "A's state" in report and "B's state" not in report, report
    second.watchdog.install()  # made again; now the first made closes first
    first.watchdog.uninstall()
    _paused_after(second.watchdog, 1.0)  # (a Geode closing changes the activity: not stuck)
    with pytest.raises(_Ended):
        _paused_after(second.watchdog, 6.0)
    report = capsys.readouterr().err
    assert "B's state" in report and "A's state" not in report, report
    second.watchdog.uninstall()
    assert backoff.idle_hook.call is None and backoff.activity_hook.call is None


@pytest.mark.usefixtures("no_exit")
def test_a_hang_report_describes_every_open_geode(
    both: tuple[_Geode, _Geode], capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = both
    with pytest.raises(_Ended, match="124"):
        _paused_after(first.watchdog, 6.0)
    report = capsys.readouterr().err
    assert "[rank 0/1]   Geode 1 of 2 open:\n[rank 0/1]   A's state\n" in report, report
    assert "[rank 0/1]   Geode 2 of 2 open:\n[rank 0/1]   B's state\n" in report, report


def test_the_progress_engine_s_hook_counts_every_open_geode(both: tuple[_Geode, _Geode]) -> None:
    first, second = both
    still = second.watchdog.still
    still.next_look = 0.0
    still.last_activity = 0.0
    first.moves += 1
    tick = backoff.activity_hook.call
    assert tick is not None
    tick()
    assert still.last_activity > 0.0, "a message of A's went unseen"
