"""`--stats`' `MB in` equals its `MB out` at 1 to 4 ranks: every node's `received_bytes`
counts the bytes its senders counted in `sent_bytes` (the message's meta and frames as they
travelled), whatever way a message went (a run, a batch entry, an envelope with frames in it
or after it, a topic's stream, a shared array's reference)."""

from __future__ import annotations

from typing import Any

import numpy as np

from geode_mpi import Geode, Message, share

TIMEOUT = 60.0
COUNT = 240


class Step(Message):
    """A message with an attribute of its own: its runs are taken in message by message."""

    def __init__(self, data: Any, step: int) -> None:
        super().__init__(data)
        self.step = step


def item(index: int) -> Any:
    """Runs of small values, with arrays between them: in the header (3 values), in the
    envelope (1,000), after it (100,000)."""
    kind = index % 8
    if kind == 3:
        return np.full(1000, index, np.float64)
    if kind == 5:
        return np.full(3, index, np.int64)
    if kind == 7 and index % 3 == 0:
        return np.full(100_000, index, np.float64)
    return {"step": index, "name": f"item-{index}"} if index % 2 else index


def totals(geode: Geode) -> tuple[int, int, int, int]:
    """Every rank's nodes' (sent, sent_bytes, received, received_bytes), summed over ranks."""
    mine = np.zeros(4, np.int64)
    for node in geode.nodes:
        if geode.hosts(node):
            stats = geode.stats(node)
            mine += (stats.sent, stats.sent_bytes, stats.received, stats.received_bytes)
    if geode.size == 1:
        return tuple(int(value) for value in mine)  # type: ignore[return-value]
    from mpi4py import MPI

    summed = MPI.COMM_WORLD.allreduce(mine)
    return tuple(int(value) for value in summed)  # type: ignore[return-value]


def test_bytes_in_equal_bytes_out_for_batched_runs_and_arrays(geode: Geode) -> None:
    """Before: 24 to 29 bytes more in than out for each message with an array of its own
    frame (the receiver counted its envelope: header, frame table, padding; the sender its
    message), and a shared array's size for each reference to it (in full at the receiver,
    a few bytes at the sender); and up to a run's length fewer for a run taken in message by
    message (each counted the run's bytes divided by its length, rounded down)."""
    nodes = geode.nodes
    first, last = nodes[0], nodes[-1]
    field = share(np.linspace(0.0, 1.0, 100_000))
    news = geode.topic("news", publishers=[first], subscribers=nodes)
    sends = COUNT + COUNT // 2 + 3 + 61
    published = [item(index) if index % 4 else field for index in range(12)]
    if geode.hosts(first):
        handles = [geode.isend(item(index), dest=last) for index in range(COUNT)]
        batch = geode.isend_many([item(index) for index in range(COUNT // 2)], dest=last)
        for _ in range(3):
            geode.send({"field": field}, first, last)
        steps = [geode.isend(Step(f"step {index}", index), dest=last) for index in range(61)]
        for handle in steps:
            handle.wait(timeout=TIMEOUT)
        for handle in handles:
            handle.wait(timeout=TIMEOUT)
        batch.wait(timeout=TIMEOUT)
        for value in published:
            news.publish(value, source=first)
    for node in nodes:
        if geode.hosts(node):
            expected = 12 + (sends if node == last else 0)
            got = [geode.receive(node, timeout=TIMEOUT) for _ in range(expected)]
            assert geode.pending(node) == 0
            if node == last:
                values = [item(index) for index in (*range(COUNT), *range(COUNT // 2))]
                arrays = sum(isinstance(value, np.ndarray) for value in values + published)
                assert sum(isinstance(message.data, np.ndarray) for message in got) == arrays
    sent, sent_bytes, received, received_bytes = totals(geode)
    assert sent == received == sends + 12 * len(nodes)
    assert received_bytes == sent_bytes > 15 * 800_000
