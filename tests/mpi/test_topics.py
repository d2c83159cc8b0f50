"""Topics at 1, 2 and 4 ranks: publishers, subscribers, order, retention, p2p beside them."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from test_credits import world_size

from geode_mpi import Geode, Message, QueueConfig, QueueFull, ReceiveTimeout
from geode_mpi.transport.shared import SHARED_MIN

TIMEOUT = 60.0


def gather(geode: Geode, value: Any) -> list[Any]:
    """``value`` from every rank (the test's own bookkeeping, not geode_mpi's)."""
    if geode.size == 1:
        return [value]
    from mpi4py import MPI

    return list(MPI.COMM_WORLD.allgather(value))


def drain(geode: Geode, node: str, count: int, **filters: Any) -> list[Message]:
    return [geode.receive(node, timeout=TIMEOUT, **filters) for _ in range(count)]


def payload(publisher: int, k: int) -> Any:
    if k % 3 == 0:
        return {"from": publisher, "k": k}
    if k % 3 == 1:
        return np.full(100 + k, publisher * 1000 + k, np.int64)
    return f"{publisher}:{k}"


def same(got: Any, want: Any) -> bool:
    if isinstance(want, np.ndarray):
        return isinstance(got, np.ndarray) and np.array_equal(got, want)
    return bool(got == want)


def test_one_publisher_reaches_every_subscriber_once_in_order(geode: Geode) -> None:
    nodes = geode.nodes
    topic = geode.topic("news", publishers=[nodes[0]], subscribers=nodes[1:])
    count = 20
    handles = [topic.publish(payload(0, k), source=nodes[0]) for k in range(count)]
    for handle in handles:  # done at once off node0's rank (published there)
        assert handle.local == geode.hosts(nodes[0])
        handle.wait(timeout=TIMEOUT)
    for node in geode.local_nodes:
        if node == nodes[0]:
            continue
        for k, msg in enumerate(drain(geode, node, count)):
            assert (msg.topic, msg.source, msg.dest, msg.seq) == ("news", nodes[0], node, k)
            assert same(msg.data, payload(0, k))
        assert geode.try_receive(node) is None
    with pytest.raises(ValueError, match="is not a publisher of topic 'news'"):
        topic.publish("x", source=nodes[-1] if len(nodes) > 1 else "node9")


def test_every_node_publishes_and_subscribes_per_publisher_fifo(geode: Geode) -> None:
    nodes = geode.nodes
    topic = geode.topic("all", publishers=nodes, subscribers=nodes)
    count = 15
    for k in range(count):
        for index, node in enumerate(nodes):
            topic.publish(payload(index, k), source=node)
    for node in geode.local_nodes:
        per_publisher: dict[str, list[Message]] = defaultdict(list)
        for msg in drain(geode, node, count * len(nodes), topic=topic):
            assert msg.topic == "all"
            per_publisher[msg.source].append(msg)
        for index, publisher in enumerate(nodes):
            got = per_publisher[publisher]
            assert [m.seq for m in got] == list(range(count))
            assert all(same(m.data, payload(index, k)) for k, m in enumerate(got))
        stats = geode.stats(node)
        assert stats.received == count * len(nodes) and stats.duplicates == 0


def test_overlapping_topics_keep_apart_and_filter(geode: Geode) -> None:
    nodes = geode.nodes
    evens, odds = nodes[::2], nodes[1::2] or nodes[:1]
    a = geode.topic("a", publishers=[nodes[0]], subscribers=nodes)
    b = geode.topic("b", publishers=[nodes[-1]], subscribers=evens)
    c = geode.topic("c", publishers=odds, subscribers=[nodes[0], nodes[-1]])
    for k in range(5):
        a.publish(("a", k), source=nodes[0])
        b.publish(("b", k), source=nodes[-1])
        for node in odds:
            c.publish(("c", node, k), source=node)
    for node in geode.local_nodes:
        # Taken topic by topic, in the opposite order of publishing: the filter picks.
        if node in (nodes[0], nodes[-1]):
            got_c = [m.data for m in drain(geode, node, 5 * len(odds), topic="c")]
            for publisher in odds:
                assert [d for d in got_c if d[1] == publisher] == [
                    ("c", publisher, k) for k in range(5)
                ]
        if node in evens:
            assert [m.data for m in drain(geode, node, 5, topic=b)] == [("b", k) for k in range(5)]
        assert [m.data for m in drain(geode, node, 5, topic="a")] == [("a", k) for k in range(5)]
        assert geode.try_receive(node) is None


def test_a_total_order_topic_is_seen_in_one_order_everywhere(geode: Geode) -> None:
    nodes = geode.nodes
    topic = geode.topic("ordered", publishers=nodes, subscribers=nodes, total_order=True)
    assert topic.sequencer == nodes[0]
    count = 10
    for k in range(count):
        for node in nodes:
            topic.publish(f"{node}#{k}", source=node)
    orders = {}
    for node in geode.local_nodes:
        got = drain(geode, node, count * len(nodes), topic="ordered")
        assert all(m.source == nodes[0] for m in got)
        for publisher in nodes:  # each publisher's messages in its order
            mine = [m.data for m in got if m.origin == publisher]
            assert mine == [f"{publisher}#{k}" for k in range(count)]
        orders[node] = [m.data for m in got]
    everywhere = [order for found in gather(geode, orders) for order in found.values()]
    assert all(order == everywhere[0] for order in everywhere)


@pytest.mark.parametrize("per_rank", [1, 2])
@pytest.mark.parametrize("nbytes", [8, 8 * 1024, 64 * 1024, 4 * 1024 * 1024])
def test_arrays_reach_every_subscriber_bit_exact(nbytes: int, per_rank: int) -> None:
    """Sizes: in meta, inline in the envelope, out of band, shared; ``per_rank`` nodes on
    every rank (2: two subscribers on one rank, the second gets a copy of what arrived)."""
    geode = Geode(per_rank * world_size())
    try:
        _arrays_reach_every_subscriber_bit_exact(geode, nbytes)
    finally:
        geode.close(timeout=TIMEOUT)


def _arrays_reach_every_subscriber_bit_exact(geode: Geode, nbytes: int) -> None:
    nodes = geode.nodes
    topic = geode.topic(f"arrays{nbytes}", publishers=nodes[:1], subscribers=nodes)
    rng = np.random.default_rng(nbytes)
    arrays = [rng.integers(0, 255, nbytes, dtype=np.uint8) for _ in range(3)]
    arrays.append(rng.standard_normal((nbytes // 64 + 1, 8))[:, ::2])  # strided
    for array in arrays:
        topic.publish(array, source=nodes[0]).wait(timeout=TIMEOUT)
    for node in geode.local_nodes:
        for array, msg in zip(arrays, drain(geode, node, len(arrays)), strict=True):
            assert msg.data.dtype == array.dtype and np.array_equal(msg.data, array)
            if msg.data.flags.writeable:
                msg.data[...] = 0  # each subscriber's copy is its own
            else:  # a read-only view: of this node's shared segment, or of the one sealed
                assert msg.data.nbytes >= SHARED_MIN  # copy made for this rank's subscribers
                msg.data.copy()[...] = 0  # (transport/shared.py, transport/sealed.py)
    for node in geode.local_nodes:
        assert geode.try_receive(node) is None


def test_a_late_subscriber_gets_the_retained_messages_first(geode: Geode) -> None:
    nodes = geode.nodes
    late = nodes[-1]
    early = [node for node in nodes if node != late] or [late]
    topic = geode.topic("log", publishers=nodes[:1], subscribers=early[1:], retain=3)
    for k in range(5):
        topic.publish(k, source=nodes[0])
    topic.subscribe(late)
    for k in range(5, 8):
        topic.publish(k, source=nodes[0])
    for node in geode.local_nodes:
        if node == late:
            assert [m.data for m in drain(geode, node, 6)] == [2, 3, 4, 5, 6, 7]
        elif node in early[1:]:
            assert [m.data for m in drain(geode, node, 8)] == list(range(8))
        assert geode.try_receive(node) is None
        assert geode.stats(node).duplicates == 0


def test_unsubscribed_nodes_get_nothing_more(geode: Geode) -> None:
    nodes = geode.nodes
    topic = geode.topic("feed", publishers=nodes[:1], subscribers=nodes)
    topic.publish("before", source=nodes[0])
    topic.unsubscribe(nodes[1:])
    assert topic.subscribers == (nodes[0],)
    handle = topic.publish("after", source=nodes[0], ack=True)
    for node in geode.local_nodes:
        assert geode.receive(node, timeout=TIMEOUT).data == "before"
        if node == nodes[0]:
            assert geode.receive(node, timeout=TIMEOUT).data == "after"
        with pytest.raises(ReceiveTimeout):
            geode.receive(node, timeout=0.05)
    handle.wait(timeout=TIMEOUT)  # acked by the one subscriber left
    assert handle.acked


def test_a_subscriber_that_leaves_and_comes_back_gets_each_message_once(geode: Geode) -> None:
    """The publisher's acked handles complete once it left (its messages still queued), it
    does not get the retained ones it had again, and it gets the retained ones it missed."""
    nodes = geode.nodes
    pub, sub = nodes[0], nodes[-1]
    log = geode.topic("again", publishers=[pub], subscribers=[sub], retain=2)
    handles = [log.publish(k, source=pub, ack=True) for k in range(3)]
    log.unsubscribe(sub)
    for handle in handles:
        handle.wait(timeout=TIMEOUT)  # nobody waits for its acks any more
    for k in range(3, 8):
        log.publish(k, source=pub)  # 3..5 never reach it; 6 and 7 are retained
    log.subscribe(sub)
    last = log.publish(8, source=pub, ack=True)
    if geode.hosts(sub):
        got = drain(geode, sub, 6)
        assert [m.data for m in got] == [0, 1, 2, 6, 7, 8]
        assert len({m.id for m in got}) == 6 and geode.stats(sub).duplicates == 0
        with pytest.raises(ReceiveTimeout):
            geode.receive(sub, timeout=0.05)
    last.wait(timeout=TIMEOUT)  # acked past the numbers it missed
    assert last.acked


def test_a_bounded_queue_keeps_its_capacity_when_its_node_comes_back() -> None:
    """Subscribing again gave the publisher a fresh window while the old messages were still
    queued: here the queue is full, and stays so until its node takes one."""
    g = Geode(queue=QueueConfig(capacity=2, policy="raise", window=2))
    try:
        pub, sub = g.nodes[0], g.nodes[-1]
        topic = g.topic("bounded", publishers=[pub], subscribers=[sub])
        for k in range(2):
            topic.publish(k, source=pub)
        topic.unsubscribe(sub)
        topic.subscribe(sub)
        if g.hosts(pub):
            with pytest.raises(QueueFull):
                topic.publish("no room", source=pub)
        # (collective: the subscriber takes nothing before the publisher has tried; taking
        # gives the credits back, and a publish after that has room: 1 launch in 6 at 2 ranks)
        g.topic("tried", publishers=[pub], subscribers=[])
        if g.hosts(sub):
            assert [m.data for m in drain(g, sub, 2)] == [0, 1]
            with pytest.raises(ReceiveTimeout):
                g.receive(sub, timeout=0.05)
    finally:
        g.close(timeout=TIMEOUT)


def test_topics_and_point_to_point_interleave_without_deadlock(geode: Geode) -> None:
    nodes = geode.nodes
    topic = geode.topic("mixed", publishers=nodes, subscribers=nodes)
    count = 30
    for k in range(count):
        for index, node in enumerate(nodes):
            topic.publish(np.full(2000, k), source=node)  # 16 kB
            after = nodes[(index + 1) % len(nodes)]
            geode.isend(Message(("p2p", k)), node, after)
    for node in geode.local_nodes:
        got = drain(geode, node, count * (len(nodes) + 1))
        p2p = [m.data for m in got if m.topic is None]
        assert p2p == [("p2p", k) for k in range(count)]
        assert sum(1 for m in got if m.topic == "mixed") == count * len(nodes)


def test_publish_with_ack_completes_once_every_subscriber_processed(geode: Geode) -> None:
    nodes = geode.nodes
    topic = geode.topic("acked", publishers=nodes[:1], subscribers=nodes)
    handle = topic.publish("needs everyone", source=nodes[0], ack=True)
    for node in geode.local_nodes:
        assert geode.receive(node, timeout=TIMEOUT).data == "needs everyone"
    handle.wait(timeout=TIMEOUT)
    assert handle.acked and handle.dest == "acked"


def test_a_rank_that_only_publishes_takes_in_the_acks_of_what_it_published(
    geode: Geode,
) -> None:
    """A publisher that made no other geode_mpi call never took in its subscribers' acks: its
    outbox (``stats().unacked``) kept every message it published, without bound. Its
    publishes take in arrivals now and then, as sends do: the acks empty it. (The outbox is
    read as `Geode.stats` reads it, without the poll that `stats` does first.)"""
    nodes = geode.nodes
    engine = geode._runtime.engine

    def outbox() -> int:
        return sum(engine.unacked_by_dest(0).values())

    publisher = nodes[0]
    topic = geode.topic("outbox", publishers=[publisher], subscribers=nodes[1:] or nodes)
    first, most = 256, 256 * 64
    sent, unacked = 0, 0
    if geode.hosts(publisher):
        for k in range(first):
            topic.publish(k, source=publisher)
    for node in topic.subscribers:
        if geode.hosts(node):
            assert [m.data for m in drain(geode, node, first)] == list(range(first))
    geode.flush()  # (the subscribers' acks go out now)
    gather(geode, None)  # (not a geode_mpi call: the publisher still takes nothing in)
    if geode.hosts(publisher):
        sent = first  # more publishes, until they took in the acks of the first (or `most`)
        while outbox() >= first and sent < most:
            topic.publish(sent, source=publisher)
            sent += 1
        unacked = outbox()
        topic.publish("end", source=publisher)
    for node in topic.subscribers:
        if geode.hosts(node):
            rest = []
            while (data := geode.receive(node, topic=topic, timeout=TIMEOUT).data) != "end":
                rest.append(data)
            assert rest == list(range(first, len(rest) + first))
    assert unacked < first, f"{unacked} of {sent} published messages still in the outbox"


def test_a_subscriber_blocked_in_another_receive_lets_broadcasts_through(geode: Geode) -> None:
    """The first subscriber waits for a point-to-point message that the last one sends only
    after it got every (large) broadcast: the broadcasts must progress while it waits."""
    nodes = geode.nodes
    if len(nodes) < 3:
        pytest.skip("needs a publisher and two subscribers")
    first, last = nodes[1], nodes[-1]
    topic = geode.topic("big", publishers=nodes[:1], subscribers=[first, last])
    count = 6
    handles = [topic.publish(np.full(300_000, k), source=nodes[0]) for k in range(count)]
    if geode.hosts(last):
        for k, msg in enumerate(drain(geode, last, count)):
            assert msg.data[0] == k
        geode.send("all six arrived", last, first)
    if geode.hosts(first):
        note = geode.receive(first, source=last, timeout=TIMEOUT)  # blocks; broadcasts go on
        assert note.data == "all six arrived"
        assert [m.data[-1] for m in drain(geode, first, count, topic="big")] == list(range(count))
    for handle in handles:
        handle.wait(timeout=TIMEOUT)


def test_a_publish_reaches_subscribers_that_wait_for_it_before_the_next_collective(
    geode: Geode,
) -> None:
    """A small publish may wait in a batch, but never while its rank blocks in a collective
    (another topic(), a work queue's creation): the subscribers receive it first, then join.
    At most two subscriber ranks: a stream of more would make every collective poll first."""
    nodes = geode.nodes
    subscribers = nodes[1:3]
    topic = geode.topic("first", publishers=[nodes[0]], subscribers=subscribers)
    topic.publish({"k": 1}, source=nodes[0])
    topic.publish("two", source=nodes[0])
    for node in geode.local_nodes:
        if node in subscribers:
            assert [m.data for m in drain(geode, node, 2)] == [{"k": 1}, "two"]
    geode.topic("second", publishers=[nodes[0]], subscribers=subscribers)
    topic.publish(3, source=nodes[0])
    for node in geode.local_nodes:
        if node in subscribers:
            assert drain(geode, node, 1)[0].data == 3
    geode.work_queue("after", consumers=nodes, producers=[nodes[0]])


@pytest.mark.parametrize("change", ["subscribe", "unsubscribe"])
def test_a_total_order_publish_before_a_membership_change_goes_to_the_old_subscribers(
    change: str,
) -> None:
    """node1 publishes a large array through the sequencer node0 just before node3 joins
    (or leaves): it is sequenced under the old membership, before what follows the change
    (before: node3 got it after joining, or missed it after leaving, and node2 got it after
    the sequencer's later publish)."""
    with Geode() as probe:
        count = max(4, probe.size)
    geode = Geode(nodes=count)
    nodes = geode.nodes
    before = [nodes[2]] if change == "subscribe" else [nodes[2], nodes[3]]
    votes = geode.topic("votes", nodes[:2], before, total_order=True)
    votes.publish(np.ones(2**16), source=nodes[1])  # 512 KiB: frames of their own
    getattr(votes, change)(nodes[3])
    votes.publish("after", source=nodes[0])
    geode.close(timeout=TIMEOUT)  # every message in flight is queued once it returns
    for node in geode.local_nodes:
        got = []
        while (msg := geode.try_receive(node)) is not None:
            got.append(msg.data if isinstance(msg.data, str) else ("array", msg.origin))
        if node == nodes[2]:
            assert got == [("array", nodes[1]), "after"]
        elif node == nodes[3]:
            assert got == (["after"] if change == "subscribe" else [("array", nodes[1])])
        else:
            assert got == []


def test_total_order_publishes_follow_the_membership_of_their_moment() -> None:
    """A non-sequencer publishes two messages, then a node joins or leaves, alternately: each
    message reaches exactly the subscribers of the moment it was published (the sequencer,
    still inside the change, forwarded the next round's messages on the old streams: 4 of 12
    launches at 4 ranks)."""
    with Geode() as probe:
        size = probe.size
    if size < 3:
        pytest.skip("needs three ranks: publisher, sequencer and a joining node apart")
    geode = Geode(nodes=2 * size)
    nodes = geode.nodes
    mover = nodes[-1]  # on the last rank
    votes = geode.topic("moving", nodes[:2], [nodes[2]], total_order=True, sequencer=nodes[1])
    expected: dict[str, list[str]] = {nodes[2]: [], mover: []}
    inside = False
    for step in range(30):
        for k in range(2):
            tag = f"{step}.{k}"
            expected[nodes[2]].append(tag)
            if inside:
                expected[mover].append(tag)
            votes.publish(tag, source=nodes[0])
        (votes.unsubscribe if inside else votes.subscribe)(mover)
        inside = not inside
    geode.close(timeout=TIMEOUT)
    for node, wanted in expected.items():
        if geode.hosts(node):
            got = []
            while (msg := geode.try_receive(node)) is not None:
                got.append(msg.data)
            assert got == wanted, node


def test_a_bounded_sequencer_queue_returns_the_credits_of_what_it_forwards() -> None:
    # node0, the sequencer, has a window of 4 per sender: what reaches it is forwarded, never
    # taken from its queue, and must give its publisher's credit back (before the fix: the
    # fifth publish waited for room until its timeout, or until node0's rank closed).
    g = Geode(queues={"node0": QueueConfig(capacity=64, policy="block", window=4)})
    last = g.nodes[-1]
    topic = g.topic("ordered", ["node0", last], [last], total_order=True)
    if g.hosts(last):
        for k in range(12):
            topic.publish(k, source=last, timeout=10.0)
        assert [m.data for m in drain(g, last, 12, topic="ordered")] == list(range(12))
    g.close(timeout=TIMEOUT)


def test_a_sequencer_holds_what_a_full_raise_subscriber_has_no_room_for() -> None:
    # The subscriber (the last node) has a 'raise' queue with a window of 2; it publishes 6
    # (each accepted by the sequencer, node0) and takes none while node0's rank polls. The
    # sequencer holds what finds no room and sends it on as room comes: nothing raised in
    # node0's rank's unrelated calls, nothing lost (before the fix: QueueFull out of node0's
    # try_receive(), and the subscriber got only the first 2).
    size = world_size()
    sub = f"node{2 * size - 1}"
    g = Geode(nodes=2 * size, queues={sub: QueueConfig(capacity=64, policy="raise", window=2)})
    signal = g.nodes[size]  # (on rank 0: tells the subscriber node0's rank is done polling)
    topic = g.topic("held", ["node0", sub], [sub], total_order=True)
    if g.hosts(sub):
        for k in range(6):
            topic.publish(k, source=sub)
    if g.hosts("node0"):
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            assert g.try_receive("node0") is None  # (before the fix: QueueFull)
        g.send("go", signal, sub)
    if g.hosts(sub):
        assert g.receive(sub, source=signal, timeout=TIMEOUT).data == "go"
        assert [m.data for m in drain(g, sub, 6, topic="held")] == list(range(6))
    g.close(timeout=TIMEOUT)
    if g.hosts(sub):
        assert g.try_receive(sub) is None
