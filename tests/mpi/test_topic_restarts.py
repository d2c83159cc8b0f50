"""Topics across checkpoints and restarts at 1, 2 and 4 ranks: a restarted topic() is checked
against the checkpoint (its publishers, sequencer, retain and place among the job's topics)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_credits import four_or_more

from geode_mpi import Geode, QueueConfig
from geode_mpi.persistence import CheckpointError

TIMEOUT = 20.0


def test_a_restart_with_other_topic_arguments_says_what_was_saved(directory: Path) -> None:
    """A restart's topic() with its publishers in another order was taken silently (each
    publisher continued the other's numbering: a subscriber saw node0's seq 0, 1, 1 and a late
    subscriber the wrong retained messages); with the topics made in another order it failed
    with a bare KeyError from inside, leaving a half-made topic."""
    first = Geode(checkpoint_dir=directory)
    nodes = list(first.nodes)
    a = first.topic("A", nodes[:2], [nodes[-1]], retain=2)
    b = first.topic("B", nodes[:1], [nodes[-1]], retain=2)
    for k in range(2):
        if first.hosts(nodes[0]):
            a.publish(("A", nodes[0], k), source=nodes[0])
            b.publish(("B", k), source=nodes[0])
    if first.hosts(nodes[1]):
        a.publish(("A", nodes[1], 0), source=nodes[1])
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, restart=True)
    with pytest.raises(CheckpointError) as caught:
        second.topic("A", [nodes[1], nodes[0]], [nodes[-1]], retain=2)
    assert str(caught.value) == (
        f"topic 'A': restarted with publishers={[nodes[1], nodes[0]]!r}, but the checkpoint "
        f"saved it with publishers={nodes[:2]!r}: restart with the same arguments"
    )
    with pytest.raises(CheckpointError, match=r"topic 'A': restarted with retain=5, but .*=2:"):
        second.topic("A", nodes[:2], [nodes[-1]], retain=5)
    with pytest.raises(
        CheckpointError,
        match=r"topic 'A': restarted with sequencer='node0', but the checkpoint saved it "
        r"with sequencer=None \(no total order\)",
    ):
        second.topic("A", nodes[:2], [nodes[-1]], retain=2, total_order=True)
    with pytest.raises(
        CheckpointError,
        match=r"topic 'B': restarted as the job's topic 1 \(stream\(s\) \[\d+\]\), but the "
        r"checkpoint saved it as its topic 2 .*: make the topics and work queues in the same "
        r"order as before the checkpoint",
    ):
        second.topic("B", nodes[:1], [nodes[-1]], retain=2)
    # Nothing half made: the same arguments, in the same order, continue the saved topics.
    a = second.topic("A", nodes[:2], [nodes[-1]], retain=2)
    b = second.topic("B", nodes[:1], [nodes[-1]], retain=2)
    if second.hosts(nodes[1]):
        a.publish(("A", nodes[1], 1), source=nodes[1])
    if second.hosts(nodes[-1]):
        got = []
        for _ in range(4):
            msg = second.receive(nodes[-1], topic="A", timeout=TIMEOUT)
            got.append((msg.source, msg.seq, msg.data))
        assert sorted(got) == [
            (nodes[0], 0, ("A", nodes[0], 0)),
            (nodes[0], 1, ("A", nodes[0], 1)),
            (nodes[1], 0, ("A", nodes[1], 0)),
            (nodes[1], 1, ("A", nodes[1], 1)),
        ]
        taken = [second.receive(nodes[-1], topic="B", timeout=TIMEOUT).data for _ in range(2)]
        assert taken == [("B", 0), ("B", 1)]
    second.close(timeout=TIMEOUT)


def test_a_restart_without_a_work_queue_made_before_a_topic_says_so(directory: Path) -> None:
    """Before: a topic whose place among the topics was the saved one but whose stream was
    not (a work queue made before it then, not now) was said as `restarted as the job's
    topic 2 (stream(s) [N]), but the checkpoint saved it as its topic 2 (stream(s) [N+1])`,
    the same topic twice and no cause (a soak probe's restart after its executors)."""
    first = Geode(checkpoint_dir=directory)
    nodes = list(first.nodes)
    first.topic("A", nodes[:1], [nodes[-1]])
    first.work_queue("jobs", [nodes[-1]])
    first.topic("B", nodes[:1], [nodes[-1]])
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, restart=True)
    second.topic("A", nodes[:1], [nodes[-1]])
    with pytest.raises(CheckpointError) as caught:
        second.topic("B", nodes[:1], [nodes[-1]])
    base = len(nodes) + (1 << 20)
    assert str(caught.value) == (
        f"topic 'B': restarted as the job's topic 2 on stream(s) [{base + 1}], but the "
        f"checkpoint saved it as that topic on stream(s) [{base + 2}]: streams are numbered in "
        "the order topics and work queues are made (a topic has one per publisher, or one "
        "with a sequencer; a work queue one; an executor none), and 1 were numbered before it "
        "now, 2 before the checkpoint: a topic or work queue made before it then is not made "
        "again before it now. Make the same topics and work queues, in the same order, as "
        "before the checkpoint"
    )
    second.work_queue("jobs", [nodes[-1]])
    second.topic("B", nodes[:1], [nodes[-1]])
    second.close(timeout=TIMEOUT)


def test_what_a_sequencer_holds_for_a_full_subscriber_survives_restarts(directory: Path) -> None:
    """A total-order topic's sequencer holding messages for want of room at a subscriber
    kept them in memory only: a restart lost them without a word (its pair had counted them
    received, so a resend was dropped as a duplicate and never acknowledged)."""
    nodes = [f"node{k}" for k in range(four_or_more())]  # (4, or one a rank beyond 4 ranks)
    publishers, subscriber = nodes[:2], nodes[3]
    room = len(nodes)  # (a capacity no smaller than the number of nodes)
    bounded = {subscriber: QueueConfig(capacity=room, policy="block")}
    first = Geode(nodes, checkpoint_dir=directory, queues=bounded)
    topic = first.topic("to", publishers, [subscriber], total_order=True)
    if first.hosts(nodes[1]):
        for k in range(room + 3):
            topic.publish(k, source=nodes[1], timeout=TIMEOUT)
    first.checkpoint()  # `room` in the subscriber's queue, 3 held by the sequencer, node0
    first.close(timeout=TIMEOUT)

    # Restarted, nothing taken, checkpointed again: what the sequencer holds is still saved.
    second = Geode(nodes, checkpoint_dir=directory, queues=bounded, restart=True)
    second.topic("to", publishers, [subscriber], total_order=True)
    second.checkpoint()
    second.close(timeout=TIMEOUT)

    third = Geode(nodes, checkpoint_dir=directory, queues=bounded, restart=True)
    again = third.topic("to", publishers, [subscriber], total_order=True)
    if third.hosts(subscriber):
        got = [third.receive(subscriber, topic=again, timeout=TIMEOUT) for _ in range(room + 3)]
        assert [(msg.data, msg.seq, msg.origin) for msg in got] == [
            (k, k, nodes[1]) for k in range(room + 3)
        ]
        assert third.try_receive(subscriber) is None
    third.close(timeout=TIMEOUT)
    if third.hosts(nodes[1]):  # every one delivered, and acknowledged to its publisher
        assert third.stats(nodes[1]).unacked == 0


def test_a_checkpoint_before_a_restored_topic_is_made_again_says_so(directory: Path) -> None:
    """A checkpoint after a restart, before the job made its topic again, saved the topic's
    pairs but not its numbering: restarted from it, the topic began at seq 0 again and its
    subscriber dropped the new messages as duplicates (lost silently)."""
    first = Geode(checkpoint_dir=directory)
    nodes = list(first.nodes)
    topic = first.topic("T", nodes[:1], [nodes[-1]])
    if first.hosts(nodes[0]):
        for k in range(2):
            topic.publish(k, source=nodes[0])
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, restart=True)
    with pytest.raises(CheckpointError, match=r"topic 'T' of checkpoint 1 \(restarted from\) "):
        second.checkpoint()
    topic = second.topic("T", nodes[:1], [nodes[-1]])  # then made again: checkpoints go on
    assert second.checkpoint() == 3  # (epoch 2 failed, and is never reused)
    if second.hosts(nodes[0]):
        topic.publish(2, source=nodes[0])
    if second.hosts(nodes[-1]):
        got = [second.receive(nodes[-1], topic="T", timeout=TIMEOUT) for _ in range(3)]
        assert [(msg.seq, msg.data) for msg in got] == [(0, 0), (1, 1), (2, 2)]
    second.close(timeout=TIMEOUT)


def test_close_names_a_total_order_topic_never_made_again_on_every_rank(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Restarted, the job never made a total-order topic again: close() on the sequencer's
    rank named it "(number 4)" when no subscriber of it was on that rank (the engine knew
    its name only from messages restored into a local queue); the checkpoint's topics name
    it on every rank."""
    with Geode(nodes=four_or_more()) as probe:
        nodes = list(probe.nodes)
        sequencer = nodes[0]
        # the subscriber on another rank than the sequencer's, if there is one
        others = [node for node in nodes if probe.rank_of(node) != probe.rank_of(sequencer)]
        subscriber = others[0] if others else nodes[1]
        publisher = next(node for node in nodes if node not in (sequencer, subscriber))
    room = len(nodes)  # (a capacity no smaller than the number of nodes)
    bounded = {subscriber: QueueConfig(capacity=room, policy="block")}
    first = Geode(nodes, checkpoint_dir=directory, queues=bounded)
    topic = first.topic("to", [publisher], [subscriber], total_order=True, sequencer=sequencer)
    if first.hosts(publisher):
        for k in range(room + 3):
            topic.publish(k, source=publisher, timeout=TIMEOUT)
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(nodes, checkpoint_dir=directory, queues=bounded, restart=True)
    caplog.clear()  # (the first close's report: held for want of room, rightly)
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        second.close(timeout=TIMEOUT)
    text = " ".join(record.getMessage() for record in caplog.records)
    if second.hosts(sequencer):
        assert "a total-order topic this rank never made again ('to')" in text, text
        assert "number" not in text, text


def test_a_topic_and_a_work_queue_named_with_a_slash_checkpoint_and_restart(
    directory: Path,
) -> None:
    """Their names were the checkpoint's keys, which could not hold a '/': every checkpoint
    failed on every rank ("checkpoint key 'sim/temp' must be a non-empty str without '/'")."""
    first = Geode(checkpoint_dir=directory)
    nodes = list(first.nodes)
    publisher, subscriber = nodes[0], nodes[-1]
    temps = first.topic("sim/temp", [publisher], [subscriber], retain=1)
    jobs = first.work_queue("jobs/1", [subscriber], producers=[publisher])
    if first.hosts(publisher):
        for k in range(2):
            temps.publish(k, source=publisher)
            jobs.put(k, source=publisher)
    if first.hosts(subscriber):
        assert first.receive(subscriber, topic="sim/temp", timeout=TIMEOUT).data == 0
        assert jobs.get(subscriber, timeout=TIMEOUT).data == 0
    assert first.checkpoint(timeout=TIMEOUT) == 1
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, restart=True)
    temps = second.topic("sim/temp", [publisher], [subscriber], retain=1)
    jobs = second.work_queue("jobs/1", [subscriber], producers=[publisher])
    if second.hosts(publisher):
        temps.publish(2, source=publisher)
    if second.hosts(subscriber):
        got = [second.receive(subscriber, topic="sim/temp", timeout=TIMEOUT) for _ in range(2)]
        assert [(msg.topic, msg.seq, msg.data) for msg in got] == [
            ("sim/temp", 1, 1),
            ("sim/temp", 2, 2),
        ]
        task = jobs.get(subscriber, timeout=TIMEOUT)
        assert (task.work_queue, task.data) == ("jobs/1", 1)
    assert second.checkpoint(timeout=TIMEOUT) == 2
    second.close(timeout=TIMEOUT)


def test_a_restart_after_a_subscriber_came_back_still_ends_by_quiescence(directory: Path) -> None:
    """The replayed copies that a subscriber which came back had and skipped are counted for
    quiescence (its publisher counted them resent, and `stats` are saved): saved with the
    checkpoint too, else a restarted job's quiescent run() never ends."""
    first = Geode(checkpoint_dir=directory)
    nodes = list(first.nodes)
    pub, sub = nodes[0], nodes[-1]
    subs = list(dict.fromkeys([pub, sub]))  # (one node at 1 rank)
    log = first.topic("log", [pub], subs, retain=2)
    for k in range(2):
        if first.hosts(pub):
            log.publish(k, source=pub)
    for node in subs:
        if first.hosts(node):
            assert [first.receive(node, timeout=TIMEOUT).data for _ in range(2)] == [0, 1]
    log.unsubscribe(sub)
    log.subscribe(sub)  # the replay of 0 and 1: it has them
    assert first.run(timeout=TIMEOUT).reason == "quiescent"
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, restart=True)
    second.topic("log", [pub], subs, retain=2)
    assert second.run(timeout=TIMEOUT).reason == "quiescent"
    if second.hosts(pub):
        assert second.stats(pub).resent == 2  # (restored)
    second.close(timeout=TIMEOUT)
