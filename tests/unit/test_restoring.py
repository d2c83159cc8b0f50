"""Which rank takes over each topic stream and work queue on a restart on other ranks."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

from geode_mpi import Geode, Message, codec
from geode_mpi.core.restoring import OtherJob, stream_roots
from geode_mpi.transport import InProcHub

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


def test_a_restored_topic_message_taken_before_topic_is_made_names_its_topic(
    tmp_path: Path,
) -> None:
    """The checkpoint knows each stream's topic: a message restored into a subscriber's queue
    says which topic it came on though the job has not called topic() again yet."""
    nodes = ["node0", "node1"]
    with Geode(nodes, checkpoint_dir=tmp_path) as geode:
        geode.topic("other", publishers=["node1"], subscribers=["node0"])
        news = geode.topic("news", publishers=["node0"], subscribers=["node1"])
        news.publish("x", source="node0")
        geode.send("plain", "node0", "node1")
        geode.checkpoint()
    with Geode(nodes, checkpoint_dir=tmp_path, restart=True) as geode:
        got = geode.receive("node1", timeout=0)
        assert (got.data, got.topic, got.dest) == ("x", "news", "node1")
        plain = geode.receive("node1", timeout=0)
        assert (plain.data, plain.topic) == ("plain", None)
        geode.topic("other", publishers=["node1"], subscribers=["node0"])
        news = geode.topic("news", publishers=["node0"], subscribers=["node1"])
        news.publish("y", source="node0")
        again = geode.receive("node1", timeout=0)
        assert (again.data, again.topic) == ("y", "news")


def test_a_resend_before_its_restored_topic_is_made_says_what_happens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not a malformed arrival: dropped, said once at info level, not counted (its publisher
    resends it until it is acknowledged); an unknown topic of no restart still warns."""
    hub = InProcHub(2)
    geodes = [Geode(2, transport=hub.endpoint(rank)) for rank in range(2)]
    receiver = geodes[1]
    engine = receiver._runtime.engine
    meta, _ = codec.encode(Message("ok"), codec.make_stamp(0, 0, 0.0, 0, 7), codec.FLAG_TOPIC)
    try:
        with caplog.at_level(logging.INFO, logger="geode_mpi"):
            engine.topics.restored = {0: ["news"]}  # (what a restart sets)
            for _ in range(3):
                receiver._transport.deliver(0, memoryview(meta), (), len(meta))
            assert engine.malformed == {}
            said = [r for r in caplog.records if "restored topic 'news'" in r.getMessage()]
            assert len(said) == 1 and said[0].levelno == logging.INFO
            assert "delivered once topic() is called here" in said[0].getMessage()
            engine.topics.restored = {}
            receiver._transport.deliver(0, memoryview(meta), (), len(meta))
            assert engine.malformed == {0: 1}
            assert "dropped a malformed arrival from rank 0" in caplog.text
    finally:
        for geode in geodes:
            geode.close()
