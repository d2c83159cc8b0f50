"""SIGTERM in one process: the grace period's settings, and a wait that outlives its patience.

The launched cases (blocked in receive, computing, a second SIGTERM, the last checkpoint and its
restart, at 2 and 4 ranks) are in tests/test_sigterm.py.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geode_mpi import Geode, QueueConfig, Terminated
from geode_mpi.core import registry
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


def test_messages_the_last_checkpoint_holds_are_not_reported_as_never_received(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, standing_down: None
) -> None:
    """After a SIGTERM's last checkpoint the messages still queued are in it: the end says so
    (INFO), not that they were never received (a WARNING, as for messages no checkpoint holds)."""
    registry._closed_early.clear()  # what earlier tests left
    directory = tmp_path / "ck"
    geode = Geode(checkpoint_dir=directory, term_grace=60)
    for k in range(3):
        geode.send(k, "node0", "node3")
    geode.send("x", "node0", "node2")
    os.kill(os.getpid(), signal.SIGTERM)
    with caplog.at_level(logging.INFO, logger="geode_mpi"):
        with pytest.raises(SystemExit) as ended:
            geode.maybe_checkpoint({"step": 1})
        registry.close_all()  # what interpreter exit does
    assert ended.value.code == 0
    assert "never received" not in caplog.text
    (record,) = [r for r in caplog.records if "saved in checkpoint" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "the job ends with messages saved in checkpoint 1, which a restart delivers: "
        "node2: 1 message(s) (1 Message); node3: 3 message(s) (3 Message)"
    )
    with Geode(checkpoint_dir=directory, restart=True) as again:
        assert again.restored_epoch == 1
        assert [again.receive("node3", timeout=5).data for _ in range(3)] == [0, 1, 2]
        assert again.receive("node2", timeout=5).data == "x"


def test_what_an_in_memory_queue_holds_at_the_last_checkpoint_is_reported_never_received(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, standing_down: None
) -> None:
    """A checkpoint does not save an in-memory queue (`persistent=False`): the end said its
    messages were saved in the last checkpoint, which a restart delivers, and it did not."""
    registry._closed_early.clear()  # what earlier tests left
    directory = tmp_path / "ck"
    queues = {"node2": QueueConfig(persistent=False)}
    geode = Geode(checkpoint_dir=directory, term_grace=60, queues=queues)
    geode.send("kept", "node0", "node3")
    geode.send("gone", "node0", "node2")
    os.kill(os.getpid(), signal.SIGTERM)
    with caplog.at_level(logging.INFO, logger="geode_mpi"):
        with pytest.raises(SystemExit):
            geode.maybe_checkpoint({"step": 1})
        registry.close_all()  # what interpreter exit does
    said = {
        r.getMessage().split(":")[0]: r for r in caplog.records if "the job ends" in r.getMessage()
    }
    assert said["the job ends with messages saved in checkpoint 1, which a restart delivers"]
    warned = said["the job ends with messages never received"]
    assert warned.levelno == logging.WARNING and "node2: 1 message(s)" in warned.getMessage()
    assert "node3" not in warned.getMessage()
    with Geode(checkpoint_dir=directory, restart=True, queues=queues) as again:
        assert again.receive("node3", timeout=5).data == "kept"
        assert again.pending("node2") == 0


def test_without_a_sigterm_messages_left_queued_are_reported_as_ever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a SIGTERM the end's report is as ever: a checkpoint the job went on past says
    nothing about what a restart would find."""
    with caplog.at_level(logging.INFO, logger="geode_mpi"), Geode(checkpoint_dir=tmp_path) as geode:
        geode.send("kept", "node0", "node3")
        assert geode.checkpoint({"step": 1}) == 1
    assert "saved in checkpoint" not in caplog.text
    assert "never received: node3: 1 message(s) (1 Message)" in caplog.text
