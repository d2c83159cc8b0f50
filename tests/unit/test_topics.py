"""Topics and work queues in one process: simulated ranks, guarantees, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from geode_mpi import (
    AckTimeout,
    ClosedError,
    DecodeError,
    Geode,
    GeodeError,
    Message,
    QueueConfig,
    QueueFull,
    ReceiveTimeout,
    Topic,
    UnknownNodeError,
    WorldMismatchError,
)
from geode_mpi.transport import InProcHub


def two_ranks(**options: object) -> tuple[Geode, Geode]:
    hub = InProcHub(2)
    a, b = (Geode(transport=hub.endpoint(rank), **options) for rank in range(2))  # type: ignore[arg-type]
    return a, b


def test_a_publish_reaches_subscribers_on_both_simulated_ranks() -> None:
    a, b = two_ranks()
    topics = [g.topic("t", publishers=["node0"], subscribers=["node0", "node1"]) for g in (a, b)]
    handle = topics[0].publish(np.arange(4.0))
    assert handle.local and not topics[1].publish("x", source="node0").local
    for geode, node in ((a, "node0"), (b, "node1")):
        msg = geode.receive(node, topic="t")
        assert (msg.topic, msg.source, msg.dest, msg.seq) == ("t", "node0", node, 0)
        assert np.array_equal(msg.data, np.arange(4.0))
    assert a.stats().sent == 2 and b.stats().received == 1


def test_acks_come_from_every_subscriber() -> None:
    a, b = two_ranks()
    topics = [g.topic("t", publishers=["node0"], subscribers=["node0", "node1"]) for g in (a, b)]
    handle = topics[0].publish("needs both", ack=True)
    assert handle is not None and not handle.acked
    a.receive("node0")
    a.flush()
    assert not handle.acked  # node1 has not processed it yet
    b.receive("node1")
    b.flush()
    a.pending()
    assert handle.acked and a.stats().unacked == 0


def test_an_unacked_publish_times_out_naming_the_topic() -> None:
    geode = Geode()
    topic = geode.topic("slow", publishers=["node0"], subscribers=["node1"])
    handle = topic.publish("never taken", ack=True)
    assert handle is not None
    with pytest.raises(AckTimeout, match="slow"):
        handle.wait(timeout=0.01)


def test_an_unacked_publish_names_the_subscribers_that_have_not_processed_it() -> None:
    """Not the topic as if it were a node ("t has not processed it", "no handler for it on
    t"): the subscribers still to process it, and the topic as the topic."""
    a, b = two_ranks()
    topics = [g.topic("t", publishers=["node0"], subscribers=["node0", "node1"]) for g in (a, b)]
    handle = topics[0].publish("x", ack=True)
    a.receive("node0")  # processed by node0: node1 is left
    with pytest.raises(AckTimeout) as err:
        handle.wait(timeout=0.05)
    assert (err.value.dest, err.value.topic) == ("node1", "t")
    text = str(err.value)
    assert "(node0 on topic 't' seq 0)" in text and "from node1's queue" in text, text
    assert "no handler for it on node1;" in text and "t's queue" not in text
    geode = Geode()  # one process: nothing takes it while the wait waits
    topic = geode.topic("u", publishers=["node0"], subscribers=["node1", "node2"])
    with pytest.raises(AckTimeout) as err:
        topic.publish("y", ack=True).wait(timeout=5.0)
    assert (err.value.dest, err.value.topic) == ("node1, node2", "u")
    text = str(err.value)
    assert "nothing takes it from the queues of node1, node2" in text, text
    assert "no handler for it on node1, node2" in text and "on u;" not in text


def test_a_full_subscriber_queue_refuses_with_raise_and_drops_with_drop_oldest() -> None:
    geode = Geode(queue=QueueConfig(capacity=8, policy="raise"))
    topic = geode.topic("full", publishers=["node0"], subscribers=["node1", "node2"])
    for k in range(2):  # the window: capacity 8 // 4 nodes
        topic.publish(k)
    with pytest.raises(QueueFull, match="node1"):
        topic.publish(2)
    geode.receive("node1")
    geode.receive("node2")
    geode.flush()
    topic.publish(3)  # room again

    lossy = Geode(queue=QueueConfig(capacity=2, policy="drop_oldest"))
    feed = lossy.topic("feed", publishers=["node0"], subscribers=["node1"])
    for k in range(5):
        feed.publish(k)
    assert [lossy.receive("node1").data for _ in range(2)] == [3, 4]
    assert lossy.stats("node1").dropped == 3


def test_total_order_across_simulated_ranks() -> None:
    a, b = two_ranks()
    topics = [
        g.topic(
            "o", publishers=["node0", "node1"], subscribers=["node0", "node1"], total_order=True
        )
        for g in (a, b)
    ]
    topics[1].publish("from node1", source="node1")
    topics[0].publish("from node0", source="node0")
    a.pending()  # the sequencer (node0) forwards node1's message
    seen = [[m.data for m in iter(lambda g=g: g.try_receive(), None)] for g in (a, b)]
    assert seen[0] == seen[1] == ["from node0", "from node1"]


def test_topic_mistakes_are_named() -> None:
    geode = Geode()
    geode.topic("t", publishers=["node0"], subscribers=["node1"])
    with pytest.raises(ValueError, match="topic 't' already exists"):
        geode.topic("t", publishers=["node0"], subscribers=["node1"])
    with pytest.raises(UnknownNodeError, match="node9"):
        geode.topic("u", publishers=["node9"], subscribers=["node1"])
    with pytest.raises(ValueError, match="needs at least one publisher"):
        geode.topic("u", publishers=[], subscribers=["node1"])
    with pytest.raises(ValueError, match="retain must be an int >= 0, got -1"):
        geode.topic("u", publishers=["node0"], subscribers=["node1"], retain=-1)
    with pytest.raises(ValueError, match="subscribers must be distinct"):
        geode.topic("u", publishers=["node0"], subscribers=["node1", "node1"])
    # (it says why a topic may be missing: made on some ranks only, as a bcast's root)
    made_by_all = (
        r"no topic 'nope' in this job \(topics: t\); topic\(\) is collective: every rank "
        r"calls it for each topic, members or not, with the same arguments and in the same "
        r"order, before it receives from it \(a topic made only on the rank that publishes, "
        r"as a bcast's root, is missing on the others, and that rank waits in topic\(\)\)$"
    )
    with pytest.raises(ValueError, match=made_by_all):
        geode.receive("node1", topic="nope", timeout=0)
    with pytest.raises(ValueError, match="node2 is not a publisher of topic 'v'"):
        geode.topic("v", publishers=["node0"], subscribers=[]).publish("x", source="node2")
    geode.close()
    with pytest.raises(ClosedError):
        geode._channels.topics["t"].publish("late")


def test_ranks_that_disagree_about_a_topic_are_told() -> None:
    a, b = two_ranks()
    a.topic("t", publishers=["node0"], subscribers=["node1"])
    with pytest.raises(WorldMismatchError, match="topic 't'"):
        b.topic("t", publishers=["node1"], subscribers=["node1"])


def test_work_queue_mistakes_are_named() -> None:
    geode = Geode()
    geode.work_queue("w", consumers=["node1"])
    with pytest.raises(ValueError, match="work queue 'w' already exists"):
        geode.work_queue("w", consumers=["node1"])
    with pytest.raises(ValueError, match="prefetch must be an int >= 1, got 0"):
        geode.work_queue("x", consumers=["node1"], prefetch=0)
    with pytest.raises(ValueError, match="needs distinct consumers"):
        geode.work_queue("x", consumers=[])
    with pytest.raises(UnknownNodeError, match="node7"):
        geode.work_queue("x", consumers=["node7"])


def _voting(subscribers: list[str]) -> tuple[tuple[Geode, Geode], list[Topic]]:
    """Two simulated ranks of four nodes (node0, node2 on the first), a total-order topic
    sequenced by node0, and node1's publish on its way to it (forwarded at node0's next
    wait): nothing has forwarded it yet."""
    ranks = two_ranks(nodes=4)
    topics = [g.topic("v", ["node0", "node1"], subscribers, total_order=True) for g in ranks]
    topics[1].publish("before", source="node1")
    return ranks, topics


def _queued(geode: Geode) -> dict[str, list[object]]:
    return {
        n: [m.data for m in iter(lambda n=n: geode.try_receive(n), None)] for n in geode.local_nodes
    }


def test_close_forwards_a_publish_still_at_the_sequencer() -> None:
    """Before: close() never sent it on, and nobody got it, without a word."""
    (a, b), _ = _voting(["node2", "node3"])
    a.close()
    b.close()
    assert _queued(a) == {"node0": [], "node2": ["before"]}
    assert _queued(b) == {"node1": [], "node3": ["before"]}


@pytest.mark.parametrize("change", ["subscribe", "unsubscribe"])
def test_a_publish_at_the_sequencer_goes_out_before_the_membership_changes(change: str) -> None:
    """Before: forwarded after the change, to the new subscribers, after what the sequencer
    published later."""
    (a, b), topics = _voting(["node2"] if change == "subscribe" else ["node2", "node3"])
    for topic in topics:
        getattr(topic, change)("node3")
    topics[0].publish("after", source="node0")
    assert _queued(a) == {"node0": [], "node2": ["before", "after"]}
    assert _queued(b) == {"node1": [], "node3": ["after"] if change == "subscribe" else ["before"]}


def test_close_hands_out_a_task_still_at_the_dispatcher() -> None:
    """Before: a put from another rank that reached the dispatcher as close() began stayed
    there; now a consumer gets it (and taking it once closed asks for nothing more)."""
    a, b = two_ranks(nodes=4)
    queues = [g.work_queue("w", consumers=["node2", "node3"], dispatcher="node0") for g in (a, b)]
    queues[1].put("task", source="node1")
    a.close()
    b.close()
    got = [*_queued(a)["node2"], *_queued(b)["node3"]]
    assert got == ["task"]


def test_close_sends_on_a_group_message_still_at_the_sequencer() -> None:
    """Before: a group message that reached its sequencer's rank and was not yet sent on when
    close() came stayed there."""
    a, b = two_ranks(nodes=4)
    groups = [g.group(["node0", "node2", "node3"]) for g in (a, b)]
    groups[1].send("to all", source="node1")
    a.close()
    b.close()
    assert _queued(a) == {"node0": ["to all"], "node2": ["to all"]}
    assert _queued(b) == {"node1": [], "node3": ["to all"]}


def test_a_work_queue_spreads_tasks_and_ends_pull_loops() -> None:
    geode = Geode()
    queue = geode.work_queue("q", consumers=["node1", "node2"], producers=["node0"], prefetch=2)
    for k in range(6):
        queue.put(Message(k), source="node0")
    queue.finish(source="node0")
    first = queue.get("node1", timeout=1)
    assert first is not None and first.work_queue == "q" and first.source == "node0"
    rest = [t.data for n in ("node2", "node1") for t in iter(lambda n=n: queue.get(n), None)]
    assert sorted([first.data, *rest]) == list(range(6))
    assert queue.get("node1") is None and queue.get("node2") is None


def test_subscribers_change_many_times_in_the_embedded_world() -> None:
    """Each change is its own agreement: the in-process hub once compared every later change
    with the first one and raised WorldMismatchError at the second."""
    geode = Geode(3)
    topic = geode.topic("t", publishers=["node0"], subscribers=["node1"])
    for turn in range(3):
        topic.subscribe("node2")
        topic.publish(turn)
        topic.unsubscribe("node2")
        topic.publish(-turn - 1)
    got = [geode.receive("node2", timeout=1).data for _ in range(3)]
    assert got == [0, 1, 2]
    assert [geode.receive("node1", timeout=1).data for _ in range(6)] == [0, -1, 1, -2, 2, -3]
    geode.close()


def test_ranks_still_disagree_after_agreeing_once() -> None:
    a, b = two_ranks()
    a.topic("t", publishers=["node0"], subscribers=["node1"])
    b.topic("t", publishers=["node0"], subscribers=["node1"])
    a.topic("u", publishers=["node0"], subscribers=["node1"])
    with pytest.raises(WorldMismatchError, match="topic 'u'"):
        b.topic("u", publishers=["node1"], subscribers=["node1"])


@pytest.mark.parametrize("how", ["send", "send from this rank's node", "isend", "publish"])
def test_an_error_of_the_poll_after_a_publish_says_the_publish_went(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every 32nd send or publish polls after its message went. A send's poll error says so
    (`after_send`, the message given); a publish's said nothing (None): its caller could not
    tell it from a publish that never went, and would publish it again."""
    g = Geode()
    news = g.topic("news", publishers=["node0"], subscribers=["node1"])
    runtime = g._runtime
    g.send("first", dest="node1")  # (a lane to node1: a send from node0 takes its fast path)
    assert g.receive("node1", timeout=1).data == "first"
    every = 128 if how == "isend" else 32  # (a send joining a run polls on every 128th)
    while (runtime.sends + 1) % every:  # (an isend joins the run to node1 they open)
        g.isend("before", dest="node1") if how == "isend" else g.send("before", "node0", "node2")
    failure = GeodeError("the transport failed")

    def progress() -> bool:
        raise failure

    monkeypatch.setattr(runtime.engine.transport, "progress", progress)
    message = Message("the polling one")
    with pytest.raises(GeodeError) as err:
        if how == "send":
            g.send(message, "node0", "node1")
        elif how == "send from this rank's node":
            g.send(message, dest="node1")
        elif how == "isend":
            g.isend(message, dest="node1")
        else:
            news.publish(message)
    assert err.value is failure and err.value.after_send is message
    monkeypatch.undo()
    got = [g.receive("node1", timeout=1).data]
    while (more := g.try_receive("node1")) is not None:
        got.append(more.data)
    assert got[-1] == "the polling one"  # it went
    g.close()


@pytest.mark.parametrize("kind", ["other error", "decode error"])
def test_a_total_order_publish_from_a_non_sequencer_polls_like_a_publish(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """publish() says: an error of its every-32nd poll has the message as given in
    after_send, and an arrival it cannot read is raised by the next call, not by the publish,
    which went. A total-order topic published from a node that is not its sequencer goes
    through Runtime.send instead."""
    g = Geode()
    news = g.topic("news", publishers=["node0", "node1"], subscribers=["node2"], total_order=True)
    runtime = g._runtime
    while (runtime.sends + 1) % 32:
        g.send("before", "node0", "node2")
    failure = DecodeError("damaged") if kind == "decode error" else GeodeError("failed")

    def progress() -> bool:
        raise failure

    monkeypatch.setattr(runtime.engine.transport, "progress", progress)
    value = "the polling one"
    if kind == "decode error":
        news.publish(value, source="node1")  # deferred: the next call raises it
    else:
        with pytest.raises(GeodeError) as err:
            news.publish(value, source="node1")
        assert err.value is failure and err.value.after_send is value
    monkeypatch.undo()
    g.close()


def test_a_receive_that_gets_nothing_names_its_topic_filter() -> None:
    with Geode(3) as geode:
        temps = geode.topic("temps", publishers=["node0"], subscribers=["node1"])
        pattern = geode.subscribe("node2", "sim.*")
        geode.topic("sim.a", publishers=["node0"], subscribers=[])
        for topic, label in ((temps, "temps"), ("temps", "temps"), (pattern, "sim.*")):
            node = "node2" if label == "sim.*" else "node1"
            with pytest.raises(ReceiveTimeout) as found:
                geode.receive(node, topic=topic, timeout=0.01)
            assert f"topic={label}" in str(found.value) and found.value.topic == label
        with pytest.raises(ReceiveTimeout) as found:
            geode.receive("node1", source="node0", timeout=0.01)
        assert "topic=" not in str(found.value) and found.value.topic is None
