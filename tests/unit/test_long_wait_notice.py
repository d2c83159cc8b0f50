"""The notice of a long wait: what it says, and its threshold doubling for the process."""

from __future__ import annotations

import logging
import threading
import time
import tracemalloc
from collections.abc import Callable

import numpy
import pytest

from geode_mpi.base import backoff
from geode_mpi.transport.notice import (
    THRESHOLD,
    WaitNotice,
    internal,
    notice_seconds,
    shown,
    wait_notice,
)
from geode_mpi.transport.watchdog import job_file


def _stuck_for(notice: WaitNotice, seconds: float, what: Callable[[], str]) -> None:
    """One sleeping pause of a wait on a rank stuck for ``seconds``."""
    now = time.monotonic()
    still = notice.still
    still.last_pause = now
    still.waiting_since = still.last_activity = now - seconds
    notice.paused(what)


def _paused_for(notice: WaitNotice, seconds: float) -> None:
    """As `_stuck_for`, through the hook that the pauses call (and looking at activity now)."""
    now = time.monotonic()
    still = notice.still
    still.last_pause = now
    still.next_look = 0.0
    still.waiting_since = still.last_activity = now - seconds
    hook = backoff.long_wait_hook.call
    assert hook is not None, "no notice of a long wait installed"
    hook(None)


def test_the_notice_speaks_once_then_only_for_a_wait_twice_as_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notice = WaitNotice(7.0, lambda: ["node0: 0 message(s) queued"], lambda: 0, rank=3)
    notice.install()  # (a setting no other test uses: the threshold starts over at 7 s)

    def pause() -> str:
        return "a message at node0 (0 other message(s) queued there)"

    try:
        with caplog.at_level(logging.WARNING, logger="geode_mpi"):
            _stuck_for(notice, 6.5, pause)
            assert not caplog.records
            _stuck_for(notice, 7.5, pause)
            _stuck_for(notice, 13.0, pause)  # the threshold is 14 s now
            assert len(caplog.records) == 1
            text = caplog.records[0].getMessage()
            assert text.startswith("nothing has arrived or left on rank 3 for 8 s; it waits in ")
            assert "  waiting for a message at node0 (0 other message(s) queued there)" in text
            assert "  node0: 0 message(s) queued" in text
            assert "--hang-timeout SECONDS reports every rank's wait and ends it" in text
            assert "next notice after a wait of 14 s" in text
            _stuck_for(notice, 14.5, pause)
            assert len(caplog.records) == 2
            assert "next notice after a wait of 28 s" in caplog.records[1].getMessage()
            # for the process: the next Geode's notice (same setting) waits 28 s too
            notice.uninstall()
            later = WaitNotice(7.0, list, lambda: 0, rank=3, hang=300.0)
            later.install()
            _stuck_for(later, 20.0, pause)
            assert len(caplog.records) == 2
            _stuck_for(later, 29.0, pause)
            assert len(caplog.records) == 3
            assert "if nothing moves for 300 s, --hang-timeout" in caplog.records[2].getMessage()
            later.uninstall()
    finally:
        notice.uninstall()
    assert THRESHOLD.seconds == 56.0


def test_the_wait_notice_setting() -> None:
    assert wait_notice({}) == 60.0
    assert wait_notice({"GEODE_WAIT_NOTICE": "2.5"}) == 2.5
    assert wait_notice({"GEODE_WAIT_NOTICE": "0"}) is None
    for bad in ("soon", "-1", "inf", "nan"):
        with pytest.raises(ValueError, match="GEODE_WAIT_NOTICE must be a number of seconds"):
            wait_notice({"GEODE_WAIT_NOTICE": bad})
        with pytest.raises(ValueError, match="--wait-notice must be a number of seconds"):
            notice_seconds(bad, "--wait-notice")


class _Geode:
    """What a wait of a Geode runs in (its ``self``, as the notice finds it)."""

    def __init__(self, name: str, moves: list[int], after: float) -> None:
        self.notice = WaitNotice(
            after, lambda: [f"{name}'s state"], lambda: moves[0], rank=0, owners=(self,)
        )

    def receive(self, seconds: float) -> None:
        _paused_for(self.notice, seconds)


def test_every_open_geode_counts_and_the_waiting_one_is_described(
    caplog: pytest.LogCaptureFixture,
) -> None:
    moves = [0]
    busy, idle = _Geode("A", moves, 5.0), _Geode("B", [0], 5.0)
    busy.notice.install()
    idle.notice.install()  # made last: it took the hook over, and A's messages went unseen
    try:
        with caplog.at_level(logging.WARNING, logger="geode_mpi"):
            _paused_for(busy.notice, 0.0)
            moves[0] += 1  # a message of A's arrived
            busy.receive(6.0)
            assert not caplog.records  # A moves: not stuck
            idle.notice.uninstall()  # B closed: A's waits still speak
            _paused_for(busy.notice, 0.0)  # (a Geode closing changes the activity)
            busy.receive(6.0)
            assert len(caplog.records) == 1
            text = caplog.records[0].getMessage()
            assert "  A's state" in text and "B's state" not in text, text
            idle.notice.install()
            idle.receive(11.0)  # (threshold 10 s now) a wait of B's: B's state
            assert len(caplog.records) == 2
            text = caplog.records[1].getMessage()
            assert "  B's state" in text and "A's state" not in text, text
    finally:
        busy.notice.uninstall()
        idle.notice.uninstall()
    assert backoff.long_wait_hook.call is None


def test_geode_mpi_s_own_threads_give_no_notice(caplog: pytest.LogCaptureFixture) -> None:
    geode = _Geode("A", [0], 3.0)
    geode.notice.install()
    thread = threading.Thread(target=geode.receive, args=(4.0,))
    internal(thread)
    try:
        with caplog.at_level(logging.WARNING, logger="geode_mpi"):
            thread.start()
            thread.join(10)
            assert not caplog.records
            geode.receive(4.0)  # the job's own thread: it speaks
            assert len(caplog.records) == 1
    finally:
        geode.notice.uninstall()


def test_the_standard_library_is_not_the_job_s_line() -> None:
    assert not job_file(threading.__file__)
    assert not job_file(logging.__file__)
    assert not job_file("<frozen runpy>")
    assert job_file(__file__)
    assert job_file(pytest.__file__)  # (installed packages: not the standard library)


def test_a_big_argument_is_shown_by_its_size_without_building_its_text() -> None:
    blob = b"\0" * (8 * 2**20)
    array = numpy.zeros((1000, 500))
    values = [blob, bytearray(16), memoryview(blob), array, [blob, array], list(range(10**5))]
    values += [{"k": blob}, "x" * 10**6, b"abc"]
    tracemalloc.start()
    try:
        texts = [shown(value) for value in values]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20 - 16, peak  # (the repr of the bytes alone: 32 MiB)
    assert texts[:4] == [
        "<bytes of 8,388,608 bytes>",
        "<bytearray of 16 bytes>",
        "<memoryview of 8,388,608 bytes>",
        "<ndarray float64 (1000, 500): 4,000,000 bytes>",
    ]
    assert (
        texts[4] == "[<bytes of 8,388,608 bytes>, <ndarray float64 (1000, 500): 4,000,000 bytes>]"
    )
    assert texts[5] == "<list of 100,000 items>"
    assert texts[6] == "{'k': <bytes of 8,388,608 bytes>}"
    assert len(texts[7]) <= 45 and texts[8] == "b'abc'"
