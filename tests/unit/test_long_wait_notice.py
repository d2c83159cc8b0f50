"""The notice of a long wait: what it says, and its threshold doubling for the process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from geode_mpi.transport.notice import THRESHOLD, WaitNotice, wait_notice


def _stuck_for(notice: WaitNotice, seconds: float, what: Callable[[], str]) -> None:
    """One sleeping pause of a wait on a rank stuck for ``seconds``."""
    now = time.monotonic()
    still = notice.still
    still.last_pause = now
    still.waiting_since = still.last_activity = now - seconds
    notice.paused(what)


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
            assert "on rank 3 has waited 8 s with nothing arriving or leaving" in text
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
