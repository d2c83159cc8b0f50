"""Where a topic's subscriber that comes late, or again, starts: in one process.

A resend after an ack timeout, sent for an earlier subscriber on its rank, of a message
published before it came (or while it was away) started it there: it got that old message,
then never the next new one (held behind a number never resent to it). And a late subscriber
saved in a checkpoint before its first message started again at number 0 after the restart:
its next message was held for ever behind numbers that never come.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from geode_mpi import Geode, Message, QueueConfig, ReceiveTimeout, Topic

EXPLICIT = QueueConfig(ack="explicit")


def held_by_node1(geode: Geode, away: bool) -> tuple[Topic, list[Message]]:
    """Topic t: node0 publishes 0, 1, 2 acked, node1 takes them and acks only 1; node2 comes
    late (``away``: it had a message -1 and left before 0). What node1 holds unacked."""
    topic = geode.topic("t", publishers=["node0"], subscribers=["node1"])
    if away:
        topic.subscribe("node2")
        topic.publish(-1, source="node0", ack=True)
        for node in ("node1", "node2"):
            geode.receive(node, timeout=5).ack()
        topic.unsubscribe("node2")
    for k in range(3):
        topic.publish(k, source="node0", ack=True)
    got = [geode.receive("node1", timeout=5) for _ in range(3)]
    got[1].ack()
    topic.subscribe("node2")
    return topic, [got[0], got[2]]


@pytest.mark.parametrize("away", [False, True], ids=["late", "back"])
def test_a_resend_for_another_subscriber_never_starts_a_late_one(away: bool) -> None:
    with Geode(3, resend_after=0.01, queue=EXPLICIT) as geode:
        topic, held = held_by_node1(geode, away)
        until = geode.stats("node1").duplicates + 2
        deadline = time.monotonic() + 10
        while geode.stats("node1").duplicates < until and time.monotonic() < deadline:
            with pytest.raises(ReceiveTimeout):  # (it got 0 or 2 here)
                geode.receive("node2", timeout=0.02)
        assert geode.stats("node1").duplicates >= until  # the resends came
        for msg in held:
            msg.ack()
        handle = topic.publish(99, source="node0", ack=True)
        for node in ("node1", "node2"):
            msg = geode.receive(node, timeout=5)
            msg.ack()
            assert msg.data == 99
        handle.wait(timeout=5)
        assert geode.try_receive("node2") is None and geode.stats("node0").unacked == 0


@pytest.mark.parametrize("resend_after", [None, 0.01])
def test_a_late_subscriber_saved_before_its_first_message_starts_at_its_next(
    tmp_path: Path, resend_after: float | None
) -> None:
    """Saved with node1's 0, 1, 2 still queued, unacked (resent after the restart, with
    resend_after): node2, which subscribed after them, gets only 99."""
    geode = Geode(3, checkpoint_dir=tmp_path)
    topic = geode.topic("t", publishers=["node0"], subscribers=["node1"])
    for k in range(3):
        topic.publish(k, source="node0", ack=True)
    topic.subscribe("node2")
    geode.checkpoint()
    geode.close()
    geode = Geode(3, checkpoint_dir=tmp_path, restart=True, resend_after=resend_after)
    topic = geode.topic("t", publishers=["node0"], subscribers=["node1"])
    handle = topic.publish(99, source="node0", ack=True)
    assert geode.receive("node2", timeout=5).data == 99
    assert [geode.receive("node1", timeout=5).data for _ in range(4)] == [0, 1, 2, 99]
    handle.wait(timeout=5)
    assert geode.try_receive("node2") is None and geode.stats("node0").unacked == 0
    geode.close()
