"""A handler that a close() in another thread interrupts (its next call raises ClosedError),
in the embedded world: not a failure, its message back in the queue, and the reports say so."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from geode_mpi import ClosedError, Geode, Message, QueueConfig

TIMEOUT = 30.0


class Job(Message):
    pass


@pytest.mark.parametrize("attempts", [3, 1])
def test_a_handler_interrupted_by_close_is_no_failure_and_loses_nothing(
    attempts: int, caplog: pytest.LogCaptureFixture
) -> None:
    """It was a failed attempt: counted a retry (stats().retries 1, back-off before it was
    receivable), with one attempt it went to the dead letters, and close() warned that it was
    taken with an explicit ack and never acked ("call msg.ack()"), which run() never asks."""
    g = Geode(queues={"node1": QueueConfig(max_attempts=attempts)})
    caplog.set_level(logging.WARNING, logger="geode_mpi")
    error = _interrupt(g, lambda: None)
    assert isinstance(error, ClosedError) and error.closer == "closer"
    stats = g.stats("node1")
    assert (stats.retries, stats.dead_letters, stats.processed) == (0, 0, 0)
    assert g.dead_letters("node1") == []
    assert g.pending("node1") == 1
    again = g.receive("node1", timeout=0)  # at once: no retry's back-off
    assert (again.type, again.data) == ("Job", 1)
    text = caplog.text
    assert "neither acked nor nacked" not in text
    assert "messages were still in a handler in another thread: node1: 1" in text
    assert (
        "node1: the handler of message 0 (Job) from node0 was interrupted by close() in "
        "thread 'closer'"
    ) in text
    assert "not a failure; the message is back in node1's queue" in text


def test_a_handler_failing_on_its_own_is_still_a_failure() -> None:
    """A ClosedError of the handler's own close() is its own doing: a failed attempt."""
    g = Geode(queues={"node1": QueueConfig(max_attempts=1)})

    @g.on(Job, node="node1")
    def handle(message: Message) -> None:
        raise ClosedError("send")

    g.send(Job(1), "node0", "node1")
    summary = g.run("node1", count=1, timeout=TIMEOUT)
    assert (summary.failed, summary.dead_letters) == (1, 1)
    g.close()


def _interrupt(g: Geode, before: Any, meanwhile: Any = None) -> Any:
    """run() node1 in a thread with a Job handler that calls ``before()``, then waits while
    close() in another thread begins (and ``meanwhile()`` runs in this one), and then sends
    (ClosedError). What run() returned or raised."""
    inside, resume = threading.Event(), threading.Event()
    ended: list[Any] = []

    @g.on(Job, node="node1")
    def handle(message: Message) -> None:
        before()
        inside.set()
        assert resume.wait(TIMEOUT)
        g.send("late", "node1", "node2")  # the Geode closed meanwhile: ClosedError

    def runner() -> None:
        try:
            ended.append(g.run("node1", timeout=TIMEOUT))
        except ClosedError as exc:
            ended.append(exc)

    g.send(Job(1), "node0", "node1")
    thread = threading.Thread(target=runner, name="runner")
    thread.start()
    assert inside.wait(TIMEOUT)
    if meanwhile is not None:
        meanwhile()
    closer = threading.Thread(target=g.close, name="closer")
    closer.start()
    closer.join(TIMEOUT)
    resume.set()
    thread.join(TIMEOUT)
    assert not thread.is_alive() and not closer.is_alive()
    [outcome] = ended
    return outcome


@pytest.mark.parametrize("how", ["send", "publish"])
def test_a_handler_that_sent_as_another_node_is_not_put_back(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """It sent (or published) as node3, not its own node1: only node1's messages counted,
    so the message was put back as if the handler had done nothing ("before it sent,
    published or replied"), to be handled again: the side effect twice."""
    g = Geode()
    topic = g.topic("effects", publishers=["node3"], subscribers=["node2"])

    def before() -> None:
        if how == "send":
            g.send("side effect", "node3", "node2")
        else:
            topic.publish("side effect", source="node3")

    caplog.set_level(logging.WARNING, logger="geode_mpi")
    summary = _interrupt(g, before)
    assert (summary.failed, summary.dead_letters) == (1, 1)
    assert g.pending("node1") == 0
    [dead] = g.dead_letters("node1")
    assert (dead.message.type, dead.message.data) == ("Job", 1)
    assert "after it sent, published or replied: a dead letter" in caplog.text


def test_what_another_thread_sends_meanwhile_is_not_the_handlers() -> None:
    """Another thread sent as node1 while node1's handler waited: counted as the handler's,
    the message was dead-lettered though the handler had done nothing."""
    g = Geode()
    error = _interrupt(g, lambda: None, lambda: g.send("mine", "node1", "node2"))
    assert isinstance(error, ClosedError) and error.closer == "closer"
    assert g.dead_letters("node1") == []
    again = g.receive("node1", timeout=0)
    assert (again.type, again.data) == ("Job", 1)


def test_a_message_put_back_and_taken_again_returns_its_credit_once() -> None:
    """node1's queue has a window: taking the message returned its credit to node0. Put back
    untried (its attempts still 0), taking it again returned a second one: node0's window
    grew by one message for every interrupted handler (the queue could overrun its capacity)."""
    g = Geode(queues={"node1": QueueConfig(capacity=8, policy="raise", window=2)})
    _interrupt(g, lambda: None)
    again = g.receive("node1", timeout=0)
    assert (again.type, again.data) == ("Job", 1)
    assert g._runtime.engine.pairs_in[(0, 1)].taken == 1  # (sent to node0 in its ack records)
