"""`Geode.isend_many` at 1 to 4 ranks: every node sends batches to the next node (a ring);
each message arrives once, in order, acknowledged; a full ``block`` queue holds a batch back
until the consumer takes; a checkpoint between batches keeps what was in flight."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message, QueueConfig, QueueFull

TIMEOUT = 60.0
BATCH = 700


def item(node: int, index: int) -> Any:
    """The ``index``-th item node ``node`` sends: every kind a batch may hold, in turn."""
    kind = index % 7
    if kind == 0:
        return f"{node}:{index}"
    if kind == 1:
        return index
    if kind == 2:
        return {"node": node, "index": index}
    if kind == 3:
        return (node, index, 0.5)
    if kind == 4:
        return b"%d" % index
    if kind == 5 and index % 5 == 0:
        return np.full(3, index, np.int64)  # (sent alone, in its place)
    return float(index)


def value_of(message: Message) -> Any:
    data = message.data
    return data.tolist() if isinstance(data, np.ndarray) else data


def expected(node: int, first: int, count: int) -> list[Any]:
    got = [item(node, index) for index in range(first, first + count)]
    return [x.tolist() if isinstance(x, np.ndarray) else x for x in got]


def take(g: Geode, node: str, source: str, count: int) -> list[Message]:
    got: list[Message] = []
    while len(got) < count:
        got += g.receive_many(node, source=source, limit=count - len(got), timeout=TIMEOUT)
    return got


def wait_acked(g: Geode) -> None:
    deadline = time.monotonic() + TIMEOUT
    while g.stats().acked < g.stats().sent:
        g.pending()
        assert time.monotonic() < deadline, f"acks missing: {g.stats()}"


def ring(g: Geode) -> list[tuple[int, str, str]]:
    """(r, rank r's node, the node it sends to) for every rank r: a ring of the ranks' nodes
    (one rank: node0 to node1, both here)."""
    nodes = g.nodes
    return [(r, nodes[r], nodes[(r + 1) % len(nodes)]) for r in range(g.size)]


def sends(g: Geode, first: int, count: int) -> None:
    """This rank's node sends items ``first`` to ``first + count`` to the next in the ring."""
    _, _, dest = ring(g)[g.rank]
    batch = [item(g.rank, k) for k in range(first, first + count)]
    assert len(g.isend_many(batch, dest=dest)) == count


def takes(g: Geode, count: int) -> None:
    """Each node here that a ring's sender sends to takes its ``count`` items, in order."""
    for r, source, dest in ring(g):
        if g.hosts(dest):
            got = take(g, dest, source, count)
            assert [value_of(m) for m in got] == expected(r, 0, count)
            assert [m.seq for m in got] == list(range(count))
            assert len({m.id for m in got}) == count
            assert g.try_receive(dest, source=source) is None


def test_batches_arrive_once_in_order_and_are_acknowledged() -> None:
    with Geode(acks=True) as g:
        for first in (0, BATCH, 2 * BATCH):
            sends(g, first, BATCH)
        g.flush()
        takes(g, 3 * BATCH)
        g.flush()
        wait_acked(g)
        assert g.stats().sent == 3 * BATCH


def test_a_full_block_queue_holds_the_batch_until_the_consumer_takes() -> None:
    with Geode(queue=QueueConfig(capacity=32, policy="block")) as g:
        producer, consumer = g.nodes[0], g.nodes[-1]
        window = max(1, 32 // len(g.nodes))
        count = 3000
        if g.size == 1:  # (one process: nothing takes while the send would wait)
            with pytest.raises(QueueFull, match=f"item {window} of {count}") as err:
                g.isend_many(range(count), dest=consumer, timeout=TIMEOUT)
            assert err.value.sent == window
            got = take(g, consumer, producer, window)
            assert [m.data for m in got] == list(range(window))
        elif g.hosts(producer):
            g.isend_many(range(count), dest=consumer, timeout=TIMEOUT).wait(timeout=TIMEOUT)
            stats = g.stats()
            assert stats.sent == count and stats.credit_waits > 0
        elif g.hosts(consumer):
            got: list[Message] = []
            while len(got) < count:
                got.append(g.receive(consumer, source=producer, timeout=TIMEOUT))
                assert g.stats(consumer).queue_depth <= window
            assert [m.data for m in got] == list(range(count))
            assert g.stats(consumer).queue_peak <= window
            assert g.try_receive(consumer) is None


def test_a_checkpoint_between_batches_keeps_what_was_in_flight(directory: Path) -> None:
    first = Geode(checkpoint_dir=directory)
    sends(first, 0, BATCH)
    first.checkpoint()  # (its drain: every batch sent before it is in the cut)
    sends(first, BATCH, BATCH)
    takes(first, 2 * BATCH)
    first.close(timeout=TIMEOUT)
    # A restart finds the first batches queued (none twice), and the seqs go on.
    second = Geode(checkpoint_dir=directory, restart=True)
    sends(second, BATCH, BATCH)
    takes(second, 2 * BATCH)
    second.close(timeout=TIMEOUT)
