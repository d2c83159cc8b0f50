"""Many nodes in a job: a bound on their number, and start-up that grows with it linearly."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from geode_mpi import Geode, QueueConfig, WorldMismatchError
from geode_mpi.core.placement import MAX_NODES
from geode_mpi.transport import InProcHub


def test_a_job_of_more_than_a_million_nodes_is_refused_with_the_count_and_the_limit() -> None:
    with pytest.raises(
        ValueError, match=r"nodes must be at most 1,000,000 per job, got 10,000,000"
    ):
        Geode(10**7)
    names = [f"n{k}" for k in range(MAX_NODES + 1)]
    with pytest.raises(ValueError, match=r"at most 1,000,000 per job, got 1,000,001 \("):
        Geode(names)


def test_starting_20000_nodes_writes_each_distinct_queue_setting_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The settings the ranks compare held one repr per node (30% of start-up)."""
    written = []
    shown = QueueConfig.__repr__

    def counted(config: QueueConfig) -> str:
        written.append(config)
        return shown(config)

    monkeypatch.setattr(QueueConfig, "__repr__", counted)
    special = QueueConfig(capacity=50_000)
    with Geode(20_000, queues={"node7": special, 9: QueueConfig(capacity=50_000)}):
        pass
    assert len(written) == 3  # the default, and the two objects given (before: 20,000)


def test_starting_20000_nodes_sets_off_no_full_garbage_collection() -> None:
    """Each node's new objects set off collections of all the older ones: start-up grew
    faster than the node count (40,000 nodes: 4.1 s, 1.25 s now; 100,000: 11.8 s, 3 s)."""
    full: list[Any] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(info)

    # What earlier tests left pending (a young generation's count at its threshold, survivors
    # beyond a quarter of the old) would let any collection go full: cleared first, so that
    # only what the Geode sets off counts (CI ran the unit tests after the rest: it failed
    # there, never alone)
    gc.collect()
    gc.callbacks.append(note)
    try:
        with Geode(20_000) as geode:
            assert geode.local_nodes[-1] == "node19999"
    finally:
        gc.callbacks.remove(note)
    assert full == [] and gc.isenabled()
    gc.disable()  # a program that holds the collector off keeps it off
    try:
        Geode(8).close()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_ranks_still_disagree_about_one_node_s_queue_setting() -> None:
    hub = InProcHub(2)
    same = QueueConfig(capacity=100)
    Geode(6, queues={"node5": same}, transport=hub.endpoint(0))
    Geode(6, queues={"node5": QueueConfig(capacity=100)}, transport=hub.endpoint(1))
    hub = InProcHub(2)
    Geode(6, queues={"node5": same}, transport=hub.endpoint(0))
    with pytest.raises(WorldMismatchError, match="rank 1 disagrees with rank 0 about"):
        Geode(6, queues={"node4": same}, transport=hub.endpoint(1))
