"""close() at once after traffic, after a checkpoint, with topics open: what was sent arrives,
and stays receivable once closed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from test_checkpoints import barrier, shared_directory

from geode_mpi import Geode

TIMEOUT = 60.0
LARGE = 300_000  # float64 elements: 2.4 MB, sent in a rendezvous, not eagerly


def expect(geode: Geode, node: str, count: int) -> list[object]:
    return [geode.receive(node, timeout=TIMEOUT).data for _ in range(count)]


def test_close_right_after_traffic_delivers_every_small_and_large_message() -> None:
    geode = Geode()
    for node in geode.local_nodes:
        for dest in geode.nodes:
            geode.send((node, dest), node, dest)
            geode.send(np.full(LARGE, geode.nodes.index(node), np.float64), node, dest)
    geode.close(timeout=TIMEOUT)
    for node in geode.local_nodes:
        got = expect(geode, node, 2 * len(geode.nodes))
        pairs = sorted(item for item in got if isinstance(item, tuple))
        assert pairs == sorted((source, node) for source in geode.nodes)
        arrays = [item for item in got if isinstance(item, np.ndarray)]
        assert sorted(int(array[-1]) for array in arrays) == list(range(len(geode.nodes)))
        assert all(array.shape == (LARGE,) and array.min() == array[-1] for array in arrays)


def test_close_right_after_a_checkpoint_with_messages_queued_and_in_flight() -> None:
    with Geode() as probe:
        size = probe.size
    directory = shared_directory(size)
    try:
        geode = Geode(checkpoint_dir=directory)
        for node in geode.local_nodes:
            for dest in geode.nodes:
                geode.send(("before", node), node, dest)
        geode.checkpoint(state={"step": 1})
        for node in geode.local_nodes:
            for dest in geode.nodes:
                geode.send(("after", node), node, dest)
        geode.close(timeout=TIMEOUT)
        for node in geode.local_nodes:
            got = expect(geode, node, 2 * len(geode.nodes))
            want = [(when, source) for when in ("before", "after") for source in geode.nodes]
            assert sorted(got) == sorted(want)  # type: ignore[type-var]
    finally:
        barrier(size)
        if probe.rank == 0:
            shutil.rmtree(Path(directory), ignore_errors=True)


def test_close_with_topics_open_delivers_what_was_just_published() -> None:
    geode = Geode()
    small = geode.topic("small", publishers=["node0"], subscribers=geode.nodes)
    large = geode.topic("large", publishers=[geode.nodes[-1]], subscribers=geode.nodes)
    if geode.hosts("node0"):
        for k in range(5):
            small.publish(k, "node0")
    if geode.hosts(geode.nodes[-1]):
        large.publish(np.arange(LARGE, dtype=np.float64), geode.nodes[-1])
    geode.close(timeout=TIMEOUT)
    for node in geode.local_nodes:
        got = expect(geode, node, 6)
        assert [item for item in got if isinstance(item, int)] == [0, 1, 2, 3, 4]
        (array,) = [item for item in got if isinstance(item, np.ndarray)]
        assert np.array_equal(array, np.arange(LARGE, dtype=np.float64))


def _queued(geode: Geode, node: str) -> list[object]:
    """Everything queued at ``node`` once closed (close() delivered all there is)."""
    got = []
    while (msg := geode.try_receive(node)) is not None:
        got.append(("array", msg.origin) if isinstance(msg.data, np.ndarray) else msg.data)
    return got


def test_close_forwards_what_is_still_on_its_way_to_a_total_order_sequencer() -> None:
    """node1 publishes a large array on a total-order topic whose sequencer is node0, then
    every rank closes: the array reached node0's rank only inside close()'s count, and was
    never sent on (1 rank: the embedded world, closed before anything forwarded it)."""
    geode = Geode(nodes=four_or_more())
    nodes = geode.nodes
    votes = geode.topic("votes", nodes[:2], nodes[2:4], total_order=True)
    votes.publish(np.ones(2**16), source=nodes[1])  # 512 KiB: frames of their own
    votes.publish("small", source=nodes[1])
    geode.close(timeout=TIMEOUT)
    for node in geode.local_nodes:
        want = [("array", nodes[1]), "small"] if node in nodes[2:4] else []
        assert _queued(geode, node) == want, node


def test_close_hands_out_a_task_still_on_its_way_to_the_dispatcher() -> None:
    """node1 puts a task on a work queue whose dispatcher is node0, then every rank closes:
    the task reaches a consumer's queue (before: it stopped at the dispatcher's rank)."""
    geode = Geode(nodes=four_or_more())
    nodes = geode.nodes
    tasks = geode.work_queue("tasks", consumers=nodes[2:4], dispatcher=nodes[0])
    tasks.put(np.ones(2**16), source=nodes[1])
    geode.close(timeout=TIMEOUT)
    held = 0
    for node in geode.local_nodes:
        while (task := geode.try_receive(node)) is not None:
            assert node in nodes[2:4] and task.work_queue == "tasks" and task.data.sum() == 2**16
            held += 1
    assert sum(gather_ints(geode, held)) == 1


def four_or_more() -> int:
    """Four nodes, or one per rank: node0 and node1 on ranks of their own from 2 ranks on."""
    with Geode() as probe:
        return max(4, probe.size)


def gather_ints(geode: Geode, value: int) -> list[int]:
    if geode.size == 1:
        return [value]
    from mpi4py import MPI

    return list(MPI.COMM_WORLD.allgather(value))
