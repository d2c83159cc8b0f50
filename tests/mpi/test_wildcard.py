"""Pattern subscriptions at 1, 2 and 4 ranks: settled collectively, the same on every rank."""

from __future__ import annotations

from typing import Any

import pytest

from geode_mpi import Geode, ReceiveTimeout, WorldMismatchError

TIMEOUT = 60.0


def gather(geode: Geode, value: Any) -> list[Any]:
    """``value`` from every rank (the test's own bookkeeping, not geode_mpi's)."""
    if geode.size == 1:
        return [value]
    from mpi4py import MPI

    return list(MPI.COMM_WORLD.allgather(value))


def received(geode: Geode, node: str, count: int, **filters: Any) -> list[tuple[str, Any]]:
    got = [geode.receive(node, timeout=TIMEOUT, **filters) for _ in range(count)]
    return sorted((str(msg.topic), msg.data) for msg in got)


def test_a_pattern_takes_existing_and_later_topics_on_every_rank(geode: Geode) -> None:
    nodes = geode.nodes
    first, last = nodes[0], nodes[-1]
    listeners = nodes[1:]
    a = geode.topic("sim.a", publishers=[first], subscribers=[])
    sub = geode.subscribe(listeners, "sim.*")
    b = geode.topic("sim.b", publishers=[last], subscribers=[])  # created after
    other = geode.topic("other", publishers=[first], subscribers=[last])
    assert a.subscribers == b.subscribers == tuple(listeners)
    assert (
        gather(geode, (a.subscribers, b.subscribers, sub.topics))
        == [(tuple(listeners), tuple(listeners), ("sim.a", "sim.b"))] * geode.size
    )
    a.publish("a", source=first)
    b.publish("b", source=last)
    other.publish("other", source=first)
    for node in geode.local_nodes:
        if node in listeners:
            assert received(geode, node, 2, topic=sub) == [("sim.a", "a"), ("sim.b", "b")]
        if node == last:
            assert geode.receive(node, timeout=TIMEOUT).data == "other"
        assert geode.try_receive(node) is None


def test_a_node_subscribed_by_name_and_two_patterns_gets_each_message_once(geode: Geode) -> None:
    nodes = geode.nodes
    t = geode.topic("grid.t", publishers=nodes, subscribers=nodes[:1])
    geode.subscribe(nodes, prefix="grid.")
    geode.subscribe(nodes[:1], "*.t")
    u = geode.topic("grid.u", publishers=nodes[:1], subscribers=nodes[-1:])
    assert set(t.subscribers) == set(u.subscribers) == set(nodes)
    for node in nodes:
        t.publish(node, source=node)
    u.publish("u", source=nodes[0])
    want = sorted([("grid.t", node) for node in nodes] + [("grid.u", "u")])
    for node in geode.local_nodes:
        assert received(geode, node, len(nodes) + 1, topic="grid.*") == want
        assert geode.try_receive(node) is None
        stats = geode.stats(node)
        assert stats.received == len(nodes) + 1 and stats.duplicates == 0


def test_a_late_pattern_subscriber_gets_the_retained_messages_first(geode: Geode) -> None:
    nodes = geode.nodes
    late = nodes[-1]
    log = geode.topic("log.main", publishers=nodes[:1], subscribers=[], retain=2)
    for k in range(5):
        log.publish(k, source=nodes[0])
    geode.subscribe(late, prefix="log.")
    for k in range(5, 7):
        log.publish(k, source=nodes[0])
    if geode.hosts(late):
        got = [geode.receive(late, timeout=TIMEOUT).data for _ in range(4)]
        assert got == [3, 4, 5, 6]
        assert geode.try_receive(late) is None and geode.stats(late).duplicates == 0


def test_ranks_that_pass_different_patterns_are_told(geode: Geode) -> None:
    nodes = geode.nodes
    mine = "sim.*" if geode.rank == 0 else "sim.?"
    if geode.size == 1:  # nobody to disagree with: the pattern is taken
        assert geode.subscribe(nodes[1:], mine).nodes == nodes[1:]
        return
    with pytest.raises(WorldMismatchError, match="rank 1 disagrees with rank 0 about pattern"):
        geode.subscribe(nodes[1:], mine)
    # Nothing was recorded on any rank: the same call with the same pattern still works.
    topic = geode.topic("sim.x", publishers=nodes[:1], subscribers=[])
    assert topic.subscribers == ()
    assert geode.subscribe(nodes[1:], "sim.*").topics == ("sim.x",)
    assert gather(geode, topic.subscribers) == [tuple(nodes[1:])] * geode.size


def test_unsubscribed_nodes_get_nothing_more_from_the_pattern(geode: Geode) -> None:
    nodes = geode.nodes
    keeper, leavers = nodes[0], nodes[1:]
    t = geode.topic("job.t", publishers=nodes[:1], subscribers=[keeper])
    geode.subscribe(nodes, "job.*")
    t.publish("before", source=nodes[0])
    geode.unsubscribe(nodes, "job.*")
    later = geode.topic("job.later", publishers=nodes[:1], subscribers=[])
    assert gather(geode, (t.subscribers, later.subscribers)) == [((keeper,), ())] * geode.size
    handle = t.publish("after", source=nodes[0], ack=True)
    for node in geode.local_nodes:
        assert geode.receive(node, timeout=TIMEOUT).data == "before"
        if node == keeper:
            assert geode.receive(node, timeout=TIMEOUT).data == "after"
    handle.wait(timeout=TIMEOUT)  # acked by the one subscriber left
    for node in geode.local_nodes:
        if node in leavers:
            with pytest.raises(ReceiveTimeout):
                geode.receive(node, timeout=0.05)
