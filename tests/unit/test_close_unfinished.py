"""A close() that timed out, in the embedded world (its transport's close made to time out):
the Geode stays closing, and what the other threads' calls raise afterwards says so, naming
the close() that ended unfinished, not one still running; a second close() finishes it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from geode_mpi import ClosedError, Geode, GeodeTimeoutError, Message

TIMEOUT = 30.0
UNFINISHED = (
    "on a closing Geode: thread 'closer_0' began close(), which ended unfinished (it timed out "
    "or raised): the Geode stays closing"
)


class Ask(Message):
    pass


def _in_thread(call: Callable[[], Any], name: str = "later") -> BaseException | None:
    """What ``call()`` raised in a thread of its own, named ``name`` + "_0" (None if
    nothing)."""
    with ThreadPoolExecutor(1, thread_name_prefix=name) as pool:
        return pool.submit(call).exception(TIMEOUT)


def _timed_out_close(g: Geode, monkeypatch: pytest.MonkeyPatch) -> None:
    """close(timeout=) in a thread named "closer_0", timing out at its transport's close."""
    closing = g.transport.close

    def times_out(timeout: float | None = None) -> None:
        monkeypatch.setattr(g.transport, "close", closing)  # (once: a retry closes)
        raise GeodeTimeoutError(f"close() on rank 0 timed out after {timeout:g} s: (test)")

    monkeypatch.setattr(g.transport, "close", times_out)
    error = _in_thread(lambda: g.close(timeout=0.5), "closer")
    assert isinstance(error, GeodeTimeoutError)


def test_calls_after_a_timed_out_close_name_it_as_ended_unfinished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request begun in another thread after the close() timed out said "request() was
    waiting when thread 'closer_0' began close()": it was not (it began after), and that
    close() no longer ran; a send said "send() on a closed Geode" (it was not closed)."""
    g = Geode()
    g.on(Ask, node="node1")(lambda message: message.data)
    g.send("queued before", "node0", "node2")
    _timed_out_close(g, monkeypatch)
    assert not g.closed
    for name, call in {
        "request": lambda: g.request(Ask(2), "node1", source="node0", timeout=TIMEOUT),
        "send": lambda: g.send("x", "node0", "node1"),
        "isend": lambda: g.isend("x", "node0", "node1"),
    }.items():
        error = _in_thread(call)
        assert isinstance(error, ClosedError), (name, error)
        assert (error.operation, error.closer, error.unfinished) == (name, "closer_0", True)
        assert str(error).startswith(f"{name}() {UNFINISHED}"), error
    assert g.receive("node2", timeout=0).data == "queued before"  # (still receivable)
    g.close(timeout=TIMEOUT)  # finishes it
    assert g.closed
    error = _in_thread(lambda: g.send("x", "node0", "node1"))
    assert isinstance(error, ClosedError) and not error.unfinished
    assert str(error).startswith("send() on a closed Geode"), error


def test_a_close_that_finishes_leaves_no_unfinished_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() called again after the timeout finishes it: then a send's error is a closed
    Geode's, naming no closer."""
    g = Geode()
    _timed_out_close(g, monkeypatch)
    g.close(timeout=TIMEOUT)
    with pytest.raises(ClosedError) as caught:
        g.send("x", "node0", "node1")
    assert caught.value.closer is None and not caught.value.unfinished


def test_collective_calls_after_a_timed_out_close_name_it_as_ended_unfinished(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """checkpoint(), topic(), work_queue() and subscribe() raised a bare "on a closed Geode"
    (it was not closed: a close() called again finishes it)."""
    g = Geode(checkpoint_dir=tmp_path)
    _timed_out_close(g, monkeypatch)
    for name, call in {
        "checkpoint": lambda: g.checkpoint({"x": 1}),
        "maybe_checkpoint": lambda: g.maybe_checkpoint({"x": 1}),
        "topic": lambda: g.topic("news", ["node0"], ["node1"]),
        "work_queue": lambda: g.work_queue("jobs", ["node1"]),
        "subscribe": lambda: g.subscribe("node0", pattern="news.*"),
    }.items():
        error = _in_thread(call)
        assert isinstance(error, ClosedError), (name, error)
        assert (error.operation, error.closer, error.unfinished) == (name, "closer_0", True)
        assert str(error).startswith(f"{name}() {UNFINISHED}"), error
    g.close(timeout=TIMEOUT)


async def _drain(messages: AsyncIterator[Message]) -> None:
    async for _ in messages:
        pass


def test_receives_waiting_when_a_close_times_out_end_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A receive() or receive_many() waiting in another thread when close(timeout=) timed out
    waited its whole timeout (without one, until close() was called again); receive_many's
    error dropped ``unfinished``. Their asyncio twins, an areceive() and an ``async for``
    over messages(), waited on (the loop had no timeout: until close() was called again)."""
    g = Geode(nodes=5)
    calls = {
        "receive": lambda: g.receive("node1", timeout=TIMEOUT),
        "receive_many": lambda: g.receive_many("node2", timeout=TIMEOUT),
        "areceive": lambda: asyncio.run(g.areceive("node3", timeout=TIMEOUT)),
        "messages": lambda: asyncio.run(_drain(g.messages("node4"))),
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
        _timed_out_close(g, monkeypatch)
        for name, future in futures.items():
            error = future.exception(TIMEOUT)
            assert isinstance(error, ClosedError), (name, error)
            assert (error.operation, error.closer, error.unfinished) == (name, "closer_0", True)
        assert time.monotonic() - began < TIMEOUT / 3
    g.close(timeout=TIMEOUT)
