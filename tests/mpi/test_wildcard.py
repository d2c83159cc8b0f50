"""Pattern subscriptions at 1, 2 and 4 ranks: settled collectively, the same on every rank."""

from __future__ import annotations

import time
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


def test_a_pattern_joining_topics_loses_nothing_while_another_stream_ends_late() -> None:
    """One pattern call adds a node of rank 2 to t1 (rooted on rank 1, slow to end its old
    stream) and to t2 (rooted on rank 0, one message retained). Rank 0 is through the call
    first and replays and publishes on t2's new stream while rank 2 still waits for t1's end:
    those messages wait for rank 2 to join t2 (they were dropped: rank 2 did not yet know its
    new subscriber there)."""
    with Geode(nodes=2 * _world_size()) as geode:
        if geode.size < 3:
            pytest.skip("needs three ranks: a slow root, a fast root and a joining rank")
        size, names = geode.size, geode.nodes
        joiner = names[size + 2]  # rank 2's second node
        t1 = geode.topic("t1", publishers=[names[1]], subscribers=[names[2]])
        t2 = geode.topic("t2", publishers=[names[0]], subscribers=[names[0]], retain=1)
        if geode.rank == 0:
            t2.publish(0, source=names[0])
            assert geode.receive(names[0], topic=t2, timeout=TIMEOUT).data == 0
        if geode.rank == 1:  # t1's root is late to end its stream
            transport = geode._runtime.transport
            close = transport.close_stream

            def late(key: int, *args: Any, **kwargs: Any) -> None:
                time.sleep(0.5)
                close(key, *args, **kwargs)

            transport.close_stream = late  # type: ignore[method-assign]
        geode.subscribe([joiner], "t*")
        if geode.rank == 1:
            del transport.close_stream
        assert t1.subscribers == (names[2], joiner) and t2.subscribers == (names[0], joiner)
        if geode.rank == 0:
            t2.publish(1, source=names[0])
            assert geode.receive(names[0], topic=t2, timeout=TIMEOUT).data == 1
        t1.publish("t1", source=names[1])
        if geode.hosts(joiner):
            got = [geode.receive(joiner, topic=t2, timeout=10).data for _ in range(2)]
            assert got == [0, 1]  # the retained one first, then the new one
            assert geode.receive(joiner, topic=t1, timeout=TIMEOUT).data == "t1"
            assert geode.receive(names[2], topic=t1, timeout=TIMEOUT).data == "t1"
            assert geode.stats(joiner).duplicates == 0


def _world_size() -> int:
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.Get_size())
