"""Work queues across checkpoints and restarts at 1, 2 and 4 ranks: the consumers' side of a
queue (over for them, requests held for room, tasks an in-memory queue drops) comes back with
the dispatcher's, and maybe_checkpoint() hands tasks out while it waits for the other ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_checkpoints import barrier

from geode_mpi import Geode, Message, QueueConfig, WorkQueue
from geode_mpi.persistence import CheckpointError

TIMEOUT = 20.0


def jobs(geode: Geode, consumer: str) -> WorkQueue:
    """The queue of these tests: dispatcher and producer node0, one consumer."""
    return geode.work_queue("jobs", consumers=[consumer], dispatcher="node0", producers=["node0"])


def five_tasks(geode: Geode, consumer: str) -> WorkQueue:
    """`jobs` with tasks 0 to 4 put on it, and finished."""
    queue = jobs(geode, consumer)
    if geode.hosts("node0"):
        for k in range(5):
            queue.put(k, source="node0")
        queue.finish(source="node0")
    return queue


def test_maybe_checkpoint_without_timeout_hands_tasks_out_while_it_waits(
    directory: Path,
) -> None:
    """maybe_checkpoint()'s vote was a blocking reduction: the dispatcher's rank sat in it
    while the consumer's rank waited in get() for the task it had not handed out yet."""
    geode = Geode(checkpoint_dir=directory, checkpoint_every=3600)
    first, last = geode.nodes[0], geode.nodes[-1]
    queue = geode.work_queue("steps", consumers=[last], dispatcher=first, producers=[first])
    for step in range(5):
        if geode.hosts(first):
            queue.put(step, source=first)
        if geode.hosts(last):
            task = queue.get(last, timeout=TIMEOUT)
            assert task is not None and task.data == step
        assert geode.maybe_checkpoint({"step": step}) is None
    geode.close(timeout=TIMEOUT)


def test_a_consumer_that_took_its_workdone_gets_none_after_a_restart(
    directory: Path,
) -> None:
    """Which consumers took their WorkDone was not saved: after the restart get() waited for
    a second one, which the dispatcher (it told each one once) never sends."""
    first = Geode(checkpoint_dir=directory)
    nodes = first.nodes
    queue = first.work_queue("jobs", consumers=[nodes[-1]], dispatcher=nodes[0])
    if first.hosts(nodes[0]):
        for k in range(3):
            queue.put(k, source=nodes[0])
    for node in first.local_nodes:
        queue.finish(source=node)
    if first.hosts(nodes[-1]):
        got = []
        while (task := queue.get(nodes[-1], timeout=TIMEOUT)) is not None:
            got.append(task.data)
        assert got == [0, 1, 2]
    queue.serve(timeout=TIMEOUT)
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, restart=True)
    again = second.work_queue("jobs", consumers=[nodes[-1]], dispatcher=nodes[0])
    if second.hosts(nodes[-1]):
        assert again.get(nodes[-1], timeout=TIMEOUT) is None
        assert again.get(nodes[-1], timeout=TIMEOUT) is None  # and again at once
    again.serve(timeout=TIMEOUT)
    second.close(timeout=TIMEOUT)


def test_a_request_held_for_room_at_the_checkpoint_is_sent_after_the_restart(
    directory: Path,
) -> None:
    """A consumer's request for its next task, held because its results filled the
    dispatcher node's window, was neither saved nor sent again: the consumer waited for ever
    while the dispatcher held the tasks."""
    with Geode(checkpoint_dir=directory) as probe:
        size = probe.size
    barrier(size)
    bounded = {"node0": QueueConfig(window=2)}
    first = Geode(checkpoint_dir=directory, queues=bounded)
    last = first.nodes[-1]
    queue = five_tasks(first, last)
    if first.hosts(last):
        for k in range(2):
            task = queue.get(last, timeout=TIMEOUT)
            assert task is not None and task.data == k
            first.send(Message(("result", k)), last, "node0")  # the second fills the window
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, queues=bounded, restart=True)
    again = jobs(second, last)
    if second.hosts("node0"):
        results = [second.receive("node0", timeout=TIMEOUT).data for _ in range(2)]
        assert results == [("result", 0), ("result", 1)]  # room again
    if second.hosts(last):
        got = []
        while (task := again.get(last, timeout=TIMEOUT)) is not None:
            got.append(task.data)
        assert got == [2, 3, 4]
    again.serve(timeout=TIMEOUT)
    second.close(timeout=TIMEOUT)


def test_a_task_an_in_memory_queue_drops_at_a_restart_strands_no_other(
    directory: Path,
) -> None:
    """A consumer with an in-memory queue loses the task prefetched into it (as documented),
    but never asked for another: the dispatcher held the rest for ever."""
    first = Geode(checkpoint_dir=directory)
    last = first.nodes[-1]
    first.close(timeout=TIMEOUT)
    in_memory = {last: QueueConfig(persistent=False)}
    first = Geode(checkpoint_dir=directory, queues=in_memory)
    queue = five_tasks(first, last)
    if first.hosts(last):
        task = queue.get(last, timeout=TIMEOUT)
        assert task is not None and task.data == 0
    first.checkpoint()  # the cut moves the request on, and task 1 into the in-memory queue
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, queues=in_memory, restart=True)
    again = jobs(second, last)
    if second.hosts(last):
        got = []
        while (task := again.get(last, timeout=TIMEOUT)) is not None:
            got.append(task.data)
        assert got == [2, 3, 4]
        assert second.stats(last).dropped == 1
    again.serve(timeout=TIMEOUT)
    second.close(timeout=TIMEOUT)


def test_a_restart_with_other_work_queue_arguments_says_what_was_saved(
    directory: Path,
) -> None:
    """A restart's work_queue() with another dispatcher, other consumers or producers was
    taken silently: the held tasks vanished, or a task went to a node no longer consuming."""
    first = Geode(checkpoint_dir=directory)
    nodes = list(first.nodes)
    queue = first.work_queue("jobs", consumers=nodes, dispatcher=nodes[0], producers=nodes[:1])
    if first.hosts(nodes[0]):
        for k in range(3):
            queue.put(k, source=nodes[0])
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, restart=True)
    with pytest.raises(CheckpointError) as caught:
        second.work_queue("jobs", consumers=nodes, dispatcher=nodes[-1], producers=nodes[:1])
    assert str(caught.value) == (
        f"work queue 'jobs': restarted with dispatcher={nodes[-1]!r}, but the checkpoint saved "
        f"it with dispatcher={nodes[0]!r}: restart with the same arguments"
    )
    with pytest.raises(CheckpointError, match=r"restarted with consumers=\['node0'\], but"):
        second.work_queue("jobs", consumers=nodes[:1], dispatcher=nodes[0], producers=nodes[:1])
    with pytest.raises(CheckpointError, match=r"restarted with producers=\['node0', 'node1'"):
        second.work_queue("jobs", consumers=nodes, dispatcher=nodes[0], producers=nodes[:2])
    # The same arguments: the saved queue, every task once.
    again = second.work_queue("jobs", consumers=nodes, dispatcher=nodes[0], producers=nodes[:1])
    if second.hosts(nodes[0]):
        again.finish(source=nodes[0])
    got = [
        task.data
        for node in second.local_nodes
        for task in iter(lambda node=node: again.get(node, timeout=TIMEOUT), None)
    ]
    again.serve(timeout=TIMEOUT)  # (every consumer told: no rank waits for a task any more)
    assert sorted(gather_all(second, got)) == [0, 1, 2]
    second.close(timeout=TIMEOUT)


def gather_all(geode: Geode, values: list[int]) -> list[int]:
    """Every rank's values, on every rank (in rank order)."""
    if geode.size == 1:
        return values
    from mpi4py import MPI

    return [value for part in MPI.COMM_WORLD.allgather(values) for value in part]


def test_a_restart_making_the_work_queues_in_another_order_says_so(directory: Path) -> None:
    """Before: a restart's work queues made in another order took each other's streams
    silently: the tasks restored into the consumers' queues (of the saved stream) were never
    the new queue's, and its get() waited for ever."""
    first = Geode(checkpoint_dir=directory)
    nodes = list(first.nodes)
    first.work_queue("a", consumers=nodes[-1:], producers=nodes[:1])
    first.work_queue("b", consumers=nodes[-1:], producers=nodes[:1])
    first.checkpoint()
    first.close(timeout=TIMEOUT)

    second = Geode(checkpoint_dir=directory, restart=True)
    with pytest.raises(CheckpointError) as caught:
        second.work_queue("b", consumers=nodes[-1:], producers=nodes[:1])
    base = len(nodes) + (1 << 20)
    assert str(caught.value).startswith(
        f"work queue 'b': restarted on stream {base}, but the checkpoint saved it on stream "
        f"{base + 1}: streams are numbered in the order topics and work queues are made"
    )
    assert str(caught.value).endswith(
        "and 0 were numbered before it now, 1 before the checkpoint: a topic or work queue made "
        "before it then is not made again before it now. Make the same topics and work "
        "queues, in the same order, as before the checkpoint"
    )
    second.work_queue("a", consumers=nodes[-1:], producers=nodes[:1])
    second.work_queue("b", consumers=nodes[-1:], producers=nodes[:1])
    second.close(timeout=TIMEOUT)
