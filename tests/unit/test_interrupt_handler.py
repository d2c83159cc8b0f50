"""The SIGINT handler that holds a Ctrl-C back inside geode_mpi (geode_mpi/base/interrupts.py):
installed only over Python's default handler while a Geode is open, given back at close, and
never in place of the job's own handler or asyncio's."""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

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
