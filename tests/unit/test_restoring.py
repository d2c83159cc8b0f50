"""Which rank takes over each topic stream and work queue on a restart on other ranks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from geode_mpi import Geode
from geode_mpi.core.restoring import OtherJob, stream_roots

WHERE = Path("checkpoints/epoch-1")


def topic(roots: dict[int, int] | None) -> dict[str, Any]:
    return {"roots": roots, "next_seq": {}, "retained": {}}


def queue(root: tuple[int, int] | None) -> dict[str, Any]:
    return {"root": root, "tasks": [], "numbers": {}}


def test_each_stream_is_sent_on_by_its_publisher_or_dispatcher() -> None:
    topics = {"news": topic({100: 0, 101: 5}), "ordered": topic({102: 3})}
    queues = {"jobs": queue((103, 3))}
    roots = stream_roots(topics, queues, 4, WHERE, replaced=True)
    assert roots == {100: 0, 101: 5, 102: 3, 103: 3}


def test_the_same_number_of_ranks_needs_no_roots() -> None:
    assert stream_roots({"news": topic(None)}, {}, 4, WHERE, replaced=False) is None


def test_a_checkpoint_without_roots_is_refused_on_other_ranks_naming_what() -> None:
    topics = {"news": topic(None), "fine": topic({100: 1})}
    with pytest.raises(OtherJob) as raised:
        stream_roots(topics, {"jobs": queue(None)}, 4, WHERE, replaced=True)
    message = str(raised.value)
    assert "saved on 4 rank(s)" in message and "['jobs', 'news']" in message
    assert "restart only on 4 rank(s)" in message


def test_a_restored_topic_message_waits_for_its_topic_before_a_resend(tmp_path: Path) -> None:
    """With resend_after set, the resend timer ran over a restored topic stream before the job
    made its topic again, and raised KeyError (seen in test_checkpoint_resize under load)."""
    nodes = ["node0", "node1"]
    geode = Geode(nodes, checkpoint_dir=tmp_path, resend_after=0.02)
    news = geode.topic("news", publishers=["node0"], subscribers=["node1"])
    news.publish("x", source="node0")
    geode.checkpoint()  # node1 holds it, node0's outbox too (not acknowledged yet)
    geode.close()
    geode = Geode(nodes, checkpoint_dir=tmp_path, restart=True, resend_after=0.02)
    for _ in range(10):  # several resend periods, before topic(): polls must not raise
        assert geode.pending("node1") == 1
        time.sleep(0.01)
    got = geode.try_receive("node1")
    assert got is not None and got.data == "x"
    news = geode.topic("news", publishers=["node0"], subscribers=["node1"])
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # resends now, and the duplicate is dropped
        assert geode.try_receive("node1") is None
    geode.close()
