"""Unsubscribing and subscribing again, in one process: acks, each message once, capacity."""

from __future__ import annotations

from pathlib import Path

import pytest

from geode_mpi import Geode, Message, QueueConfig, QueueFull, ReceiveTimeout


def everything(geode: Geode, node: str) -> list[Message]:
    got = []
    while (msg := geode.try_receive(node)) is not None:
        got.append(msg)
    return got


@pytest.mark.parametrize("taken", ["after", "never"])
def test_an_acked_publish_completes_once_the_subscribers_left_processed_it(taken: str) -> None:
    """node2 unsubscribes with the message still queued: the handle waited for its ack forever
    (it held node2's pair, whose outbox nothing cleared), whether node2 took it or not."""
    geode = Geode()
    topic = geode.topic("t", publishers=["node0"], subscribers=["node1", "node2"])
    handle = topic.publish("m", source="node0", ack=True)
    topic.unsubscribe("node2")
    assert not handle.acked  # node1 has not processed it
    assert geode.receive("node1", timeout=1).data == "m"
    if taken == "after":
        assert geode.receive("node2", timeout=1).data == "m"  # it kept what was queued
    handle.wait(timeout=5)
    assert handle.acked and geode.stats("node0").unacked == 0


def test_a_node_that_subscribes_again_gets_each_message_once() -> None:
    """It had 0..2 (retained: 1, 2); unsubscribed, subscribed again: 1 and 2 came again, same
    ids. Now only what it did not have: the retained ones published while it was away."""
    geode = Geode()
    log = geode.topic("log", publishers=["node0"], subscribers=["node3"], retain=2)
    for k in range(3):
        log.publish(k, source="node0")
    got = [geode.receive("node3", timeout=1) for _ in range(3)]
    log.unsubscribe("node3")
    log.subscribe("node3")  # the replay of 1 and 2: it has them
    log.publish(3, source="node0")
    got += everything(geode, "node3")
    log.unsubscribe("node3")
    for k in range(4, 9):
        log.publish(k, source="node0")  # 4..6 never reach it; 7 and 8 are retained
    log.subscribe("node3")
    handle = log.publish(9, source="node0", ack=True)
    got += everything(geode, "node3")
    handle.wait(timeout=5)  # its ack, past the gap
    assert [m.data for m in got] == [0, 1, 2, 3, 7, 8, 9]
    assert len({m.id for m in got}) == len(got)
    assert geode.stats("node3").duplicates == 0 and geode.stats("node0").unacked == 0


def test_messages_still_queued_across_gaps_are_processed_and_acked_in_order() -> None:
    """Two rounds away while the first messages wait in the queue: the numbers it missed are
    passed over as processed (once the ones before them are), so later messages are acked as
    a range again, nothing is held back or acked twice."""
    geode = Geode()
    log = geode.topic("log", publishers=["node0"], subscribers=["node1"], retain=1)
    for k in range(3):
        log.publish(k, source="node0", ack=True)
    for away in (range(3, 7), range(8, 10)):
        log.unsubscribe("node1")
        for k in away:
            log.publish(k, source="node0")
        log.subscribe("node1")  # the last one published while away comes as retained
        log.publish(away[-1] + 1, source="node0", ack=True)
    assert [m.data for m in everything(geode, "node1")] == [0, 1, 2, 6, 7, 9, 10]
    geode.flush()
    geode.pending()
    assert geode.stats("node0").unacked == 0
    pair = geode._runtime.engine.pairs_in[(next(iter(log.numbers)), 1)]
    assert (pair.done_below, pair.done_extra, pair.skips) == (11, set(), {})
    log.publish(11, source="node0", ack=True)
    assert geode.receive("node1", timeout=1).data == 11
    assert pair.done_below == 12 and not pair.done_extra


def test_a_queue_s_capacity_holds_across_unsubscribe_and_subscribe() -> None:
    """capacity=2, full: subscribing again gave the publisher a fresh window of 2 while the two
    were still queued (6 queued after three rounds), and their credits went to the new pair."""
    geode = Geode(queues={"node2": QueueConfig(capacity=2, policy="raise", window=2)})
    topic = geode.topic("t", publishers=["node0"], subscribers=["node2"])
    for k in range(2):
        topic.publish(k, source="node0")
    with pytest.raises(QueueFull):
        topic.publish("no room", source="node0")
    topic.unsubscribe("node2")
    topic.subscribe("node2")
    with pytest.raises(QueueFull):
        topic.publish("still no room", source="node0")
    assert geode.receive("node2", timeout=1).data == 0
    topic.publish(2, source="node0")  # the room it made, once
    with pytest.raises(QueueFull):
        topic.publish("full again", source="node0")
    assert [m.data for m in everything(geode, "node2")] == [1, 2]
    for k in (3, 4):
        topic.publish(k, source="node0")
    assert [m.data for m in everything(geode, "node2")] == [3, 4]


def test_a_checkpoint_keeps_a_rejoined_subscriber_s_place(tmp_path: Path) -> None:
    """Saved while node1 was back but had not had its next message yet, with a gap behind
    messages still queued: a restart delivers each message once and acks past the gap."""
    nodes = ["node0", "node1"]
    geode = Geode(nodes, checkpoint_dir=tmp_path)
    log = geode.topic("log", publishers=["node0"], subscribers=["node1"])
    log.publish(0, source="node0", ack=True)
    log.unsubscribe("node1")
    log.publish(1, source="node0")
    log.publish(2, source="node0")
    log.subscribe("node1")
    log.publish(3, source="node0")  # it resumes here, 0 still queued: 1..2 passed over later
    log.unsubscribe("node1")
    for k in (4, 5, 6):
        log.publish(k, source="node0")
    log.subscribe("node1")  # back, nothing retained: its next message says where it resumes
    geode.checkpoint()
    geode.close()
    geode = Geode(nodes, checkpoint_dir=tmp_path, restart=True)
    log = geode.topic("log", publishers=["node0"], subscribers=["node1"])
    handle = log.publish(7, source="node0", ack=True)
    assert [m.data for m in everything(geode, "node1")] == [0, 3, 7]
    handle.wait(timeout=5)
    with pytest.raises(ReceiveTimeout):
        geode.receive("node1", timeout=0.01)
    assert geode.stats("node1").duplicates == 0 and geode.stats("node0").unacked == 0
    pair = geode._runtime.engine.pairs_in[(next(iter(log.numbers)), 1)]
    assert pair.done_below == 8 and not pair.done_extra and not pair.skips
    geode.close()
