"""A close(timeout=) that times out for real (the other ranks have not called close()): the
Geode stays closing, the calls of another thread afterwards name that close() as ended
unfinished (not as a close() still running), and a second close() finishes the job."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from geode_mpi import ClosedError, Geode, GeodeTimeoutError, Message

TIMEOUT = 60.0


def test_calls_after_a_timed_out_close_say_it_ended_unfinished() -> None:
    """Before: "request() was waiting when thread 'MainThread' began close()" for a request
    begun after that close() had timed out, and "send() on a closed Geode" (it was not)."""
    geode = Geode()
    if geode.size == 1:  # (alone, close() waits for no other rank: it cannot time out)
        geode.close(timeout=TIMEOUT)
        pytest.skip("a close() that times out needs another rank that has not called it")
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    raised: dict[str, BaseException | None] = {}
    if geode.rank == 0:
        with pytest.raises(GeodeTimeoutError, match="timed out"):
            geode.close(timeout=0.3)  # (the other ranks wait in the bcast below)
        assert not geode.closed
        other = geode.nodes[1]
        with ThreadPoolExecutor(1, thread_name_prefix="later") as pool:  # (another thread)
            errors = {
                "request": pool.submit(geode.request, Message("q"), other, timeout=TIMEOUT),
                "send": pool.submit(geode.send, "x", dest=other),
            }
            raised = {name: future.exception(TIMEOUT) for name, future in errors.items()}
    world.bcast(None, root=0)  # (rank 0 is done checking: every rank closes now)
    geode.close(timeout=TIMEOUT)
    assert geode.closed
    for name, error in raised.items():
        assert isinstance(error, ClosedError), (name, error)
        assert (error.operation, error.closer, error.unfinished) == (name, "MainThread", True)
        assert str(error).startswith(
            f"{name}() on a closing Geode: thread 'MainThread' began close(), which ended "
            "unfinished (it timed out or raised)"
        ), error


async def _drain(messages: AsyncIterator[Message]) -> None:
    async for _ in messages:
        pass


def test_asyncio_receives_waiting_when_a_close_times_out_end_naming_it() -> None:
    """Before: an areceive() and an ``async for`` over messages() waiting in other threads of
    rank 0 when its close(timeout=) timed out waited on (the loop until close() was called
    again), where receive() and receive_many() ended with ClosedError."""
    geode = Geode()
    if geode.size == 1:
        geode.close(timeout=TIMEOUT)
        pytest.skip("a close() that times out needs another rank that has not called it")
    from mpi4py import MPI

    raised: dict[str, BaseException | None] = {}
    if geode.rank == 0:
        calls: dict[str, Callable[[], Any]] = {
            "areceive": lambda: asyncio.run(geode.areceive(timeout=TIMEOUT)),
            "messages": lambda: asyncio.run(_drain(geode.messages())),
        }
        started = threading.Barrier(len(calls) + 1)

        def waits(call: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                started.wait(TIMEOUT)
                return call()

            return run

        with ThreadPoolExecutor(len(calls), thread_name_prefix="waiter") as pool:
            futures = {name: pool.submit(waits(call)) for name, call in calls.items()}
            started.wait(TIMEOUT)
            time.sleep(0.2)  # (into their waits)
            began = time.monotonic()
            with pytest.raises(GeodeTimeoutError, match="timed out"):
                geode.close(timeout=0.3)
            raised = {name: future.exception(TIMEOUT) for name, future in futures.items()}
            waited = time.monotonic() - began
        assert waited < TIMEOUT / 3, waited
    MPI.COMM_WORLD.bcast(None, root=0)
    geode.close(timeout=TIMEOUT)
    for name, error in raised.items():
        assert isinstance(error, ClosedError), (name, error)
        assert (error.operation, error.closer, error.unfinished) == (name, "MainThread", True)
