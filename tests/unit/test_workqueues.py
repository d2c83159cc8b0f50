"""Work queues in one process: the end of a queue, tasks that cannot be decoded, finish()."""

from __future__ import annotations

from typing import Any

import pytest

from geode_mpi import DecodeError, Geode, Message, ReceiveTimeout
from geode_mpi.transport import InProcHub

rebuilt: list[int] = []


class Fragile:
    """Unpickles once (at the dispatcher, which sends it on as itself), then fails (at the
    consumer): a task its consumer's rank cannot decode."""

    def __reduce__(self) -> Any:
        return (_rebuild, ())


def _rebuild() -> Fragile:
    rebuilt.append(1)
    if len(rebuilt) > 1:
        raise ValueError("cannot rebuild here")
    return Fragile()


def finished_queue(geode: Geode, prefetch: int) -> Any:
    """A queue of four tasks from node0 to node1, finished, and node1's tasks from `get`."""
    queue = geode.work_queue("q", consumers=["node1"], producers=["node0"], prefetch=prefetch)
    for k in range(4):
        queue.put(k, source="node0")
    queue.finish(source="node0")
    got = []
    while (task := queue.get("node1", timeout=10)) is not None:
        got.append(task.data)
    assert got == [0, 1, 2, 3]
    return queue


@pytest.mark.parametrize("prefetch", [2, 3])
def test_a_finished_queue_leaves_nothing_for_the_consumers_receive(prefetch: int) -> None:
    """Before: the dispatcher sent one WorkDone per open request, ``prefetch`` of them; `get`
    took the first and the others stayed in the consumer's queue, where its own receive took
    them (and a checkpoint saved them)."""
    geode = Geode()
    finished_queue(geode, prefetch)
    assert geode.pending("node1") == 0
    geode.send("mine", "node0", "node1")
    assert geode.receive("node1", timeout=10).data == "mine"
    assert geode.try_receive("node1") is None
    geode.close()


@pytest.mark.parametrize("prefetch", [1, 2, 3])
def test_get_after_the_end_returns_none_at_once(prefetch: int) -> None:
    """The consumer gets one WorkDone, whatever its prefetch: a `get` after the None it gave
    returns None again, without waiting (it timed out with prefetch=1)."""
    geode = Geode()
    queue = finished_queue(geode, prefetch)
    assert queue.get("node1", timeout=0) is None
    assert queue.get("node1") is None
    geode.close()


def test_a_task_the_consumer_cannot_decode_does_not_strand_the_rest() -> None:
    """Before: the consumer dead-lettered the task but never asked for another, so the
    dispatcher (another rank) held every later task and `get` timed out."""
    rebuilt.clear()
    hub = InProcHub(2)
    a, b = (Geode(transport=hub.endpoint(rank)) for rank in range(2))
    qa, qb = (g.work_queue("q", consumers=["node1"], producers=["node0"]) for g in (a, b))
    qa.put(Message(Fragile()), source="node0")
    for k in range(3):
        qa.put(k, source="node0")
    qa.finish(source="node0")
    got: list[Any] = []
    errors: list[str] = []
    for _ in range(500):  # both "ranks" driven from this thread, without blocking
        a.try_receive("node0")
        try:
            task = qb.get("node1", timeout=0)
        except DecodeError as exc:
            errors.append(str(exc))
            continue
        except ReceiveTimeout:
            continue
        if task is None:
            break
        got.append(task.data)
    assert got == [0, 1, 2]
    assert len(errors) == 1 and "cannot rebuild here" in errors[0]
    assert len(b.dead_letters("node1")) == 1
    assert qa.waiting == 0


def test_a_second_finish_of_one_producer_does_not_end_the_queue() -> None:
    """Before: the dispatcher counted every finish, so node0's second one counted as node1's
    and the queue ended before node1's tasks."""
    geode = Geode()
    queue = geode.work_queue("q", consumers=["node2"], producers=["node0", "node1"])
    queue.put("a0", source="node0")
    queue.finish(source="node0")
    queue.finish(source="node0")
    assert queue.get("node2", timeout=10).data == "a0"
    with pytest.raises(ReceiveTimeout):
        queue.get("node2", timeout=0.05)  # node1 has not finished: not None
    for k in range(2):
        queue.put(f"b{k}", source="node1")
    queue.finish(source="node1")
    got = []
    while (task := queue.get("node2", timeout=10)) is not None:
        got.append(task.data)
    assert got == ["b0", "b1"]
    geode.close()


def test_finish_from_a_node_that_is_not_a_producer_is_refused() -> None:
    geode = Geode()
    queue = geode.work_queue("q", consumers=["node2"], producers=["node0", "node1"])
    with pytest.raises(
        ValueError,
        match=r"finish\(source='node2'\): node2 is not a producer of work queue 'q' "
        r"\(producers: node0, node1\)",
    ):
        queue.finish(source="node2")
    queue.put("a0", source="node0")
    queue.finish(source="node0")
    assert queue.get("node2", timeout=10).data == "a0"
    with pytest.raises(ReceiveTimeout):
        queue.get("node2", timeout=0.05)
    geode.close()


def test_a_put_after_its_producer_finished_or_the_queue_ended_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: each put returned a done handle and its task stayed at the dispatcher for
    ever, never handed out, nothing said (not even by close())."""
    geode = Geode()
    queue = geode.work_queue("q", consumers=["node2"], producers=["node0", "node1"])
    queue.finish(source="node0")
    with pytest.raises(
        RuntimeError, match=r"put\(source='node0'\) on work queue 'q' after node0 called finish"
    ):
        queue.put("late", source="node0")
    queue.put("b0", source="node1")  # node1 has not finished: its puts still count
    queue.finish(source="node1")
    assert queue.get("node2", timeout=10).data == "b0"
    assert queue.get("node2", timeout=10) is None
    with pytest.raises(
        RuntimeError, match=r"put\(source='node2'\) on work queue 'q' after it ended"
    ):
        queue.put("late", source="node2")  # (no producer: refused once the queue ended)
    assert queue.waiting == 0
    with caplog.at_level("WARNING", logger="geode_mpi"):
        geode.close()
    assert "never" not in caplog.text


def test_a_get_that_nothing_can_answer_says_get_and_that_none_can_arrive() -> None:
    """Before: ``receive on node1 timed out after 0 s waiting for a message`` for a get()
    without a timeout, in a world where no task could come any more."""
    geode = Geode()
    queue = geode.work_queue("q", consumers=["node1"], producers=["node0"])
    queue.put("a", source="node0")
    assert queue.get("node1").data == "a"
    with pytest.raises(ReceiveTimeout, match=r"^get on node1 found no message \(source=node0\), "
                       r"and none can arrive.*; every producer's finish\(\) ends the queue "
                       r"\(get\(\) then returns None\)$"):  # fmt: skip
        queue.get("node1")
    geode.close()
