"""Pattern (wildcard) subscriptions in one process: the embedded world and simulated ranks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geode_mpi import (
    ClosedError,
    Geode,
    ReceiveTimeout,
    Subscription,
    Topic,
    UnknownNodeError,
    WorldMismatchError,
)
from geode_mpi.transport import InProcHub


def two_ranks() -> tuple[Geode, Geode]:
    hub = InProcHub(2)
    a, b = (Geode(transport=hub.endpoint(rank)) for rank in range(2))
    return a, b


def data(geode: Geode, node: str, count: int, **filters: object) -> list[object]:
    return [geode.receive(node, timeout=1, **filters).data for _ in range(count)]  # type: ignore[arg-type]


def test_a_glob_takes_the_topics_that_exist_and_those_created_later() -> None:
    geode = Geode()
    temp = geode.topic("sim.temp", ["node0"], ["node1"])
    other = geode.topic("log", ["node0"], ["node1"])
    sub = geode.subscribe("node2", "sim.*")
    assert isinstance(sub, Subscription)
    assert (sub.pattern, sub.prefix, sub.nodes, sub.topics) == (
        "sim.*",
        False,
        ("node2",),
        ("sim.temp",),
    )
    assert temp.subscribers == ("node1", "node2") and other.subscribers == ("node1",)
    press = geode.topic("sim.press", ["node0"], [])
    assert press.subscribers == ("node2",) and sub.topics == ("sim.temp", "sim.press")
    temp.publish("t")
    press.publish(np.arange(3))
    other.publish("not for node2")
    got = data(geode, "node2", 2)
    assert got[0] == "t" and np.array_equal(got[1], np.arange(3))  # type: ignore[arg-type]
    with pytest.raises(ReceiveTimeout):
        geode.receive("node2", timeout=0.01)
    taken = geode.try_receive("node1", topic=sub)  # the filter is by topic, whoever subscribed
    assert taken is not None and taken.data == "t"
    assert geode.try_receive("node1", topic=sub) is None
    assert data(geode, "node1", 1) == ["not for node2"]
    geode.close()


def test_a_prefix_matches_as_zeromq_does_and_globs_are_case_sensitive() -> None:
    geode = Geode()
    names = ["sim.a", "sim.b.c", "SIM.d", "simx", "sim*"]
    topics = [geode.topic(name, ["node0"], []) for name in names]
    assert geode.subscribe("node1", prefix="sim.").topics == ("sim.a", "sim.b.c")
    assert geode.subscribe("node2", "sim?*").topics == ("sim.a", "sim.b.c", "simx", "sim*")
    assert geode.subscribe("node3", prefix="sim*").topics == ("sim*",)  # a prefix is literal
    assert [t.subscribers for t in topics] == [
        ("node1", "node2"),
        ("node1", "node2"),
        (),
        ("node2",),
        ("node2", "node3"),
    ]
    geode.close()


def test_a_node_subscribed_twice_gets_each_message_once() -> None:
    geode = Geode()
    both = geode.topic("sim.temp", ["node0"], ["node1"])
    geode.subscribe("node1", "sim.*")  # by name already
    geode.subscribe(["node1", "node2"], prefix="sim")  # and by two patterns
    geode.subscribe("node2", "*")
    later = geode.topic("sim.later", ["node0"], ["node2"])  # by name and by all three
    assert both.subscribers == ("node1", "node2") and later.subscribers == ("node2", "node1")
    for k in range(3):
        both.publish(k)
        later.publish(-k)
    for node in ("node1", "node2"):
        assert sorted(data(geode, node, 6)) == [-2, -1, 0, 0, 1, 2]  # type: ignore[type-var]
        assert geode.try_receive(node) is None
        assert geode.stats(node).received == 6 and geode.stats(node).duplicates == 0
    assert geode.stats("node0").sent == 12
    geode.close()


def test_a_pattern_subscriber_gets_the_retained_messages_first() -> None:
    geode = Geode()
    log = geode.topic("log.main", ["node0"], ["node1"], retain=2)
    for k in range(5):
        log.publish(k)
    geode.subscribe("node2", prefix="log.")
    log.publish(5)
    assert data(geode, "node2", 3) == [3, 4, 5]
    assert data(geode, "node1", 6) == [0, 1, 2, 3, 4, 5]  # not replayed to the others
    assert geode.try_receive("node1") is None and geode.try_receive("node2") is None
    geode.close()


def test_receive_filters_by_pattern_name_or_subscription() -> None:
    geode = Geode()
    a = geode.topic("sim.a", ["node0", "node3"], ["node1"])
    b = geode.topic("sim.b", ["node0"], ["node1"])
    c = geode.topic("io", ["node0"], ["node1"])
    sub = geode.subscribe("node2", prefix="sim.")
    c.publish("io")
    a.publish("a0")
    b.publish("b0")
    a.publish("a3", source="node3")
    assert data(geode, "node1", 2, topic=sub) == ["a0", "b0"]  # taken without io, before a3
    assert data(geode, "node1", 1, topic="sim.?", source="node3") == ["a3"]
    assert data(geode, "node1", 1, topic="[i]*") == ["io"]
    msg = geode.receive("node2", topic="sim.*", source="node0", type="Message", timeout=1)
    assert (msg.topic, msg.data) == ("sim.a", "a0")
    with pytest.raises(
        ValueError,
        match=r"no topic matches pattern 'x\*' \(topics: sim.a, sim.b, io\); topic\(\) is "
        r"collective:",
    ):
        geode.receive("node1", topic="x*", timeout=0)
    with pytest.raises(ValueError, match="no topic 'nope' in this job"):
        geode.receive("node1", topic="nope", timeout=0)
    geode.close()


def test_a_topic_named_like_a_pattern_is_that_topic() -> None:
    geode = Geode()
    star = geode.topic("a*", ["node0"], ["node1"])
    plain = geode.topic("ab", ["node0"], ["node1"])
    plain.publish("ab")
    star.publish("star")
    assert data(geode, "node1", 1, topic="a*") == ["star"]
    assert data(geode, "node1", 1, topic="a?") == ["ab"]
    geode.close()


def test_unsubscribe_leaves_what_was_asked_for_by_name_or_another_pattern() -> None:
    geode = Geode()
    named = geode.topic("sim.a", ["node0"], ["node1"])
    plain = geode.topic("sim.b", ["node0"], [])
    geode.subscribe(["node1", "node2", "node3"], "sim.*")
    geode.subscribe("node3", "*.b")
    named.publish("before")
    geode.unsubscribe(["node1", "node2", "node3"], "sim.*")
    assert named.subscribers == ("node1",)  # by name
    assert plain.subscribers == ("node3",)  # through *.b
    named.publish("after")
    plain.publish("b")
    assert data(geode, "node1", 2) == ["before", "after"]
    assert data(geode, "node2", 1) == ["before"]  # what was delivered stays queued
    assert geode.try_receive("node2") is None
    assert data(geode, "node3", 2) == ["before", "b"]
    later = geode.topic("sim.c", ["node0"], [])
    assert later.subscribers == ()
    assert geode.topic("x.b", ["node0"], []).subscribers == ("node3",)
    geode.close()


def test_unsubscribe_then_subscribe_again_and_topic_unsubscribe_of_a_pattern_node() -> None:
    geode = Geode()
    sub = geode.subscribe(["node1", "node2"], "t*")
    t = geode.topic("t1", ["node0"], [])
    geode.unsubscribe("node1", "t*")
    assert sub.nodes == ("node2",) and t.subscribers == ("node2",)
    again = geode.subscribe("node1", "t*")
    assert again is sub and sub.nodes == ("node2", "node1") and t.subscribers == ("node2", "node1")
    t.unsubscribe("node2")  # this topic only: the pattern still gives node2 later topics
    assert t.subscribers == ("node1",)
    assert geode.topic("t2", ["node0"], []).subscribers == ("node2", "node1")
    geode.unsubscribe(["node1", "node2"], "t*")
    assert sub.nodes == () and "<Subscription pattern 't*' nodes=[]" in repr(sub)
    geode.close()


def test_mistakes_are_named() -> None:
    geode = Geode()
    with pytest.raises(ValueError, match="a pattern must be a non-empty str, got ''"):
        geode.subscribe("node1", "")
    with pytest.raises(ValueError, match="a prefix must be a non-empty str, got 3"):
        geode.subscribe("node1", prefix=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="give a pattern or a prefix, not both nor neither"):
        geode.subscribe("node1")
    with pytest.raises(ValueError, match="not both"):
        geode.subscribe("node1", "a*", prefix="a")
    with pytest.raises(UnknownNodeError, match="unknown subscriber 'node9'"):
        geode.subscribe("node9", "a*")
    with pytest.raises(ValueError, match=r"subscribe\(pattern 'a\*'\) needs distinct nodes"):
        geode.subscribe(["node1", "node1"], "a*")
    with pytest.raises(ValueError, match="needs distinct nodes, got \\[\\]"):
        geode.subscribe([], "a*")
    geode.subscribe("node1", "a*")
    with pytest.raises(
        ValueError,
        match=r"node2 did not subscribe to pattern 'a\*' \(pattern subscriptions: a\*\)",
    ):
        geode.unsubscribe(["node1", "node2"], "a*")
    with pytest.raises(ValueError, match="node1 did not subscribe to prefix 'a'"):
        geode.unsubscribe("node1", prefix="a")
    geode.close()
    with pytest.raises(ClosedError, match="subscribe"):
        geode.subscribe("node1", "b*")


def test_ranks_that_disagree_about_a_pattern_are_told() -> None:
    a, b = two_ranks()
    a.subscribe("node1", "sim.*")
    with pytest.raises(
        WorldMismatchError, match="rank 1 disagrees with rank 0 about pattern subscriptions"
    ):
        b.subscribe("node1", "sim.?")
    a, b = two_ranks()
    a.subscribe("node1", prefix="sim.")
    with pytest.raises(WorldMismatchError):
        b.subscribe("node1", "sim.")  # the same text, but a glob
    a, b = two_ranks()
    a.subscribe(["node0", "node1"], "s*")
    with pytest.raises(WorldMismatchError):
        b.subscribe(["node1", "node0"], "s*")


def test_simulated_ranks_agree_and_deliver_on_both() -> None:
    a, b = two_ranks()
    topics = [g.topic("sim.t", ["node0"], []) for g in (a, b)]
    subs = [g.subscribe(["node0", "node1"], "sim.*") for g in (a, b)]
    later = [g.topic("sim.u", ["node1"], []) for g in (a, b)]
    assert topics[0].subscribers == topics[1].subscribers == ("node0", "node1")
    assert later[0].subscribers == later[1].subscribers == ("node0", "node1")
    topics[0].publish("from node0")
    later[1].publish("from node1")
    for geode, node in ((a, "node0"), (b, "node1")):
        got = sorted(
            m.data for m in [geode.receive(node, topic=subs[0], timeout=1) for _ in range(2)]
        )
        assert got == ["from node0", "from node1"]
    for geode in (a, b):
        geode.unsubscribe("node1", "sim.*")
    assert topics[1].subscribers == later[1].subscribers == ("node0",)


def test_a_restart_that_subscribes_again_delivers_each_saved_message_once(tmp_path: Path) -> None:
    def job(restart: bool) -> tuple[Geode, list[Topic]]:
        geode = Geode(checkpoint_dir=tmp_path, restart=restart)
        first = geode.topic("sim.a", ["node0"], [], retain=1)
        geode.subscribe("node1", "sim.*")
        return geode, [first, geode.topic("sim.b", ["node0"], [])]

    geode, (a, b) = job(False)
    for k in range(3):
        a.publish(k)
        b.publish(-k)
    geode.checkpoint(timeout=30)
    geode.close()
    again, (a, b) = job(True)
    assert sorted(data(again, "node1", 6)) == [-2, -1, 0, 0, 1, 2]  # type: ignore[type-var]
    assert again.try_receive("node1") is None
    a.publish(3)
    assert data(again, "node1", 1) == [3]
    again.subscribe("node2", prefix="sim.")
    assert data(again, "node2", 1) == [3]  # retained, after the restart too
    again.close()


def test_pattern_calls_after_a_restart_reach_a_saved_topic_made_again_later(
    tmp_path: Path,
) -> None:
    names = ["node0", "node1", "node2", "node3", "node4"]
    with Geode(names, checkpoint_dir=tmp_path) as geode:
        geode.subscribe(["node1", "node3", "node4"], "sim.*")
        topic = geode.topic("sim.a", ["node0"], [], retain=1)
        topic.publish("before")
        for node in ("node1", "node3", "node4"):
            assert data(geode, node, 1) == ["before"]
        geode.checkpoint(timeout=30)
    with Geode(names, checkpoint_dir=tmp_path, restart=True) as geode:
        geode.subscribe("node2", "sim.*")  # joins: gets the retained message, then news
        geode.unsubscribe("node3", "sim.*")  # leaves: gets nothing more
        geode.subscribe("node4", "other.*")  # matches nothing here: stays as it was
        topic = geode.topic("sim.a", ["node0"], [], retain=1)
        assert topic.subscribers == ("node1", "node4", "node2")
        topic.publish("after")
        assert data(geode, "node1", 1) == ["after"]
        assert data(geode, "node2", 2) == ["before", "after"]
        assert data(geode, "node4", 1) == ["after"]
        assert geode.try_receive("node3") is None
        later = geode.topic("sim.b", ["node0"], [])  # a new topic: the patterns as they are
        assert later.subscribers == ("node1", "node4", "node2")


def test_a_subscribe_undone_after_a_restart_never_joins_the_saved_topic(tmp_path: Path) -> None:
    names = ["node0", "node1", "node2"]
    with Geode(names, checkpoint_dir=tmp_path) as geode:
        geode.subscribe("node1", "sim.*")
        geode.topic("sim.a", ["node0"], [], retain=1).publish("before")
        assert data(geode, "node1", 1) == ["before"]
        geode.checkpoint(timeout=30)
    with Geode(names, checkpoint_dir=tmp_path, restart=True) as geode:
        geode.subscribe("node2", "sim.*")
        geode.unsubscribe("node2", "sim.*")
        topic = geode.topic("sim.a", ["node0"], [], retain=1)
        assert topic.subscribers == ("node1",)
        assert geode.try_receive("node2") is None  # not even the retained message
