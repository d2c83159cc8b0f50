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
