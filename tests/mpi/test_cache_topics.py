"""The payload cache on topics over MPI: a shared array published again moves a reference to
every member rank, through the node's shared segment or down relays the first time."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_cache import wait_for_copies
from test_checkpoints import barrier, shared_directory

from geode_mpi import Geode, QueueConfig, share
from geode_mpi.transport.relayplan import shape_for

TIMEOUT = 60.0
MIB = 2**20


def one_per_rank(geode: Geode) -> list[str]:
    return geode.nodes[: geode.size]  # (the embedded world has more nodes than ranks)


def publish_and_receive(geode: Geode, topic: Any, data: Any, step: int) -> tuple[Any, int]:
    """Rank 0's node0 publishes ``{"step", "data"}``; every subscriber here receives it.
    What this rank's node received, and the bytes rank 0 handed the transport through the
    cache (0 elsewhere)."""
    start = geode.cache_stats().wire_bytes
    handle = topic.publish({"step": step, "data": data}, "node0") if geode.rank == 0 else None
    got = geode.receive(geode.node, topic=topic.name, timeout=TIMEOUT).data
    assert got["step"] == step and np.array_equal(got["data"], data)
    assert not got["data"].flags.writeable
    if handle is not None:
        handle.wait(timeout=TIMEOUT)
    return got["data"], geode.cache_stats().wire_bytes - start


@pytest.mark.parametrize("path", ["segment", "relays"])
def test_second_publish_of_16_mib_moves_under_1_kib_per_member_rank(
    geode: Geode, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The first publish reaches the other ranks through the node's shared segment (or down
    relays without one); later ones move a reference, resolved by each rank from its own
    store: no new copy there, and none on the publisher's rank either."""
    if path == "relays":
        monkeypatch.setenv("GEODE_SHARED_BYTES", "0")  # read at the first topic
    topic = geode.topic("mesh", publishers=["node0"], subscribers=one_per_rank(geode))
    mesh = share(np.random.default_rng(4).random(2 * MIB))  # 16 MiB, the same on every rank
    got, moved = zip(
        *(publish_and_receive(geode, topic, mesh, step) for step in range(3)), strict=True
    )
    members = geode.size - 1
    if geode.rank == 0:
        assert moved[0] >= 16 * MIB * members
        for later in moved[1:]:
            assert later < 1024 * max(members, 1), f"a later publish moved {later} bytes"
        assert all(np.shares_memory(data, mesh) for data in got), "copied for node0"
        assert geode.cache_stats().hits == 2 * members
    else:
        assert np.shares_memory(got[0], got[2]), f"rank {geode.rank} made a new copy"
        assert geode.cache_stats().kept_bytes == 16 * MIB
    relayed = getattr(geode.transport, "relayed", 0)
    family = getattr(geode.transport, "family", None)
    # (the first publish only: references are never relayed; with a segment the first goes
    # through it, unless the ranks are not on one node: MPICH's network path, no segment)
    network = any(map(geode._runtime.path.network, range(geode.size)))
    if (path == "relays" or network) and shape_for(mesh.nbytes, members, family) is not None:
        assert relayed == 1
    else:
        assert relayed == 0


def test_ranks_that_join_get_it_in_full_with_the_retained_replay(geode: Geode) -> None:
    nodes = one_per_rank(geode)
    topic = geode.topic("mesh", publishers=["node0"], subscribers=nodes[:2], retain=1)
    mesh = share(np.arange(MIB, dtype=np.float64))  # 8 MiB
    if geode.rank < 2:
        for step in range(2):
            publish_and_receive(geode, topic, mesh, step)
    else:
        assert geode.cache_stats().kept_bytes == 0
    topic.subscribe(nodes)  # the ranks from 2 on join: the stream's cache starts again
    if geode.rank >= 2:  # the retained message, replayed: it resolves here
        replayed = geode.receive(geode.node, topic="mesh", timeout=TIMEOUT).data
        assert replayed["step"] == 1 and np.array_equal(replayed["data"], mesh)
    # (a new epoch: the first publish stores it on every member rank again, the next is a
    # hit on each; the replay, a copy of what was published, went in full outside the cache)
    members = geode.size - 1
    _, moved = publish_and_receive(geode, topic, mesh, 2)
    if geode.rank == 0 and geode.size > 2:  # (at 1 or 2 ranks no rank joined)
        assert moved >= 8 * MIB * members
    hits = geode.cache_stats().hits
    _, moved = publish_and_receive(geode, topic, mesh, 3)
    if geode.rank == 0:
        assert moved < 1024 * max(members, 1)
        assert geode.cache_stats().hits - hits == members
    if geode.size == 1:
        return
    topic.unsubscribe(nodes[-1])  # a rank leaves: a new epoch again
    if geode.rank < geode.size - 1:
        for step in (4, 5):
            hits = geode.cache_stats().hits
            _, moved = publish_and_receive(geode, topic, mesh, step)
            if geode.rank == 0 and step == 4:
                assert moved >= 8 * MIB * (members - 1) or members == 1
            if geode.rank == 0 and step == 5:
                assert moved < 1024 * members and geode.cache_stats().hits - hits == members - 1
    else:
        assert geode.cache_stats().kept_bytes == 0  # what it held from the stream went
        assert geode.try_receive(geode.node) is None


def test_eviction_keeps_each_stream_within_its_budget() -> None:
    with Geode(cache_bytes=3 * MIB) as geode:
        topic = geode.topic("mesh", publishers=["node0"], subscribers=one_per_rank(geode))
        arrays = [share(np.full(MIB // 8, 10.0 * k)) for k in range(4)]  # 1 MiB
        hits = []
        for step, k in enumerate([0, 1, 2, 3, 0, 2, 1]):  # 3 evicts 0, 0 evicts 1; 2 a hit
            start = geode.cache_stats().hits
            publish_and_receive(geode, topic, arrays[k], step)
            hits.append(geode.cache_stats().hits - start)
        members = geode.size - 1
        if geode.rank == 0:
            assert hits == [0, 0, 0, 0, 0, members, 0]
            stats = geode.cache_stats()
            assert stats.evictions == 3 * members and stats.held_bytes == 3 * MIB * members
        else:
            assert geode.cache_stats().kept_bytes == 3 * MIB


def test_resent_publishes_that_refer_to_a_shared_array_resolve() -> None:
    explicit = QueueConfig(ack="explicit")
    with Geode(resend_after=0.02, queue=explicit) as geode:
        topic = geode.topic("mesh", publishers=["node0"], subscribers=one_per_rank(geode))
        mesh = share(np.full(MIB // 8, 2.0))
        if geode.rank == 0:  # a store, then a reference: both resent until acknowledged
            topic.publish(mesh, "node0")
            assert geode.cache_stats().stores == geode.size - 1  # (nothing resent before it)
            topic.publish(mesh, "node0")
        got = [geode.receive(geode.node, topic="mesh", timeout=TIMEOUT) for _ in range(2)]
        wait_for_copies(geode)  # meanwhile they come again, point-to-point, and are dropped
        for message in got:
            assert np.array_equal(message.data, mesh)
            message.ack()
        if geode.size > 1 and geode.rank > 0:
            assert geode.stats().duplicates >= 2


def test_a_restart_starts_with_empty_stores() -> None:
    with Geode() as probe:
        size = probe.size
    directory: Path = shared_directory(size)
    try:
        mesh = share(np.full(MIB // 8, 4.0))
        with Geode(checkpoint_dir=directory) as first:
            topic = first.topic("mesh", publishers=["node0"], subscribers=one_per_rank(first))
            publish_and_receive(first, topic, mesh, 0)
            first.checkpoint()
        with Geode(checkpoint_dir=directory, restart=True) as second:
            topic = second.topic("mesh", publishers=["node0"], subscribers=one_per_rank(second))
            assert second.cache_stats().kept_bytes == 0
            _, moved = publish_and_receive(second, topic, mesh, 1)
            _, again = publish_and_receive(second, topic, mesh, 2)
            members = second.size - 1
            if second.rank == 0:
                assert moved >= MIB * members  # in full again: no rank holds it any more
                assert again < 1024 * max(members, 1)
                assert second.cache_stats().stores == members
    finally:
        barrier(size)
        if size == 1 or probe.rank == 0:
            shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("nbytes", [100_000, 2 * MIB])
def test_a_member_rank_cannot_make_what_it_keeps_writable(geode: Geode, nbytes: int) -> None:
    """A member rank's subscriber could turn ``flags.writeable`` back on for a shared array
    under `SHARED_MIN` (a view of the writable receive buffer the rank keeps), and a write
    changed what the next publish of it delivered. Needs a rank besides the publisher's
    (there, an array under `SHARED_MIN` arrives as a private copy: one rank checks values)."""
    topic = geode.topic("mesh", publishers=["node0"], subscribers=one_per_rank(geode))
    mesh = share(np.arange(nbytes).astype(np.uint8))
    for _ in range(2):
        handle = topic.publish(mesh, "node0") if geode.rank == 0 else None
        got = geode.receive(geode.node, topic=topic.name, timeout=TIMEOUT).data
        if handle is not None:
            handle.wait(timeout=TIMEOUT)
        assert np.array_equal(got, np.arange(nbytes).astype(np.uint8))
        if geode.rank != 0:
            with pytest.raises(ValueError, match="WRITEABLE"):
                got.flags.writeable = True
            with pytest.raises(ValueError, match="WRITEABLE"):
                got[10:].flags.writeable = True
        elif got.flags.writeable:  # (a private copy: writing it changes nothing kept)
            got[:5] = 7
