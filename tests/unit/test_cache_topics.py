"""The payload cache on topics (in-process transport): a shared array published again moves a
reference to every member rank, decided once per stream."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, share
from geode_mpi.delivery.cache import CACHE_MIN, PayloadCache
from geode_mpi.errors import DecodeError
from geode_mpi.transport import InProcHub

MIB = 2**20
TIMEOUT = 10.0


def world(ranks: int, nodes: int | None = None, **options: Any) -> list[Geode]:
    """``ranks`` simulated ranks in one process (node k on rank k mod ranks)."""
    hub = InProcHub(ranks)
    return [Geode(nodes or ranks, transport=hub.endpoint(r), **options) for r in range(ranks)]


@pytest.fixture
def four() -> Iterator[list[Geode]]:
    geodes = world(4)
    yield geodes
    for geode in geodes:
        geode.close()


def publish(geodes: list[Geode], topics: list[Any], data: Any, subscribers: Sequence[str]) -> int:
    """Publish ``data`` from node0 and receive it on every subscriber (checking it arrived
    equal); the bytes the publish handed the transport through the cache."""
    before = geodes[0].cache_stats().wire_bytes
    topics[0].publish(data, "node0")
    for node in subscribers:
        rank = int(node[4:]) % len(geodes)
        got = geodes[rank].receive(node, timeout=TIMEOUT).data
        assert np.array_equal(got, data) and not got.flags.writeable
    return geodes[0].cache_stats().wire_bytes - before


def topic_on(geodes: list[Geode], subscribers: Sequence[str], **options: Any) -> list[Any]:
    return [g.topic("mesh", ["node0"], list(subscribers), **options) for g in geodes]


def test_second_publish_of_16_mib_moves_under_1_kib_per_member_rank(four: list[Geode]) -> None:
    subscribers = ["node1", "node2", "node3"]
    topics = topic_on(four, subscribers)
    mesh = share(np.random.default_rng(3).random(2 * MIB))  # 16 MiB
    first = publish(four, topics, mesh, subscribers)
    second = publish(four, topics, {"step": 2, "mesh": mesh}["mesh"], subscribers)
    assert first >= 3 * 16 * MIB  # counted per member rank, as three sends would be
    assert second < 3 * 1024, f"the second publish moved {second} bytes"
    stats = four[0].cache_stats()
    assert (stats.stores, stats.hits, stats.saved_bytes) == (3, 3, 3 * 16 * MIB)
    assert stats.held_bytes == 3 * 16 * MIB
    assert [g.cache_stats().kept_bytes for g in four] == [0, 16 * MIB, 16 * MIB, 16 * MIB]


def test_subscribers_in_the_publishers_process_get_views_of_the_shared_array() -> None:
    """The embedded world, and subscribers on the publisher's rank: no copy per publish."""
    with Geode(4) as geode:
        topic = geode.topic("mesh", ["node0"], ["node1", "node2", "node3"])
        mesh = share(np.arange(2 * MIB, dtype=np.float64))
        for _ in range(2):
            topic.publish(mesh, "node0")
            for node in ("node1", "node2", "node3"):
                got = geode.receive(node, timeout=TIMEOUT).data
                assert np.array_equal(got, mesh) and not got.flags.writeable
                assert np.shares_memory(got, mesh), "a shared array was copied for a subscriber"


def test_subscribers_on_one_member_rank_share_its_one_stored_copy() -> None:
    geodes = world(2, nodes=4)  # node1 and node3 on rank 1
    topics = topic_on(geodes, ["node1", "node3"])
    mesh = share(np.ones(MIB))  # 8 MiB: sealed on the member rank
    got = []
    for _ in range(2):
        topics[0].publish(mesh, "node0")
        got += [geodes[1].receive(node, timeout=TIMEOUT).data for node in ("node1", "node3")]
    assert all(np.shares_memory(got[0], other) for other in got[1:])
    assert geodes[1].cache_stats().kept_bytes == 8 * MIB
    for geode in geodes:
        geode.close()


def test_a_rank_that_joins_gets_the_array_in_full_and_a_replay_resolves(
    four: list[Geode],
) -> None:
    topics = topic_on(four, ["node1"], retain=1)
    mesh = share(np.full(MIB // 8, 7.0))
    assert publish(four, topics, mesh, ["node1"]) >= MIB
    assert publish(four, topics, mesh, ["node1"]) < 1024
    # (the publisher's rank last: one thread drives every rank, and what the hub delivers to
    # a rank that has not subscribed yet has no subscriber there)
    for topic in reversed(topics):  # rank 2 joins: it holds nothing, the stream starts again
        topic.subscribe("node2")
    replayed = four[2].receive("node2", timeout=TIMEOUT).data  # the retained message
    assert np.array_equal(replayed, mesh)
    assert four[1].try_receive("node1") is None  # (node1 had it: it skips the replay)
    # (a retained message is a copy, its bytes as published: replayed in full, not stored)
    assert publish(four, topics, mesh, ["node1", "node2"]) >= 2 * MIB  # a new epoch
    assert publish(four, topics, mesh, ["node1", "node2"]) < 2 * 1024
    for topic in reversed(topics):  # a rank that leaves: a new epoch, the stores start again
        topic.unsubscribe("node2")
    assert four[2].cache_stats().kept_bytes == 0
    assert publish(four, topics, mesh, ["node1"]) >= MIB
    assert publish(four, topics, mesh, ["node1"]) < 1024
    assert four[0].cache_stats().held_bytes == MIB  # (one member rank holds it)
    for topic in reversed(topics):  # back again: it joins, and holds nothing
        topic.subscribe(["node2", "node3"])
    assert np.array_equal(four[2].receive("node2", timeout=TIMEOUT).data, mesh)  # the replay
    assert np.array_equal(four[3].receive("node3", timeout=TIMEOUT).data, mesh)
    assert publish(four, topics, mesh, ["node1", "node2", "node3"]) >= 3 * MIB
    assert publish(four, topics, mesh, ["node1", "node2", "node3"]) < 3 * 1024


def test_a_subscriber_on_a_rank_that_already_receives_keeps_the_stream_cache() -> None:
    geodes = world(2, nodes=4)
    topics = topic_on(geodes, ["node1"])
    mesh = share(np.full(MIB // 8, 3.0))
    assert publish(geodes, topics, mesh, ["node1"]) >= MIB
    for topic in reversed(topics):
        topic.subscribe("node3")  # on rank 1 too: the member ranks did not change
    assert publish(geodes, topics, mesh, ["node1", "node3"]) < 1024
    for geode in geodes:
        geode.close()


def test_eviction_keeps_each_stream_within_its_budget() -> None:
    geodes = world(3, cache_bytes=3 * MIB)
    subscribers = ["node1", "node2"]
    topics = topic_on(geodes, subscribers)
    arrays = [share(np.full(MIB // 8, 10.0 * k)) for k in range(4)]  # 1 MiB each
    hits = []
    for k in [0, 1, 2, 3, 0, 2, 1]:  # 3 evicts 0; 0 evicts 1; 2 is a hit; 1 evicts 3
        before = geodes[0].cache_stats().hits
        publish(geodes, topics, arrays[k], subscribers)
        hits.append(geodes[0].cache_stats().hits - before)
    assert hits == [0, 0, 0, 0, 0, 2, 0]  # counted per member rank
    stats = geodes[0].cache_stats()
    assert stats.evictions == 3 * 2 and stats.held_bytes == 2 * 3 * MIB
    assert [g.cache_stats().kept_bytes for g in geodes[1:]] == [3 * MIB, 3 * MIB]
    for geode in geodes:
        geode.close()
        assert geode.cache_stats().kept_bytes == geode.cache_stats().held_bytes == 0


def test_topic_and_pair_caches_are_separate(four: list[Geode]) -> None:
    """An array a rank holds from its pair with the publisher still moves in full on the
    topic the first time (the stream's mirror knows only the stream), and the reverse."""
    topics = topic_on(four, ["node1"])
    mesh = share(np.full(MIB // 8, 5.0))
    four[0].send(mesh, "node0", "node1")
    four[1].receive("node1", timeout=TIMEOUT)
    assert publish(four, topics, mesh, ["node1"]) >= MIB
    assert publish(four, topics, mesh, ["node1"]) < 1024
    four[0].send(mesh, "node0", "node1")  # a hit on the pair
    assert np.array_equal(four[1].receive("node1", timeout=TIMEOUT).data, mesh)
    assert four[1].cache_stats().kept_bytes == 2 * MIB
    assert four[0].cache_stats().hits == 2


def test_a_total_order_topic_moves_the_array_once_per_hop() -> None:
    geodes = world(3)
    subscribers = ["node0", "node2"]
    topics = [
        g.topic("mesh", ["node1"], subscribers, total_order=True, sequencer="node0") for g in geodes
    ]
    mesh = share(np.full(MIB // 8, 9.0))
    for _ in range(3):
        topics[1].publish(mesh, "node1")
        for node in subscribers:
            rank = int(node[4:])
            assert np.array_equal(geodes[rank].receive(node, timeout=TIMEOUT).data, mesh)
    publisher, sequencer = geodes[1].cache_stats(), geodes[0].cache_stats()
    assert (publisher.stores, publisher.hits) == (1, 2)  # node1 -> the sequencer
    assert (sequencer.stores, sequencer.hits) == (1, 2)  # its stream -> rank 2
    for geode in geodes:
        geode.close()


def test_a_stream_reference_to_an_array_not_held_is_a_decode_error() -> None:
    sender, receiver = PayloadCache(), PayloadCache()
    shared = share(np.ones(CACHE_MIN))
    sent: list[tuple[bytes, list[np.ndarray[Any, Any]]]] = []

    class Capture:
        def broadcast(self, key: int, meta: bytes, frames: list[np.ndarray[Any, Any]]) -> None:
            sent.append((meta, list(frames)))

    for _ in range(2):
        sender.broadcast(Capture(), 7 << 20, 3, b"codec meta", [shared])  # type: ignore[arg-type]
    (meta0, frames0), (meta1, frames1) = sent
    assert frames1[0].nbytes == 0
    receiver.arrived(0, memoryview(meta0), frames0, len(meta0))
    meta, frames, _ = receiver.arrived(0, memoryview(meta1), frames1, len(meta1))
    assert bytes(meta) == b"codec meta" and np.array_equal(frames[0].view(np.float64), shared)
    with pytest.raises(DecodeError, match=r"rank 1 \(stream 7340032\) referred to shared array"):
        PayloadCache().arrived(1, memoryview(meta1), frames1, len(meta1))
    with pytest.raises(DecodeError, match="rank 0 referred"):  # not the pair's store
        fresh = PayloadCache()
        fresh.arrived(0, memoryview(meta0), frames0, len(meta0))
        pair = bytearray(meta1)
        pair[8:16] = bytes(8)  # stream 0: the pair's store, which holds nothing
        fresh.arrived(0, memoryview(bytes(pair)), frames1, len(pair))
    receiver.stream_changed(7 << 20, reset=False, member=False)  # it left: the store goes
    assert receiver.stats().kept_bytes == 0


def test_what_a_member_stores_of_the_new_epoch_before_it_sees_the_change_stays() -> None:
    """A pattern subscription changes several topics in turn; a root that is ahead may publish
    on the new stream while a joining rank still waits for another topic's old stream to end.
    What it stores then is the new epoch's: its own change must keep it (it dropped it, and
    every later reference to the array failed on that rank)."""
    number = 9 << 20
    root, member = PayloadCache(), PayloadCache()
    shared = share(np.ones(CACHE_MIN))
    sent: list[tuple[bytes, list[np.ndarray[Any, Any]]]] = []

    class Capture:
        def broadcast(self, key: int, meta: bytes, frames: list[np.ndarray[Any, Any]]) -> None:
            sent.append((meta, list(frames)))

    root.stream_changed(number, reset=True, member=False)  # the root's change, first
    root.broadcast(Capture(), number, 1, b"m", [shared])  # type: ignore[arg-type]
    member.arrived(0, memoryview(sent[0][0]), sent[0][1], len(sent[0][0]))  # stored early
    member.stream_changed(number, reset=True, member=True)  # the member's change, late
    root.broadcast(Capture(), number, 1, b"m", [shared])  # type: ignore[arg-type]
    assert sent[1][1][0].nbytes == 0  # a reference
    _, frames, _ = member.arrived(0, memoryview(sent[1][0]), sent[1][1], len(sent[1][0]))
    assert np.array_equal(frames[0].view(np.float64), shared)
    member.stream_changed(number, reset=True, member=True)  # the next change: all goes
    assert member.stats().kept_bytes == 0


def test_a_retained_shared_array_is_replayed_as_it_was_published(four: list[Geode]) -> None:
    """Its owner may make it writable again through its base (which the next send of it
    refuses): the retained copy keeps the bytes as published, and a new subscriber's
    collective subscribe does not fail on the publisher's rank alone."""
    topics = topic_on(four, ["node1"], retain=1)
    mesh = share(np.full(MIB // 8, 7.0))
    publish(four, topics, mesh, ["node1"])
    assert mesh.base is not None
    mesh.base.flags.writeable = True
    mesh.base[:] = 0
    for topic in reversed(topics):  # (the publisher's rank last: see above)
        topic.subscribe("node2")
    replayed = four[2].receive("node2", timeout=TIMEOUT).data
    assert np.array_equal(replayed, np.full(MIB // 8, 7.0))
