"""Message priority: higher first from a node's queue, FIFO within a priority and source."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest

from geode_mpi import Geode, Message, QueueConfig, codec
from geode_mpi.codec import header
from geode_mpi.queues import NEVER, Inbox, Parcel
from geode_mpi.transport import InProcHub

STAMP = codec.Stamp(id=7, seq=3, timestamp=1700000000.0, source=1, dest=2)


def parcel(source: int, seq: int, priority: int = 0, expires: float = NEVER) -> Parcel:
    flags = header.FLAG_QOS if priority or expires != NEVER else 0
    return Parcel(source, seq, flags, -1, memoryview(b""), (), 0, 0, priority, expires)


def drain(inbox: Inbox) -> list[tuple[int, int]]:
    out = []
    while (taken := inbox.pop()) is not None:
        out.append((taken.source, taken.seq))
    return out


# -- the inbox -----------------------------------------------------------------------------


def test_the_inbox_takes_higher_priorities_first_and_fifo_within_one() -> None:
    inbox = Inbox()
    for item in [(0, 0, 0), (1, 0, 5), (0, 1, 5), (1, 1, 0), (0, 2, -3), (1, 2, 5), (0, 3, 0)]:
        inbox.push(parcel(*item))
    assert inbox.ranked == 4
    assert drain(inbox) == [(1, 0), (0, 1), (1, 2), (0, 0), (1, 1), (0, 3), (0, 2)]
    assert inbox.ranked == 0 and len(inbox) == 0


def test_a_filter_and_an_order_key_rank_below_priority() -> None:
    inbox = Inbox()
    for item in [(0, 0, 0), (1, 0, 1), (1, 1, 2), (0, 1, 2)]:
        inbox.push(parcel(*item))
    taken = inbox.pop(match=lambda p: p.source == 0)
    assert taken is not None and (taken.source, taken.seq) == (0, 1)  # its highest
    # The key orders within the highest priority: the smallest seq of priority 2 first.
    taken = inbox.pop(key=lambda p: -p.seq)
    assert taken is not None and (taken.source, taken.seq) == (1, 1)
    assert drain(inbox) == [(1, 0), (0, 0)]


def test_a_retried_parcel_holds_back_only_its_own_priority() -> None:
    inbox = Inbox()
    first = parcel(0, 0, 1)
    for item in [first, parcel(0, 1, 1), parcel(0, 2, 0)]:
        inbox.push(item)
    assert inbox.pop() is first
    inbox.put_back(first, math.inf)  # its back-off never ends here
    # Priority 1 of source 0 waits for the retried one; priority 0 of source 0 does not.
    taken = inbox.pop()
    assert taken is not None and taken.seq == 2
    assert inbox.pop() is None and len(inbox) == 2


def test_a_queue_without_priorities_keeps_its_fast_path() -> None:
    inbox = Inbox()
    for seq in range(3):
        inbox.push(parcel(0, seq))
    assert inbox.ranked == 0
    assert drain(inbox) == [(0, 0), (0, 1), (0, 2)]


# -- the header ----------------------------------------------------------------------------


def test_a_default_message_has_no_priority_block_and_the_same_header() -> None:
    meta, _ = codec.encode(Message({"a": 1}), STAMP)
    routed, _ = codec.encode(Message({"a": 1}), STAMP, route=codec.qos_route(0, None))
    assert routed == meta and meta[header.ROUTE_AT] == 0
    assert header.route(meta) is None


def test_the_priority_block_opens_the_route_section() -> None:
    meta, _ = codec.encode(Message([1, 2]), STAMP, route=codec.qos_route(-4, 2.5))
    assert meta[0] == header.VERSION == 7
    assert meta[header.ROUTE_AT] == header.ROUTE_QOS
    name_len, route_len = struct.unpack_from("<HH", meta, 36)
    assert route_len == 16
    assert struct.unpack_from("<iId", meta, 64 + name_len) == (-4, 0, 2.5)
    flags = codec.track(meta).flags
    assert flags & codec.FLAG_QOS and not flags & 0xFF
    message = codec.decode(meta, [], ["a", "b", "c"])
    assert (message.data, message.priority, message.ttl) == ([1, 2], -4, 2.5)
    plain = codec.decode(codec.encode(Message([1, 2]), STAMP)[0], [], ["a", "b", "c"])
    assert (plain.priority, plain.ttl) == (0, None)


def test_a_group_route_keeps_its_members_after_the_priority_block() -> None:
    route = codec.Route(header.ROUTE_GROUP, group="g", members=(1, 3), priority=2, ttl=1.0)
    meta, _ = codec.encode(Message(np.arange(3.0)), STAMP, route=route)
    assert header.route(meta) == route
    assert codec.decode(meta, [], ["a", "b", "c"]).priority == 2


@pytest.mark.parametrize(
    ("priority", "ttl", "error"),
    [
        (1.5, None, "priority must be an int, got 1.5"),
        (True, None, "priority must be an int, got True"),
        (2**31, None, "priority must be in -2**31..2**31-1, got 2147483648"),
        (0, 0, "ttl must be > 0 and finite (seconds), got 0"),
        (0, -1.0, "ttl must be > 0 and finite (seconds), got -1.0"),
        (0, math.inf, "ttl must be > 0 and finite (seconds), got inf"),
        (0, "1", "ttl must be a number of seconds or None, got '1'"),
    ],
)
def test_bad_priorities_and_ttls_are_refused_before_anything_is_sent(
    priority: object, ttl: object, error: str
) -> None:
    with Geode() as geode:
        with pytest.raises((TypeError, ValueError)) as caught:
            geode.send("x", dest="node1", priority=priority, ttl=ttl)  # type: ignore[arg-type]
        assert str(caught.value) == error
        assert geode.stats("node0").sent == 0


# -- the embedded world --------------------------------------------------------------------


def test_receive_takes_higher_priorities_first_across_sources() -> None:
    with Geode() as geode:
        sends = [
            ("node0", "low-0", 0),
            ("node1", "high-1a", 9),
            ("node2", "mid-2", 3),
            ("node0", "high-0", 9),
            ("node1", "high-1b", 9),
            ("node2", "low-2", 0),
            ("node1", "neg-1", -1),
        ]
        for source, data, priority in sends:
            geode.send(data, source, "node3", priority=priority)
        got = [geode.receive("node3", timeout=1) for _ in sends]
        assert [m.data for m in got] == [
            "high-1a",
            "high-0",
            "high-1b",
            "mid-2",
            "low-0",
            "low-2",
            "neg-1",
        ]
        assert [m.priority for m in got] == [9, 9, 9, 3, 0, 0, -1]
        assert geode.pending("node3") == 0


def test_fifo_holds_within_one_priority_and_source() -> None:
    with Geode() as geode:
        for k in range(50):
            geode.isend(k, "node0", "node1", priority=k % 3)
        got = [geode.receive("node1", timeout=1).data for _ in range(50)]
        assert got == [k for p in (2, 1, 0) for k in range(50) if k % 3 == p]


def test_a_topic_publish_carries_its_priority_to_every_subscriber() -> None:
    with Geode() as geode:
        topic = geode.topic("news", publishers=["node0"], subscribers=["node1", "node2"])
        topic.publish("later")
        topic.publish("urgent", priority=1)
        for node in ("node1", "node2"):
            got = [geode.receive(node, timeout=1) for _ in range(2)]
            assert [(m.data, m.priority, m.topic) for m in got] == [
                ("urgent", 1, "news"),
                ("later", 0, "news"),
            ]


def test_a_total_order_topic_refuses_a_priority() -> None:
    with Geode() as geode:
        topic = geode.topic("log", ["node0", "node2"], ["node1"], total_order=True)
        with pytest.raises(ValueError, match="'log' has a total order: its messages take no"):
            topic.publish("x", "node2", priority=1)


def test_handlers_in_run_see_higher_priorities_first() -> None:
    with Geode() as geode:
        seen: list[tuple[str, int]] = []

        @geode.on(Message, "node1")
        def handle(msg: Message) -> None:
            seen.append((msg.data, msg.priority))

        for k in range(4):
            geode.send(f"bulk{k}", "node0", "node1")
        geode.send("alarm", "node2", "node1", priority=100)
        geode.run("node1", count=5, timeout=5)
        assert seen[0] == ("alarm", 100)
        assert [data for data, _ in seen[1:]] == ["bulk0", "bulk1", "bulk2", "bulk3"]


def test_priority_over_simulated_ranks_and_with_a_window() -> None:
    hub = InProcHub(2)
    queue = QueueConfig(capacity=8)
    geodes = [Geode(queue=queue, transport=hub.endpoint(rank)) for rank in range(2)]
    try:
        sender, receiver = geodes
        for k in range(2):  # node0 on rank 0 to node1 on rank 1: its window of 2
            sender.send(k, dest="node1", priority=k)
        assert [receiver.receive("node1", timeout=1).data for _ in range(2)] == [1, 0]
        assert sender.send(2, dest="node1", priority=-1).local  # its credits came back
        assert receiver.receive("node1", timeout=1).data == 2
    finally:
        for geode in geodes:
            geode.close()


def test_queued_priorities_survive_a_checkpoint_and_restart(tmp_path: Path) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        geode.send("low", "node0", "node1")
        geode.send("high", "node2", "node1", priority=5)
        geode.send("mid", "node0", "node1", priority=2)
        geode.checkpoint()
    with Geode(checkpoint_dir=tmp_path, restart=True) as again:
        got = [again.receive("node1", timeout=1) for _ in range(3)]
        assert [(m.data, m.priority) for m in got] == [("high", 5), ("mid", 2), ("low", 0)]


def test_a_nacked_message_comes_back_before_later_ones_of_its_priority() -> None:
    queues = {"node1": QueueConfig(ack="explicit", retry_delay=0)}
    with Geode(queues=queues) as geode:
        geode.send("a", "node0", "node1", priority=2)
        geode.send("b", "node0", "node1", priority=2)
        geode.send("c", "node0", "node1")
        first = geode.receive("node1", timeout=1)
        assert (first.data, first.priority) == ("a", 2)
        first.nack()
        got = []
        for _ in range(3):
            msg = geode.receive("node1", timeout=1)
            got.append((msg.data, msg.priority))
            msg.ack()
        assert got == [("a", 2), ("b", 2), ("c", 0)]
        assert geode.stats("node1").retries == 1


def test_a_long_mixed_queue_comes_out_as_a_stable_sort_by_priority() -> None:
    """Lanes above 0 lead the queue (a take is a popleft); the order is a model's: higher
    priority first, arrival order within one; negatives and ttls among them; retries too."""
    rng = np.random.default_rng(5)
    inbox = Inbox()
    model: list[tuple[int, int, int]] = []  # (-priority, arrival, source)
    seqs = [0, 0, 0]
    for arrival in range(3000):
        source = int(rng.integers(3))
        priority = int(rng.choice([0, 0, 1, 2, 7, -2]))
        expires = 1e18 if rng.random() < 0.1 else NEVER  # a ttl far away: ranked, not expired
        inbox.push(parcel(source, seqs[source], priority, expires))
        model.append((-priority, arrival, source))
        seqs[source] += 1
        if arrival % 7 == 0:  # takes between the pushes
            taken = inbox.pop()
            assert taken is not None
            model.sort()
            best = model.pop(0)
            assert (-taken.priority, taken.source) == (best[0], best[2])
    assert inbox.ranked == sum(1 for p, _, _ in model if p) + sum(
        1 for item in inbox if item.priority == 0 and item.expires != NEVER
    )
    model.sort()
    out = []
    while (taken := inbox.pop()) is not None:
        out.append((-taken.priority, taken.source))
    assert out == [(p, source) for p, _, source in model]
    assert inbox.ranked == 0 and len(inbox) == 0


def test_a_retry_goes_back_into_its_own_lane_before_its_sources_later_ones() -> None:
    inbox = Inbox()
    for item in [(0, 0, 2), (1, 0, 2), (0, 1, 2), (0, 2, 1), (1, 1, 0)]:
        inbox.push(parcel(*item))
    first = inbox.pop()
    assert first is not None and (first.source, first.seq) == (0, 0)
    inbox.put_back(first, 0.0)  # due at once
    assert drain(inbox) == [(1, 0), (0, 0), (0, 1), (0, 2), (1, 1)]


def test_drop_oldest_drops_the_oldest_of_the_lowest_lanes_first() -> None:
    inbox = Inbox(capacity=3, drop_oldest=True)
    for item in [(0, 0, 5), (0, 1, 0), (0, 2, 5)]:
        inbox.push(parcel(*item))
    dropped = inbox.push(parcel(0, 3, 5))
    assert dropped is not None and (dropped.seq, dropped.priority) == (1, 0)
    assert drain(inbox) == [(0, 0), (0, 2), (0, 3)]
