"""Delivery and processing as a user meets them in the embedded world: settings, errors, loops."""

from __future__ import annotations

import time

import pytest

from geode_mpi import (
    AckTimeout,
    Geode,
    Message,
    QueueConfig,
    QueueFull,
    ReceiveTimeout,
)
from geode_mpi.core.processing import Stop


class Job(Message):
    pass


class SubJob(Job):
    pass


@pytest.mark.parametrize(
    ("settings", "error", "text"),
    [
        ({"capacity": 0}, ValueError, "capacity must be >= 1 (or None for no limit), got 0"),
        ({"capacity": 2.5}, TypeError, "capacity must be an int or None, got 2.5"),
        ({"policy": "wait"}, ValueError, "policy must be one of block, raise, drop_oldest"),
        ({"ack": "manual"}, ValueError, "ack must be one of auto, explicit, got 'manual'"),
        ({"max_attempts": 0}, ValueError, "max_attempts must be >= 1, got 0"),
        ({"retry_delay": -1}, ValueError, "retry_delay must be >= 0, got -1"),
        ({"window": 0}, ValueError, "window must be >= 1, got 0"),
    ],
)
def test_bad_queue_settings_are_named(settings: dict, error: type, text: str) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(").replace(")", r"\)")):
        QueueConfig(**settings)


def test_retry_delay_doubles_to_its_cap_for_any_attempt_count() -> None:
    # A queue that allows thousands of attempts: past ~1,075 failures an int power of two
    # overflowed converting to float (OverflowError from a message's next retry).
    config = QueueConfig(retry_delay=0.01, max_attempts=5000)
    assert [config.delay(n) for n in (1, 2, 3)] == [0.01, 0.02, 0.04]
    assert config.delay(1100) == config.delay(4999) == 1.0
    assert QueueConfig(retry_delay=0, max_attempts=5000).delay(4999) == 0.0


def test_queue_overrides_name_their_node() -> None:
    with pytest.raises(Exception, match="unknown queues key 'node9'"):
        Geode(queues={"node9": QueueConfig()})
    geode = Geode(queues={"node1": QueueConfig(capacity=4, policy="raise")})
    for _ in range(1):  # 4 // 4 nodes: one message per sending node
        geode.send("ok", "node0", "node1")
    with pytest.raises(QueueFull, match="node1's queue is full for node0 \\(capacity 4"):
        geode.send("one too many", "node0", "node1")
    geode.send("other nodes are not limited", "node0", "node2")
    assert geode.receive("node1").data == "ok"
    geode.send("room again", "node0", "node1")


def test_block_in_one_process_raises_instead_of_hanging() -> None:
    geode = Geode(queue=QueueConfig(capacity=4))
    geode.send(1, "node0", "node1")
    with pytest.raises(QueueFull, match="in a one-process world nothing can take from node1"):
        geode.send(2, "node0", "node1")


def test_drop_oldest_keeps_the_newest_and_counts_the_rest() -> None:
    geode = Geode(queue=QueueConfig(capacity=3, policy="drop_oldest"))
    for k in range(10):
        geode.send(k, "node0", "node1")
    assert [geode.receive("node1").data for _ in range(3)] == [7, 8, 9]
    stats = geode.stats("node1")
    assert (stats.dropped, stats.received, stats.processed, stats.queue_peak) == (7, 10, 10, 3)
    assert geode.stats("node0").unacked == 0  # dropped ones are acknowledged: none kept forever


def test_receive_in_timestamp_or_id_order() -> None:
    geode = Geode()
    geode.send("late", "node2", "node0")
    geode.send("early", "node1", "node0", timeout=1)
    # Arrival order is node2 first; by id, node1's (index 1 in the high bits) comes first.
    assert geode.receive("node0", order="id").data == "early"
    assert geode.receive("node0", order="timestamp").data == "late"
    with pytest.raises(ValueError, match="order must be one of arrival, timestamp, id"):
        geode.receive("node0", order="size")


def test_an_ack_wait_in_one_process_fails_at_once_with_the_reason() -> None:
    geode = Geode()
    started = time.monotonic()
    with pytest.raises(AckTimeout, match="in a one-process world nothing takes it from node3"):
        geode.send("x", "node0", "node3", ack=True)
    assert time.monotonic() - started < 1
    geode.receive("node3")
    stats = geode.stats("node0")
    assert (stats.sent, stats.acked, stats.unacked) == (1, 1, 0)


def test_handlers_pick_the_most_specific_class_then_per_node_ones_first() -> None:
    geode = Geode()
    calls: list[str] = []
    geode.on(Job)(lambda msg: calls.append(f"job {msg.data}"))
    geode.on(SubJob)(lambda msg: calls.append(f"sub {msg.data}"))
    geode.on("Job", node="node2")(lambda msg: calls.append(f"node2 {msg.data}"))
    geode.send(Job(1), "node0", "node1")
    geode.send(SubJob(2), "node0", "node1")
    geode.send(SubJob(3), "node0", "node2")  # the global SubJob beats node2's own Job handler
    geode.send(Job(4), "node0", "node2")  # node2's own Job handler beats the global Job
    summary = geode.run()
    assert sorted(calls) == ["job 1", "node2 4", "sub 2", "sub 3"]
    assert (summary.processed, summary.reason) == (4, "quiescent")
    with pytest.raises(TypeError, match="on\\(\\) takes a Message subclass or a class name"):
        geode.on(42)(print)  # type: ignore[arg-type]


def test_run_ends_on_count_until_stop_and_timeout() -> None:
    geode = Geode()
    geode.on(Job)(lambda msg: None)
    for k in range(5):
        geode.send(Job(k), "node0", "node1")
    assert geode.run("node1", count=2).reason == "count"
    assert geode.pending("node1") == 3
    assert geode.run("node1", until=lambda: geode.pending("node1") == 1).reason == "until"
    geode.stop("node1", source="node0")
    summary = geode.run("node1", timeout=5)
    assert (summary.reason, summary.processed) == ("stopped", 1)
    assert geode.run("node1", timeout=0.05, quiescent=False).reason == "timeout"
    geode.send(Stop(), "node0", "node1")
    assert geode.receive("node1").type == "Stop"  # a plain receive just gets it


def test_a_handler_reply_and_request_in_one_process() -> None:
    geode = Geode()
    geode.on(Job)(lambda msg: {"double": msg.data * 2})
    reply = geode.request(Job(21), "node3", timeout=5)
    assert reply.data == {"double": 42} and reply.source == "node3" and reply.dest == "node0"
    with pytest.raises(ReceiveTimeout, match="none can arrive"):
        geode.request(Message("nobody handles plain messages"), "node2", timeout=5)
    # Without a handler for it, a request waits for a receive (and a reply() by hand), as it
    # does on a rank of its own: it is not dead-lettered behind the code's back.
    assert geode.dead_letters("node2") == []
    request = geode.receive("node2")
    geode.reply(request, "by hand")
    assert geode.receive("node0").data == "by hand"


def test_exactly_once_with_resends_on_a_lossless_transport() -> None:
    geode = Geode(resend_after=0.0)  # every poll resends everything not yet acknowledged
    geode.send("a", "node0", "node1")
    geode.pending("node1")  # resends once: a duplicate, dropped and counted
    assert geode.receive("node1").data == "a"
    assert geode.try_receive("node1") is None
    assert geode.stats("node1").duplicates >= 1
    assert geode.stats("node0").unacked == 0


@pytest.mark.parametrize("nodes", [2, 3, 5])
def test_a_group_keeps_its_one_order_at_the_sequencers_own_node(nodes: int) -> None:
    """Every 32nd send polls; a poll inside the sequencer's forward once forwarded the next
    message before the current one had reached every member, the sequencer's own node
    included (seen at 3 ranks as group_seq 15 before 14)."""
    geode = Geode(nodes)
    try:
        group = geode.group(geode.nodes, sequencer=geode.nodes[-1])
        per_node = 40
        for k in range(per_node):
            for node in geode.nodes:
                group.send({"k": k}, node)
        for node in geode.nodes:
            got = [geode.receive(node, timeout=5) for _ in range(per_node * nodes)]
            assert [msg.group_seq for msg in got] == list(range(per_node * nodes)), node
            for origin in geode.nodes:
                assert [m.data["k"] for m in got if m.origin == origin] == list(range(per_node))
    finally:
        geode.close()
