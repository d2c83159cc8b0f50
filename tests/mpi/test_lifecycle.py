"""A Geode's life at scale: nothing of it stays once closed, repeated cycles agree."""

from __future__ import annotations

import gc
import weakref

from geode_mpi import Geode


def test_a_closed_geode_is_garbage_once_dropped() -> None:
    """Nothing (the registry, atexit, the transport's hooks) holds a closed Geode: cycles of
    open and close keep no memory."""
    geode = Geode()
    geode.send(geode.rank, dest="node0")
    ref = weakref.ref(geode)
    geode.close(timeout=60)
    del geode
    gc.collect()
    assert ref() is None


def test_many_open_close_cycles_deliver_everything() -> None:
    for cycle in range(20):
        with Geode() as geode:
            for node in geode.local_nodes:
                geode.send((cycle, node), node, "node0")
            if geode.hosts("node0"):
                got = [geode.receive("node0", timeout=60).data for _ in geode.nodes]
                assert sorted(got) == sorted((cycle, node) for node in geode.nodes)
