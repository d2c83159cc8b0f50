"""A handler stopped by a BaseException that is not an Exception (Ctrl-C's KeyboardInterrupt,
SystemExit, asyncio's CancelledError, a library's own), in the embedded world: the exception
goes up out of run() unchanged, the message goes back to its queue untried, and a later run()
processes it once."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from geode_mpi import Geode, Message

TIMEOUT = 30.0


class Job(Message):
    pass


class Ask(Message):
    pass


class GiveUp(BaseException):
    pass


STOPS = [KeyboardInterrupt, SystemExit, asyncio.CancelledError, GiveUp]


@pytest.mark.parametrize("stop", STOPS, ids=lambda kind: kind.__name__)
def test_a_stopped_handler_loses_nothing_and_a_later_run_processes_it_once(
    stop: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    """Only Exception was caught: the message stayed in hand, neither acked nor nacked, never
    processed again; the second run() found the job never idle (timeout, not quiescent) and
    close() warned of a message taken with an explicit ack and never acked."""
    caplog.set_level(logging.WARNING, logger="geode_mpi")
    g = Geode()
    done: list[int] = []
    raised = stop("stopped")

    @g.on(Job, node="node1")
    def handle(message: Message) -> None:
        if message.data == 3 and raised.__traceback__ is None:  # (once)
            raise raised
        done.append(message.data)

    for i in range(6):
        g.send(Job(i), "node0", "node1")
    with pytest.raises(stop) as caught:
        g.run("node1", timeout=TIMEOUT)
    assert caught.value is raised
    assert done == [0, 1, 2]
    stats = g.stats("node1")
    assert (stats.retries, stats.dead_letters, stats.processed) == (0, 0, 3)
    assert g.pending("node1") == 3  # message 3 first, untried
    summary = g.run("node1", timeout=TIMEOUT)
    assert summary.reason == "quiescent"
    assert done == [0, 1, 2, 3, 4, 5]
    assert (summary.processed, summary.failed) == (3, 0)
    g.close()
    text = caplog.text
    assert "neither acked nor nacked" not in text and "messages never received" not in text
    assert (
        f"node1: the handler of message 3 (Job) from node0 was interrupted by {stop.__name__} "
        "(stopped) before it sent, published or replied: not a failure; the message is back"
    ) in text


def test_an_acked_send_and_a_request_are_answered_after_a_ctrl_c() -> None:
    """The send's ack never came (AckTimeout), nor the request's reply (ReceiveTimeout)."""
    g = Geode()
    stopped: set[object] = set()

    @g.on(Job, node="node1")
    @g.on(Ask, node="node1")
    def handle(message: Message) -> object:
        if message.data not in stopped:
            stopped.add(message.data)
            raise KeyboardInterrupt
        return message.data if isinstance(message, Ask) else None

    sent = g.isend(Job("acked"), "node0", "node1", ack=True)
    with pytest.raises(KeyboardInterrupt):
        g.run("node1", timeout=TIMEOUT)
    assert g.run("node1", timeout=TIMEOUT).reason == "quiescent"
    sent.wait(timeout=TIMEOUT)
    with pytest.raises(KeyboardInterrupt):  # (its handler ran in the request's wait)
        g.request(Ask("asked"), "node1", timeout=TIMEOUT)
    assert g.run("node1", timeout=TIMEOUT).processed == 1
    reply = g.receive("node0", timeout=TIMEOUT)  # (no request() waits for it any more)
    assert reply.data == "asked" and reply.reply_to is not None
    assert g.stats("node1").processed == 2
    g.close()


def test_a_handler_stopped_after_it_sent_is_a_dead_letter_and_its_request_fails() -> None:
    """Handling it again would send twice: not put back; the requester is told."""
    g = Geode()

    @g.on(Ask, node="node1")
    def handle(message: Message) -> None:
        g.send("side effect", "node1", "node2")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        g.request(Ask(1), "node1", timeout=TIMEOUT)
    [dead] = g.dead_letters("node1")
    assert (dead.message.data, dead.attempts) == (1, 1)
    assert g.pending("node1") == 0
    assert [m.data for m in iter(lambda: g.try_receive("node2"), None)] == ["side effect"]
    failure = g.receive("node0", timeout=TIMEOUT)  # what request() would have raised
    assert failure.data["error_type"] == "KeyboardInterrupt"
    g.close()


def test_what_a_wait_owed_when_its_handler_was_stopped_is_served_by_the_next_wait() -> None:
    """A request() served node1's queue in its wait: the older Job of its source first (per
    source FIFO), whose handler raised KeyboardInterrupt. The Job was put back, but node1
    was no longer noted as owing a waited-for message: the request stayed unanswered by the
    next waits (a receive() of its reply timed out)."""
    g = Geode()
    calls: list[object] = []

    @g.on(Job, node="node1")
    @g.on(Ask, node="node1")
    def handle(message: Message) -> object:
        calls.append(message.data)
        if calls == ["first"]:
            raise KeyboardInterrupt
        return f"answer to {message.data}" if isinstance(message, Ask) else None

    g.send(Job("first"), "node0", "node1")
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, args=(TIMEOUT,))  # so a receive() waits
    other.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            g.request(Ask("second"), "node1", timeout=TIMEOUT)
        reply = g.receive("node0", timeout=10)
    finally:
        idle.set()
        other.join(TIMEOUT)
    assert reply.data == "answer to second" and reply.reply_to is not None
    assert calls == ["first", "first", "second"]
    g.close()
