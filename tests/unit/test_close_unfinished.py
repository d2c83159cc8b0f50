"""A close() that timed out, in the embedded world (its transport's close made to time out):
the Geode stays closing, and what the other threads' calls raise afterwards says so, naming
the close() that ended unfinished, not one still running; a second close() finishes it."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
