"""Topic and work-queue names of any characters across a checkpoint and a restart, and
``msg.work_queue`` on messages that are not a work queue's tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geode_mpi import Geode, Message, Topic, WorkQueue
from geode_mpi.persistence import CheckpointError
from geode_mpi.persistence.rankfile import read_rank_file, write_rank_file

# Names a topic or work queue may hold that a checkpoint key could not: '/' (the checkpoint
# failed on every rank: "checkpoint key 'sim/temp' must be a non-empty str without '/'"), and
# others a path-like store would take for something else.
NAMES = ["sim/temp", "/", "a/../b", ".", "..", "%2F", " ", "x y%", "é/ü", "*"]
NODES = ["node0", "node1", "node2"]


def make(geode: Geode) -> tuple[list[Topic], list[WorkQueue]]:
    """The topics and work queues, in the same order each time (a restart's rule)."""
    topics = [geode.topic(name, ["node0"], ["node1"], retain=1) for name in NAMES]
    queues = [geode.work_queue(name, ["node1"], producers=["node0"]) for name in NAMES]
    return topics, queues


def test_topics_and_work_queues_named_with_a_slash_checkpoint_and_restart(
    tmp_path: Path,
) -> None:
    with Geode(NODES, checkpoint_dir=tmp_path) as geode:
        topics, queues = make(geode)
        for k, (topic, queue) in enumerate(zip(topics, queues, strict=True)):
            for step in range(2):
                topic.publish((k, step), source="node0")
                queue.put((k, step), source="node0")
        for k, name in enumerate(NAMES):
            assert geode.receive("node1", topic=name, timeout=5).data == (k, 0)
            task = queues[k].get("node1", timeout=5)
            assert (task.data, task.work_queue) == ((k, 0), name)
        assert geode.checkpoint() == 1
    with Geode(NODES, checkpoint_dir=tmp_path, restart=True) as geode:
        assert geode.restored_epoch == 1
        topics, queues = make(geode)
        for k, (name, topic, queue) in enumerate(zip(NAMES, topics, queues, strict=True)):
            got = geode.receive("node1", topic=name, timeout=5)
            assert (got.data, got.topic, got.seq) == ((k, 1), name, 1)
            task = queue.get("node1", timeout=5)
            assert (task.data, task.work_queue) == ((k, 1), name)
            topic.publish((k, 2), source="node0")
            after = geode.receive("node1", topic=name, timeout=5)
            assert (after.data, after.seq) == ((k, 2), 2)  # its numbering continued
            topic.subscribe("node2")
            assert geode.receive("node2", topic=name, timeout=5).data == (k, 2)  # retained
        assert geode.checkpoint() == 2  # and again, from the restarted job


def test_a_rank_file_keeps_keys_with_a_slash_and_names_them_quoted(tmp_path: Path) -> None:
    """A key is a JSON object's key in the index (format 4 and 5), not an HDF5 name."""
    tree = {
        name: {"n": 1, "raw": b"ab", "small": np.arange(3), "big": np.zeros(20_000)}
        for name in NAMES
    }
    written = write_rank_file(tmp_path, 0, {"epoch": 1}, tree)
    _, back = read_rank_file(tmp_path / written.name)
    assert sorted(back) == sorted(NAMES)
    for name in NAMES:
        assert back[name]["n"] == 1 and back[name]["raw"] == b"ab"
        assert np.array_equal(back[name]["small"], np.arange(3))
        assert np.array_equal(back[name]["big"], np.zeros(20_000))
    with pytest.raises(CheckpointError, match=r"value \"topics/'sim/temp'/x\" of type object"):
        write_rank_file(tmp_path, 0, {}, {"topics": {"sim/temp": {"x": object()}}})
    for key in ("", 1):
        with pytest.raises(CheckpointError, match=f"checkpoint key {key!r} must be a non-empty"):
            write_rank_file(tmp_path, 0, {}, {key: 1})  # type: ignore[dict-item]


def test_work_queue_is_none_on_a_message_that_is_not_a_task() -> None:
    """It raised AttributeError, where ``msg.topic`` is None on a message not a topic's; and a
    task sent on by its consumer arrived as a plain message still naming the queue."""
    assert Message("fresh").work_queue is None
    with Geode(NODES) as geode:
        geode.send("plain", "node0", "node1")
        plain = geode.receive("node1", timeout=5)
        assert (plain.topic, plain.work_queue) == (None, None)
        news = geode.topic("news", ["node0"], ["node1"])
        news.publish("x", source="node0")
        published = geode.receive("node1", timeout=5)
        assert (published.topic, published.work_queue) == ("news", None)
        jobs = geode.work_queue("jobs", ["node1"], producers=["node0"])
        jobs.put("t", source="node0")
        task = jobs.get("node1", timeout=5)
        assert (task.topic, task.work_queue, task.source) == (None, "jobs", "node0")
        for received in (task, published):
            geode.send(received, "node1", "node2")  # sent on: a plain message now
            sent_on = geode.receive("node2", timeout=5)
            assert (sent_on.data, sent_on.source) == (received.data, "node1")
            assert (sent_on.topic, sent_on.work_queue) == (None, None)


def test_state_keys_with_a_slash_checkpoint_and_restart(tmp_path: Path) -> None:
    """Before: ``TypeError: state keys must be non-empty str without '/'``, the rule of the
    format whose keys were HDF5 names (today's keys are the file index's)."""
    state = {"sim/temp": np.arange(3.0), "a/../b": {"x": 1}, "plain": 2}
    with Geode(NODES, checkpoint_dir=tmp_path) as geode:
        geode.checkpoint(state=state)
    with Geode(NODES, checkpoint_dir=tmp_path, restart=True) as geode:
        restored = geode.restored_state
    assert restored is not None and sorted(restored) == sorted(state)
    assert np.array_equal(restored["sim/temp"], state["sim/temp"])
    assert restored["a/../b"] == {"x": 1} and restored["plain"] == 2
    refused = pytest.raises(CheckpointError, match="state keys must be non-empty str, got ''")
    with Geode(NODES, checkpoint_dir=tmp_path) as geode, refused:
        geode.checkpoint(state={"": 1})
