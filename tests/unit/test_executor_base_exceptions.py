"""An executor task raising a BaseException that is not an Exception (asyncio's CancelledError,
KeyboardInterrupt, a library's own), in the embedded world: its future's failure, as with
concurrent.futures' executors and mpi4py.futures, never the executor's."""

from __future__ import annotations

import asyncio
import logging

import pytest

from geode_mpi import Geode, RemoteTraceback

TIMEOUT = 30.0


class GiveUp(BaseException):
    pass


def cancelled_inside() -> None:
    """Runs asyncio code whose coroutine is cancelled: asyncio.run raises CancelledError."""

    async def main() -> None:
        slow = asyncio.ensure_future(asyncio.sleep(TIMEOUT))
        await asyncio.sleep(0)
        slow.cancel()
        await slow

    asyncio.run(main())


def give_up() -> None:
    raise GiveUp("task gave up")


def interrupted() -> None:
    raise KeyboardInterrupt


def double(x: int) -> int:
    return 2 * x


@pytest.mark.parametrize(
    ("task", "kind"),
    [
        (cancelled_inside, asyncio.CancelledError),
        (give_up, GiveUp),
        (interrupted, KeyboardInterrupt),
    ],
    ids=["CancelledError", "own", "KeyboardInterrupt"],
)
def test_a_base_exception_is_its_futures_and_the_other_tasks_run(
    task: object, kind: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: it broke the executor's thread: every pending future failed with TaskError
    ("its thread on node0 (rank 0) failed with CancelledError"), those that had finished
    too (their results dropped), and a later submit raised it (on a worker rank: the job
    aborted)."""
    geode = Geode()
    with caplog.at_level(logging.ERROR, logger="geode_mpi"), geode.executor() as ex:
        assert ex is not None
        futures = [ex.submit(double, 1), ex.submit(task), ex.submit(double, 3)]  # type: ignore[arg-type]
        assert futures[0].result(timeout=TIMEOUT) == 2
        with pytest.raises(kind) as caught:
            futures[1].result(timeout=TIMEOUT)
        assert futures[2].result(timeout=TIMEOUT) == 6
        assert ex.submit(double, 5).result(timeout=TIMEOUT) == 10
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback) and cause.rank == 0
    assert f"in {task.__name__}" in cause.traceback  # type: ignore[attr-defined]
    assert "its thread failed" not in caplog.text
    geode.close(timeout=TIMEOUT)
