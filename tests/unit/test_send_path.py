"""The send path (delivery/sending.py) and the one wait loop (delivery/waiting.py): every
kind of message takes its id from one counter per node, a topic stream numbers its own
messages, and every blocking call waits the same way."""

from __future__ import annotations

import threading
import time

import pytest

from geode_mpi import EncodeError, Geode, Message
from geode_mpi.delivery.sending import ID_BITS
from geode_mpi.delivery.waiting import IDLE, WORKED, Marker, Wait
from geode_mpi.transport import InProcHub


def test_point_to_point_publish_and_task_ids_come_from_one_counter_per_node() -> None:
    geode = Geode()  # the embedded world: node0..node3 here
    topic = geode.topic("t", publishers=["node0"], subscribers=["node1"])
    queue = geode.work_queue("q", consumers=["node2"], dispatcher="node0", producers=["node3"])
    first = geode.send("p2p", dest="node1")
    published = topic.publish("news")
    queue.put("task", source="node3")
    queue.finish(source="node3")
    task = queue.get("node2", timeout=5)
    assert task is not None and task.data == "task"
    second = geode.send("p2p again", dest="node1")
    # node0's counter numbered, in turn, its send, its publish, the task it handed out as the
    # dispatcher, its next send; node3's its put and its finish, then its send.
    assert [first.id, published.id, task.id, second.id] == [0, 1, 2, 3]
    assert geode.send("from node3", "node3", "node1").id == (3 << ID_BITS) + 2
    assert len([geode.receive("node1") for _ in range(4)]) == 4
    geode.close()


def test_an_encode_error_takes_no_id_and_moves_no_seq() -> None:
    geode = Geode()
    before = geode.send("first", dest="node1")
    with pytest.raises(EncodeError):
        geode.send(lambda: None, dest="node1")
    after = geode.send("second", dest="node1")
    assert (after.id, after.seq) == (before.id + 1, before.seq + 1)  # type: ignore[operator]
    assert [geode.receive("node1").data for _ in range(2)] == ["first", "second"]
    geode.close()


def test_a_topic_stream_numbers_its_messages_itself() -> None:
    hub = InProcHub(2)
    a, b = (Geode(transport=hub.endpoint(rank)) for rank in range(2))
    topics = [g.topic("t", publishers=["node0"], subscribers=["node0", "node1"]) for g in (a, b)]
    a.send("not on the topic", dest="node1")  # a point-to-point pair of its own
    seqs = [topics[0].publish(k).seq for k in range(3)]
    assert seqs == [0, 1, 2]
    assert [b.receive("node1", topic="t").seq for _ in range(3)] == [0, 1, 2]
    assert b.receive("node1").seq == 0


class _Engine:
    """What the wait loop asks of an engine, counting what it was asked."""

    def __init__(self) -> None:
        self.transport = InProcHub(1).endpoint(0)
        self.polls = self.served = self.flushes = 0
        self.forwards: list[object] = []
        self.waited = {7}  # a waited-for request at node 7: served whenever the loop is idle
        self.resend_after = None

    def poll(self) -> bool:
        self.polls += 1
        return False

    def serve_waiting(self, leave: object = ()) -> bool:
        self.served += 1
        return False

    def flush_after(self, started: float) -> None:
        self.flushes += 1


def test_the_wait_loop_returns_the_steps_result() -> None:
    engine = _Engine()
    looks = iter([IDLE, WORKED, IDLE, "found"])
    assert Wait(engine, None, poll=True).until(lambda: next(looks)) == "found"
    # polled before each of the 4 looks; served while idle only (not after working)
    assert engine.polls == 4 and engine.served == 2


def test_the_wait_loop_ends_at_its_deadline() -> None:
    engine = _Engine()
    started = time.monotonic()
    wait = Wait(engine, started + 0.05, serving=True)
    assert wait.until(lambda: IDLE) is None
    assert 0.05 <= time.monotonic() - started < 2
    assert wait.paused > 0 and engine.flushes > 0 and engine.polls == 0


def test_the_wait_loop_takes_one_last_look_when_nothing_can_arrive() -> None:
    looks: list[str | Marker] = [IDLE, "found"]
    assert Wait(_Engine(), None).until(lambda: looks.pop(0), alone=lambda: True) == "found"
    assert Wait(_Engine(), None).until(lambda: IDLE, alone=lambda: True) is None


def test_a_blocking_receive_waits_in_the_loop_for_another_thread() -> None:
    geode = Geode()
    sender = threading.Timer(0.05, lambda: geode.send("late", dest="node1"))
    started = time.monotonic()
    sender.start()
    try:
        assert geode.receive("node1", timeout=10).data == "late"
    finally:
        sender.join()
    assert time.monotonic() - started >= 0.04
    assert geode.stats("node1").wait_seconds > 0
    with pytest.raises(TimeoutError):  # alone again: nothing can arrive, so no wait
        geode.receive("node1", timeout=5)
    geode.close()


def test_message_class_is_kept_on_every_path() -> None:
    class Ping(Message):
        pass

    geode = Geode()
    topic = geode.topic("t", publishers=["node0"], subscribers=["node1"])
    geode.send(Ping("p2p"), dest="node1")
    topic.publish(Ping("topic"))
    assert [type(geode.receive("node1")) for _ in range(2)] == [Ping, Ping]
    geode.close()
