"""Checkpoints at 1, 2 and 4 ranks: a consistent cut with messages in flight, then a fresh
Geode restarts from it: every queued message once, sequence numbers continuing, state back."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_credits import four_or_more

from geode_mpi import Geode, Message, QueueConfig, ReceiveTimeout
from geode_mpi.persistence import CheckpointError
from geode_mpi.persistence import store as store_module

TIMEOUT = 60.0


def shared_directory(size: int) -> Path:
    """A fresh directory every rank uses (rank 0 makes it)."""
    if size == 1:
        return Path(tempfile.mkdtemp(prefix="geode-ckpt-"))
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    name = tempfile.mkdtemp(prefix="geode-ckpt-") if comm.Get_rank() == 0 else None
    return Path(comm.bcast(name, root=0))


def barrier(size: int) -> None:
    if size > 1:
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()


def test_a_restart_continues_with_the_queued_messages_and_the_numbers(directory: Path) -> None:
    first = Geode(checkpoint_dir=directory)
    nodes = first.nodes
    # Every node sends three messages to every node; none is received before the checkpoint.
    for source in first.local_nodes:
        for dest in nodes:
            for k in range(3):
                first.send(Message((source, k, np.full(3000, k))), source, dest)
    epoch = first.checkpoint(state={"step": 7, "grid": np.arange(6.0), "notes": {"a": [1, 2]}})
    assert epoch == 1
    first.close(timeout=TIMEOUT)  # what was in its queues is lost with it: only the file remains

    second = Geode(checkpoint_dir=directory, restart=True)
    assert second.restored_epoch == 1
    state = second.restored_state
    assert state is not None and state["step"] == 7 and state["notes"] == {"a": [1, 2]}
    assert np.array_equal(state["grid"], np.arange(6.0))
    for node in second.local_nodes:
        got = [second.receive(node, timeout=TIMEOUT) for _ in range(3 * len(nodes))]
        per_source = {}
        for msg in got:
            per_source.setdefault(msg.source, []).append((msg.seq, msg.data[1]))
            assert msg.data[2][-1] == msg.data[1]
        assert per_source == {source: [(k, k) for k in range(3)] for source in nodes}
    barrier(second.size)
    for node in second.local_nodes:
        assert second.try_receive(node) is None  # each restored message came once
    barrier(second.size)
    # New messages continue each pair's numbers: no clash with the restored ones.
    for source in second.local_nodes:
        for dest in nodes:
            second.send(Message("after"), source, dest)
    for node in second.local_nodes:
        after = [second.receive(node, timeout=TIMEOUT) for _ in range(len(nodes))]
        assert sorted(msg.seq for msg in after) == [3] * len(nodes)
        assert second.stats(node).duplicates == 0
    second.close(timeout=TIMEOUT)


def test_a_restart_with_other_nodes_says_what_was_saved(directory: Path) -> None:
    with Geode(checkpoint_dir=directory) as geode:
        geode.checkpoint()
        nodes = list(geode.nodes)
    with pytest.raises(CheckpointError, match="saved with nodes"):
        Geode([*nodes, "extra"], checkpoint_dir=directory, restart=True)


def test_a_restart_without_a_checkpoint_starts_afresh(directory: Path) -> None:
    with Geode(checkpoint_dir=directory, restart=True) as geode:
        assert geode.restored_state is None and geode.restored_epoch is None
        assert geode.checkpoint(state={"x": 1}) == 1
        assert geode.checkpoint(state={"x": 2}) == 2


def test_topic_messages_in_flight_are_in_the_checkpoint(directory: Path) -> None:
    first = Geode(checkpoint_dir=directory)
    nodes = first.nodes
    topic = first.topic("news", publishers=nodes[:1], subscribers=nodes, retain=2)
    for k in range(6):
        topic.publish(np.full(50_000, k), source=nodes[0])  # 400 kB: broadcast frames
    first.checkpoint()  # right away: broadcasts still moving when it starts
    first.close(timeout=TIMEOUT)
    second = Geode(checkpoint_dir=directory, restart=True)
    again = second.topic("news", publishers=nodes[:1], subscribers=nodes, retain=2)
    again.publish(np.full(10, 6), source=nodes[0])
    for node in second.local_nodes:
        got = [second.receive(node, timeout=TIMEOUT, topic="news") for _ in range(7)]
        assert [int(msg.data[0]) for msg in got] == list(range(7))
        assert [msg.seq for msg in got] == list(range(7))
        assert second.stats(node).duplicates == 0
    second.close(timeout=TIMEOUT)


def test_subscribers_added_later_are_in_the_checkpoint(directory: Path) -> None:
    """A subscriber added by ``subscribe`` (or a pattern) before the checkpoint got nothing
    after the restart: only the ``topic()`` arguments of the restarted job were its members."""
    node_count = four_or_more()
    first = Geode(node_count, checkpoint_dir=directory)
    news = first.topic("news", publishers=["node0"], subscribers=["node1"], retain=2)
    for k in range(3):
        news.publish(k, source="node0")
    news.subscribe("node2")  # the retained 1 and 2 first
    first.subscribe("node3", "ne*")  # likewise, through a pattern
    news.publish(3, source="node0")
    wanted = {"node1": [0, 1, 2, 3], "node2": [1, 2, 3], "node3": [1, 2, 3]}
    taken = {"node1": 4, "node2": 2, "node3": 0}  # the rest stays queued in the checkpoint
    got: dict[str, list[int]] = {}
    for node in first.local_nodes:
        count = taken.get(node, 0)
        got[node] = [first.receive(node, topic="news", timeout=TIMEOUT).data for _ in range(count)]
    first.checkpoint(node_state=got, timeout=TIMEOUT)
    first.close(timeout=TIMEOUT)

    second = Geode(node_count, checkpoint_dir=directory, restart=True)
    again = second.topic("news", publishers=["node0"], subscribers=["node1"], retain=2)
    assert again.subscribers == ("node1", "node2", "node3")
    later = second.topic("nest", publishers=["node0"], subscribers=[])  # the pattern's, too
    assert later.subscribers == ("node3",)
    again.subscribe("node2")  # a job that subscribes again: nothing changes
    assert second.subscribe("node3", "ne*").nodes == ("node3",)
    again.publish(4, source="node0")
    for node in second.local_nodes:
        if node == "node0":
            continue
        if node not in wanted:  # (the nodes beyond node3, at more than 4 ranks)
            assert second.try_receive(node) is None, node
            continue
        seen = list(second.restored_node_state(node))
        while len(seen) < len(wanted[node]) + 1:
            seen.append(second.receive(node, topic="news", timeout=TIMEOUT).data)
        assert seen == [*wanted[node], 4], node
        with pytest.raises(ReceiveTimeout):
            second.receive(node, topic="news", timeout=0.2)
        assert second.stats(node).duplicates == 0
    second.close(timeout=TIMEOUT)


def test_pattern_calls_after_a_restart_reach_a_saved_topic_made_again(directory: Path) -> None:
    """A pattern subscribe (or unsubscribe) made after a restart, before a saved topic was made
    again, was lost on it: the topic came back with its checkpoint's subscribers only."""
    node_count = four_or_more()
    first = Geode(node_count, checkpoint_dir=directory)
    first.subscribe(["node1", "node3"], "sim.*")
    topic = first.topic("sim.a", publishers=["node0"], subscribers=[], retain=1)
    topic.publish("before", source="node0")
    for node in first.local_nodes:
        if node in ("node1", "node3"):
            assert first.receive(node, topic="sim.a", timeout=TIMEOUT).data == "before"
    first.checkpoint(timeout=TIMEOUT)
    first.close(timeout=TIMEOUT)

    second = Geode(node_count, checkpoint_dir=directory, restart=True)
    second.subscribe("node2", "sim.*")
    second.unsubscribe("node3", "sim.*")
    again = second.topic("sim.a", publishers=["node0"], subscribers=[], retain=1)
    assert again.subscribers == ("node1", "node2")
    again.publish("after", source="node0")
    wanted = {"node1": ["after"], "node2": ["before", "after"], "node3": []}
    for node in second.local_nodes:
        if node in wanted:
            got = [second.receive(node, topic="sim.a", timeout=TIMEOUT).data for _ in wanted[node]]
            assert got == wanted[node], node
            with pytest.raises(ReceiveTimeout):
                second.receive(node, timeout=0.2)
    second.close(timeout=TIMEOUT)


def test_a_subscriber_that_left_before_the_checkpoint_stays_out(directory: Path) -> None:
    """The membership is the checkpoint's, not the creation's: a node that unsubscribed
    before the checkpoint is not a subscriber after the restart though ``topic()`` names it
    (it came back to a place in the stream whose messages never come: nothing arrived)."""
    node_count = four_or_more()
    first = Geode(node_count, checkpoint_dir=directory)
    news = first.topic("news", publishers=["node0"], subscribers=["node1", "node2"])
    news.publish(0, source="node0")
    news.unsubscribe("node2")
    news.publish(1, source="node0")
    for node in first.local_nodes:
        count = {"node1": 2, "node2": 1}.get(node, 0)
        assert [first.receive(node, timeout=TIMEOUT).data for _ in range(count)] == [0, 1][:count]
    first.checkpoint(timeout=TIMEOUT)
    first.close(timeout=TIMEOUT)

    second = Geode(node_count, checkpoint_dir=directory, restart=True)
    again = second.topic("news", publishers=["node0"], subscribers=["node1", "node2"])
    assert again.subscribers == ("node1",)
    again.subscribe("node2")  # back, as a job would: from here on
    again.publish(2, source="node0")
    for node in second.local_nodes:
        if node in ("node1", "node2"):
            assert second.receive(node, topic="news", timeout=TIMEOUT).data == 2, node
        assert second.try_receive(node) is None, node
    second.close(timeout=TIMEOUT)


def test_files_in_subdirectories_restart_the_same(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "FILES_PER_DIR", 1)  # a sub-directory per rank file
    first = Geode(checkpoint_dir=directory)
    for source in first.local_nodes:
        for dest in first.nodes:
            first.send(Message((source, "queued")), source, dest)
    first.checkpoint(node_state={node: node.upper() for node in first.local_nodes})
    size = first.size
    first.close(timeout=TIMEOUT)
    epoch = directory / "epoch-000001"
    if size > 1:
        assert sorted(p.name for p in epoch.glob("ranks-*/*.h5")) == [
            f"rank-{rank:04d}.h5" for rank in range(size)
        ]
    second = Geode(checkpoint_dir=directory, restart=True)
    for node in second.local_nodes:
        got = sorted(second.receive(node, timeout=TIMEOUT).data for _ in second.nodes)
        assert got == sorted((source, "queued") for source in second.nodes)
        assert second.restored_node_state(node) == node.upper()
    second.close(timeout=TIMEOUT)


def test_per_node_state_of_another_ranks_node_is_refused(directory: Path) -> None:
    with Geode(checkpoint_dir=directory) as geode:
        others = [node for node in geode.nodes if not geode.hosts(node)]
        if not others:  # one rank hosts every node
            assert geode.checkpoint(node_state=dict.fromkeys(geode.nodes, 1)) == 1
            return
        # (every rank names the first rank's: rank 0's, which names a node of rank 1)
        with pytest.raises(CheckpointError, match="node_state: node '.*' is hosted by rank"):
            geode.checkpoint(node_state={others[0]: 1})


def test_checkpoints_no_longer_kept_are_removed_each_rank_its_own_file(directory: Path) -> None:
    """The epochs older than the newest two lose their manifest on rank 0 and each rank removes
    its own file; what is left of them (the directory) goes at the next checkpoint, or at
    close() after the last one (it was left there, an empty folder); a restart resumes."""
    geode = Geode(checkpoint_dir=directory)
    for step in range(5):
        assert geode.checkpoint(state={"step": step}) == step + 1
    size = geode.size
    geode.close(timeout=TIMEOUT)  # a collective: every rank removed its files before it
    barrier(size)  # (rank 0 removed what was left of them in its close())
    store = store_module.CheckpointStore(directory)
    assert store.epochs() == [5, 4]
    assert store.epochs(complete_only=False) == [5, 4]  # 1 and 2 gone, 3 too at close()
    assert len(list(store.epoch_path(5).iterdir())) == size + 1  # its files and the manifest
    loaded = store.newest()
    assert loaded is not None and loaded.epoch == 5
    barrier(size)  # (every rank looked before the restart's checkpoint prunes)
    with Geode(checkpoint_dir=directory, restart=True) as again:
        assert again.restored_epoch == 5
        assert again.restored_state == {"step": 4}
        assert again.checkpoint(state={"step": 5}, timeout=TIMEOUT) == 6
    barrier(size)
    assert store.epochs(complete_only=False) == [6, 5]


def test_a_restarted_job_closes_before_making_its_topics_again(directory: Path) -> None:
    """close() of a restart that did not call topic() again: the restored streams' pairs are
    not told of the close (their topic is not there to route it)."""
    bounded = QueueConfig(capacity=four_or_more())  # (no fewer than the nodes: one a rank)
    first = Geode(checkpoint_dir=directory, queue=bounded)
    news = first.topic("news", publishers=[first.nodes[0]], subscribers=[first.nodes[-1]])
    if first.rank == 0:
        news.publish("hello", source=first.nodes[0])
    if first.hosts(first.nodes[-1]):
        assert first.receive(first.nodes[-1], timeout=TIMEOUT).data == "hello"
    first.checkpoint(timeout=TIMEOUT)
    first.close(timeout=TIMEOUT)
    second = Geode(checkpoint_dir=directory, queue=bounded, restart=True)
    second.close(timeout=TIMEOUT)
