"""close() in the main thread while another thread's send waits, embedded: the message is
delivered all the same, so an ack=True send (or asend) says so (ClosedError.in_flight True,
"delivered all the same" in its text), and a send made while close() still runs says the
Geode is closing, not closed. A hook makes close() begin exactly while the send waits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import geode_mpi.core.handles as handles
from geode_mpi import ClosedError, Geode

TIMEOUT = 30.0
IN_FLIGHT = "delivered all the same"


def hooked(call: Callable[..., Any], waiting: threading.Event, name: str) -> Callable[..., Any]:
    """``call`` (a wait), setting ``waiting`` when it waits for the public call ``name``."""

    def wait(*args: Any) -> Any:
        if args[-1] == name:
            waiting.set()
        return call(*args)

    return wait


def close_while(waiting: threading.Event, geode: Geode, thread: threading.Thread) -> None:
    """close() once the thread's send waits (the hook said so), then join it."""
    thread.start()
    assert waiting.wait(TIMEOUT), "the send never waited"
    geode.close(timeout=TIMEOUT)
    thread.join(TIMEOUT)
    assert not thread.is_alive()


@pytest.mark.parametrize("repeat", range(5))
def test_an_ack_send_ended_by_close_says_its_message_was_delivered(repeat: int) -> None:
    """It raised a ClosedError saying the send "ends, as nothing it waits for may come",
    though close() delivered its message: a user sending it again got it twice."""
    geode = Geode(nodes=2)
    waiting = threading.Event()
    runtime = geode._runtime
    runtime.wait_until = hooked(runtime.wait_until, waiting, "send")  # type: ignore[method-assign]
    raised: list[BaseException] = []

    def sending() -> None:
        try:
            geode.send(("m", repeat), "node0", "node1", ack=True, timeout=TIMEOUT)
        except BaseException as exc:
            raised.append(exc)

    close_while(waiting, geode, threading.Thread(target=sending))
    assert len(raised) == 1 and isinstance(raised[0], ClosedError), raised
    error = raised[0]
    assert error.in_flight is True and error.operation == "send"
    assert error.closer == "MainThread"
    assert IN_FLIGHT in str(error) and "do not send it again blindly" in str(error)
    message = geode.try_receive("node1")
    assert message is not None and message.data == ("m", repeat)
    assert geode.try_receive("node1") is None


@pytest.mark.parametrize("repeat", range(3))
def test_an_ack_asend_ended_by_close_says_its_message_was_delivered(
    repeat: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asyncio twin: asend(ack=True) awaited in another thread's event loop."""
    geode = Geode(nodes=2)
    waiting = threading.Event()
    monkeypatch.setattr(handles, "wait_until", hooked(handles.wait_until, waiting, "asend"))
    raised: list[BaseException] = []

    async def sending() -> None:
        await geode.asend(("a", repeat), "node0", "node1", ack=True, timeout=TIMEOUT)

    def looping() -> None:
        try:
            asyncio.run(sending())
        except BaseException as exc:
            raised.append(exc)

    close_while(waiting, geode, threading.Thread(target=looping))
    assert len(raised) == 1 and isinstance(raised[0], ClosedError), raised
    assert raised[0].in_flight is True and raised[0].operation == "asend"
    assert IN_FLIGHT in str(raised[0])
    message = geode.try_receive("node1")
    assert message is not None and message.data == ("a", repeat)


def test_a_send_while_close_runs_in_another_thread_says_closing() -> None:
    """It said "send() on a closed Geode ... create a new Geode()" while close() still ran."""
    geode = Geode(nodes=2)
    runtime = geode._runtime
    in_close = threading.Event()
    tried = threading.Event()

    def slow_close(timeout: float | None = None) -> None:  # (the transport's last step)
        in_close.set()
        runtime.gate.unlocked(lambda _: tried.wait(TIMEOUT), None)

    runtime.transport.close = slow_close  # type: ignore[method-assign]
    raised: list[BaseException] = []

    def sending() -> None:
        assert in_close.wait(TIMEOUT)
        try:
            geode.send("late", "node0", "node1")
        except BaseException as exc:
            raised.append(exc)
        tried.set()

    thread = threading.Thread(target=sending)
    thread.start()
    geode.close(timeout=TIMEOUT)
    thread.join(TIMEOUT)
    assert len(raised) == 1 and isinstance(raised[0], ClosedError), raised
    text = str(raised[0])
    assert text.startswith("send() on a closing Geode: thread 'MainThread' is in close()"), text
    assert raised[0].in_flight is False
    assert geode.try_receive("node1") is None
