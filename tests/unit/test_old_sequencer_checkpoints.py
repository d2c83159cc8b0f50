"""A checkpoint written before a total-order topic's sequencer saved what it held: a restart
from it says, with a WARNING naming the topic, that such messages may be lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_checkpoint_damage import rewrite

from geode_mpi import Geode, QueueConfig

NODES = ["node0", "node1", "node2"]
TEXTS = ["m0", "m1", "m2", "m3", "m4"]
BOUNDED = {"node2": QueueConfig(capacity=3, policy="block")}


def save(directory: Path) -> None:
    """node2's queue full (one message per sender), the sequencer node0 holding four."""
    with Geode(nodes=NODES, checkpoint_dir=directory, queues=BOUNDED) as geode:
        ordered = geode.topic("ordered", ["node0", "node1"], ["node2"], total_order=True)
        geode.topic("plain", ["node1"], ["node2"])
        for text in TEXTS:
            ordered.publish(text, source="node1", timeout=10)
        geode.checkpoint()


def as_old(tree: Any) -> None:
    """What a geode_mpi before the sequencer's held messages were saved wrote."""
    assert "forwards" in tree["engine"]["nodes"]["0"]  # (node0, the sequencer, holds some)
    del tree["engine"]["nodes"]["0"]["forwards"]
    for topic in tree["topics"].values():
        topic.pop("forwards_saved", None)


def restart(directory: Path, caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """Restart, take ``count`` messages at node2; the WARNINGs logged."""
    caplog.clear()
    with (
        caplog.at_level("WARNING", logger="geode_mpi"),
        Geode(nodes=NODES, checkpoint_dir=directory, queues=BOUNDED, restart=True) as again,
    ):
        assert again.restored_epoch == 1
        again.topic("ordered", ["node0", "node1"], ["node2"], total_order=True)
        again.topic("plain", ["node1"], ["node2"])
        got = [again.receive("node2", timeout=10).data for _ in range(count)]
        assert got == TEXTS[:count]
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_an_old_checkpoint_with_a_total_order_topic_warns_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save(tmp_path)
    rewrite(tmp_path, 1, as_old)
    # (the four held ones are lost: not in the file; the first was in node2's queue)
    warned = [text for text in restart(tmp_path, caplog, 1) if "sequencer" in text]
    assert len(warned) == 1, warned
    assert "topic(s) 'ordered' (sequencer node0)" in warned[0]
    assert "may be lost" in warned[0] and "epoch 1" in warned[0] and "'plain'" not in warned[0]


def test_a_current_checkpoint_restarts_without_that_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save(tmp_path)
    assert not [text for text in restart(tmp_path, caplog, 5) if "sequencer" in text]
