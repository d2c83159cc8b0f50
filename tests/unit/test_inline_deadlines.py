"""A wait that runs handlers itself (a request's, a send's ack, a receive's) starts none once
its deadline has passed; a handler run it started before goes to its end, and a reply it
produced is returned. And what run() says of a reply whose request() gave up."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from geode_mpi import AckTimeout, Geode, Message, ReceiveTimeout

SLOW = 0.3  # seconds each handler run of a Slow message takes
QUEUED = 4  # Slow messages queued at node2 before the call that waits


class Slow(Message):
    pass


class Ask(Message):
    pass


def slow_world(runs: list[object]) -> Geode:
    """An embedded world of three nodes whose node2 has a slow handler and a fast one."""
    geode = Geode(3)

    @geode.on(Slow, node="node2")
    def slow(msg: Message) -> None:
        runs.append(msg.data)
        time.sleep(SLOW)

    @geode.on(Ask, node="node2")
    def ask(msg: Message) -> str:
        runs.append(msg.data)
        return "answer"

    return geode


def timed(call: Callable[[], object], error: type[Exception]) -> float:
    started = time.monotonic()
    with pytest.raises(error):
        call()
    return time.monotonic() - started


def test_a_request_starts_no_handler_once_its_timeout_has_passed() -> None:
    """Before: the request ran the 4 older messages of its source at node2 (per-source order)
    and then its own, 1.2 s, and returned "answer" from a call with timeout=0.2."""
    runs: list[object] = []
    geode = slow_world(runs)
    for k in range(QUEUED):
        geode.send(Slow(k), source="node0", dest="node2")
    took = timed(
        lambda: geode.request(Ask("ask"), "node2", source="node0", timeout=0.2), ReceiveTimeout
    )
    assert runs == [0]  # started before the deadline, run to its end; no other started
    assert took < QUEUED * SLOW  # (before: all of them ran)
    geode.close()


def test_a_handler_run_begun_before_the_deadline_gives_its_reply() -> None:
    """A handler this thread runs cannot be stopped: its reply, once there, is returned."""
    runs: list[object] = []
    geode = slow_world(runs)

    @geode.on(Ask, node="node1")
    def late(msg: Message) -> str:
        time.sleep(SLOW)
        return "late"

    started = time.monotonic()
    assert geode.request(Ask(), "node1", timeout=0.1).data == "late"
    assert time.monotonic() - started >= SLOW
    geode.close()


@pytest.mark.parametrize("how", ["send", "wait"])
def test_a_send_waiting_for_its_ack_starts_no_handler_once_its_timeout_has_passed(
    how: str,
) -> None:
    """Before: the wait for the ack processed all 5 messages at node2 (1.5 s) and returned."""
    runs: list[object] = []
    geode = slow_world(runs)
    for k in range(QUEUED):
        geode.send(Slow(k), source="node0", dest="node2")

    def call() -> None:
        if how == "send":
            geode.send(Slow("acked"), source="node0", dest="node2", ack=True, timeout=0.2)
        else:
            geode.isend(Slow("acked"), source="node0", dest="node2", ack=True).wait(timeout=0.2)

    took = timed(call, AckTimeout)
    assert runs == [0]
    assert took < QUEUED * SLOW  # (before: all of them ran)
    geode.close()


def test_a_receive_starts_no_handler_once_its_timeout_has_passed() -> None:
    """With another thread alive a receive waits, serving the requests and acked sends to
    this rank's nodes meanwhile. Before: it ran all 4 (1.2 s) before its timeout of 0.2 s."""
    runs: list[object] = []
    geode = slow_world(runs)
    go = threading.Event()
    other = threading.Thread(target=go.wait, args=(30,))  # (not a daemon: it could send)
    other.start()
    try:
        handles = [
            geode.isend(Slow(k), source="node0", dest="node2", ack=True) for k in range(QUEUED)
        ]
        took = timed(lambda: geode.receive("node0", timeout=0.2), ReceiveTimeout)
        assert runs == [0]
        assert took < QUEUED * SLOW  # (before: all of them ran)
        for handle in handles:  # the next waits serve the rest
            handle.wait(timeout=30)
        assert runs == list(range(QUEUED))
    finally:
        go.set()
        other.join(30)
    geode.close()


def test_run_names_a_late_reply_as_one_not_as_a_message_wanting_a_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: "dead letter: no handler for Message on node0: register one with
    @geode.on(Message)", for a reply whose request() had timed out."""
    geode = Geode(3)
    with pytest.raises(ReceiveTimeout) as caught:
        geode.request(Ask("q"), "node2", source="node0", timeout=0.1)  # node2: no handler
    asked = caught.value.reply_to
    geode.reply(geode.receive("node2"), 42)  # answered late
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        geode.run(timeout=10)
    [dead] = geode.dead_letters("node0")
    assert dead.message is not None and dead.message.data == 42
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        f"node0: dead letter: late reply from node2 to request {asked} of node0: its "
        "request() had stopped waiting (timed out, interrupted or cancelled); a receive() at node0 "
        f"before run() takes such a reply (reply_to={asked})"
    ]
    assert dead.error.startswith("TimeoutError: late reply from node2")
    assert "register" not in dead.error
    geode.close()


def test_short_runs_reach_the_nodes_after_a_slow_one() -> None:
    """A step stopped at its deadline resumes at the node where it stopped: before, every
    `run(timeout=)` began again at the first node, whose slow handler used the whole timeout,
    and six calls processed nothing at node2 (a review of the deadline change)."""
    done = {"node1": 0, "node2": 0}
    geode = Geode(3)

    @geode.on(Slow, node="node1")
    def slow(msg: Message) -> None:
        done["node1"] += 1
        time.sleep(SLOW)

    @geode.on(Ask, node="node2")
    def fast(msg: Message) -> None:
        done["node2"] += 1

    try:
        for k in range(10):
            geode.send(Slow(k), source="node0", dest="node1")
        for k in range(3):
            geode.send(Ask(k), source="node0", dest="node2")
        for _ in range(6):
            geode.run(timeout=SLOW / 3, quiescent=False)
        assert done["node2"] >= 2, done
    finally:
        geode.run(timeout=30.0)
        geode.close()


def test_a_zero_timeout_still_starts_one_handler_run() -> None:
    """`run(timeout=0)` between compute steps, a poll: a wait past its deadline still starts
    its first handler run (with the deadline applied from the start, it processed nothing, ever)."""
    runs: list[object] = []
    geode = slow_world(runs)
    try:
        for k in range(3):
            geode.send(Ask(k), source="node0", dest="node2")
        assert geode.run(timeout=0, quiescent=False).processed == 1
        assert runs == [0]
        assert geode.request(Ask(9), "node2", source="node0", timeout=30.0).data == "answer"
    finally:
        geode.run(timeout=30.0)
        geode.close()
