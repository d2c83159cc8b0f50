"""The SIGINT handler that holds a Ctrl-C back inside geode_mpi (geode_mpi/base/interrupts.py):
installed only over Python's default handler while a Geode is open, given back at close, and
never in place of the job's own handler or asyncio's."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import pytest

from geode_mpi import Geode


def test_installed_while_a_geode_is_open_and_given_back_at_close() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with Geode() as geode:
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        with Geode():  # (a second Geode: the handler stays until the last closes)
            pass
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        geode.send("still", geode.node, geode.node)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_jobs_own_handler_is_left_alone() -> None:
    calls: list[int] = []

    def own(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    signal.signal(signal.SIGINT, own)
    try:
        with Geode():
            assert signal.getsignal(signal.SIGINT) is own
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is own
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_asyncio_runs_own_handler_is_left_alone() -> None:
    async def main() -> object:
        with Geode():
            return signal.getsignal(signal.SIGINT)

    seen = asyncio.run(main())
    assert seen is not signal.default_int_handler  # (asyncio's)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_handler_the_job_installs_later_is_called_once_per_ctrl_c() -> None:
    """A job's handler set after Geode(), chaining to the one it replaced (geode's): geode's
    used to hold the interrupt and send it again every millisecond, through the job's handler
    each time (3-23 calls for one Ctrl-C); it raises at once when called by another."""
    geode = Geode()
    calls: list[float] = []
    before = signal.getsignal(signal.SIGINT)
    assert callable(before)

    def mine(signum: int, frame: Any) -> None:
        calls.append(time.monotonic())
        before(signum, frame)

    signal.signal(signal.SIGINT, mine)
    try:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            n = 0
            while time.monotonic() - started < 5:  # (the loop's time is nearly all geode's)
                geode.send(n, "node0", "node1")
                geode.receive("node1", timeout=1)
                n += 1
        assert len(calls) == 1
    finally:
        signal.signal(signal.SIGINT, before)
        geode.close()


def test_closed_in_another_thread_the_handler_is_given_back_at_the_next_ctrl_c() -> None:
    geode = Geode()
    closer = threading.Thread(target=geode.close)
    closer.start()
    closer.join()
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # (raised at once, as Python's own handler does)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
