"""Shared arrays across a checkpoint and a restart on another number of ranks
(tests/test_cache_restart.py).

``save DIR``: every node sends the same shared array to the next node three times (a store, then
two references), and nothing is received; then a checkpoint. ``load DIR``: restart on any number
of ranks: every node receives the three arrays whole (the queues saved the real bytes), the
cache starts empty (the first send after the restart moves the array again), and still works.
"""

from __future__ import annotations

import sys

import numpy as np

from geode_mpi import CacheStats, Geode, share

NODES = [f"n{k}" for k in range(4)]
COPIES = 3
TIMEOUT = 60.0


def grid(index: int) -> np.ndarray:
    return np.arange(50_000, dtype=np.float64) + index  # 400 kB: cached


def save(directory: str) -> None:
    geode = Geode(NODES, checkpoint_dir=directory)
    for node in geode.local_nodes:
        index = NODES.index(node)
        shared = share(grid(index))
        for _ in range(COPIES):
            geode.send(shared, node, NODES[(index + 1) % len(NODES)])
    geode.checkpoint(timeout=TIMEOUT)
    stats = geode.cache_stats()
    assert stats.hits == (COPIES - 1) * len(geode.local_nodes), stats
    geode.close(timeout=TIMEOUT)
    if geode.rank == 0:
        print(f"saved on {geode.size} ranks")


def load(directory: str) -> None:
    geode = Geode(NODES, checkpoint_dir=directory, restart=True)
    assert geode.cache_stats() == CacheStats(budget=geode.cache_stats().budget)
    for node in geode.local_nodes:
        before = NODES[(NODES.index(node) - 1) % len(NODES)]
        for _ in range(COPIES):
            got = geode.receive(node, source=before, timeout=TIMEOUT).data
            assert np.array_equal(got, grid(NODES.index(before))), node
    for node in geode.local_nodes:
        index = NODES.index(node)
        shared = share(grid(index))
        for _ in range(2):
            geode.send(shared, node, NODES[(index + 1) % len(NODES)])
    for node in geode.local_nodes:
        before = NODES[(NODES.index(node) - 1) % len(NODES)]
        for _ in range(2):
            got = geode.receive(node, source=before, timeout=TIMEOUT).data
            assert np.array_equal(got, grid(NODES.index(before))), node
    stats = geode.cache_stats()
    local = len(geode.local_nodes)
    assert (stats.stores, stats.hits) == (local, local), stats  # stored again after restart
    geode.close(timeout=TIMEOUT)
    if geode.rank == 0:
        print(f"restored on {geode.size} ranks")


if __name__ == "__main__":
    {"save": save, "load": load}[sys.argv[1]](sys.argv[2])
