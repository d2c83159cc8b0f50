"""SIGTERM in one process: the grace period's settings, and a wait that outlives its patience.

The launched cases (blocked in receive, computing, a second SIGTERM, the last checkpoint and its
restart, at 2 and 4 ranks) are in tests/test_sigterm.py.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geode_mpi import Geode, Terminated
from geode_mpi.core.termination import DEFAULT_GRACE, TERMINATION, term_grace
from geode_mpi.transport import Backoff


@pytest.fixture
def standing_down() -> Iterator[None]:
    """Whatever a test does, the SIGTERM it sends never ends this process."""
    try:
        yield
    finally:
        TERMINATION.finished()


def test_the_grace_comes_from_the_argument_the_variable_or_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GEODE_TERM_GRACE", raising=False)
    assert term_grace(None) == DEFAULT_GRACE == 20.0
    assert term_grace(7) == 7.0
    monkeypatch.setenv("GEODE_TERM_GRACE", "12.5")
    assert term_grace(None) == 12.5
    assert term_grace(3.0) == 3.0


def test_a_bad_grace_is_refused_naming_the_setting_and_the_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"term_grace must be a number of seconds > 0, got 0"):
        Geode(checkpoint_dir=tmp_path, term_grace=0)
    with pytest.raises(TypeError, match=r"term_grace must be a number .* got '5'"):
        Geode(checkpoint_dir=tmp_path, term_grace="5")  # type: ignore[arg-type]
    monkeypatch.setenv("GEODE_TERM_GRACE", "soon")
    with pytest.raises(ValueError, match=r"GEODE_TERM_GRACE must be .* got 'soon'"):
        Geode(checkpoint_dir=tmp_path)


def test_after_sigterm_a_wait_raises_terminated_at_half_the_grace_but_a_checkpoint_does_not(
    tmp_path: Path, standing_down: None
) -> None:
    grace = 6.0
    with Geode(checkpoint_dir=tmp_path, term_grace=grace) as geode:
        backoff = Backoff()
        sent = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        assert TERMINATION.requested
        with pytest.raises(Terminated) as caught:
            while True:  # a wait loop's pauses
                backoff.pause()
        waited = time.monotonic() - sent
        TERMINATION.finished()  # before the grace ends this process
        assert grace / 2 <= waited < grace, waited
        assert caught.value.grace == grace and caught.value.waited >= grace / 2
        os.kill(os.getpid(), signal.SIGTERM)  # again, as a fresh first SIGTERM
        time.sleep(grace / 2)  # past the patience: outside geode_mpi, no wait to give up
        with TERMINATION.shielded():  # a checkpoint's waits go on
            backoff.pause()
        assert geode.checkpoint({"saved": True}) == 1
        TERMINATION.finished()
    assert not TERMINATION.requested
