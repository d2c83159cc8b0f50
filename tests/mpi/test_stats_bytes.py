"""`--stats`' `MB in` equals its `MB out` at 1 to 4 ranks: every node's `received_bytes`
counts the bytes its senders counted in `sent_bytes` (the message's meta and frames as they
travelled), whatever way a message went (a run, a batch entry, an envelope with frames in it
or after it, a topic's stream, a shared array's reference)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message, share
from geode_mpi.transport.relayplan import SPLIT_MIN, shape_for

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


def totals(geode: Geode, *fields: str) -> tuple[int, ...]:
    """Every rank's nodes' ``fields`` of their stats (sent, sent_bytes, received,
    received_bytes when none are named), summed over ranks."""
    fields = fields or ("sent", "sent_bytes", "received", "received_bytes")
    mine = np.zeros(len(fields), np.int64)
    for node in geode.nodes:
        if geode.hosts(node):
            stats = geode.stats(node)
            mine += [getattr(stats, field) for field in fields]
    if geode.size == 1:
        return tuple(int(value) for value in mine)
    from mpi4py import MPI

    summed = MPI.COMM_WORLD.allreduce(mine)
    return tuple(int(value) for value in summed)


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


def test_bytes_in_equal_bytes_out_for_relayed_broadcasts(
    geode: Geode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A topic's arrays large enough to go down a relay to 2 or more other ranks: split among
    the members (2 MiB), down a chain or tree at 4 ranks and more (5 MiB). Before: a relayed
    arrival counted its out-of-band frames twice (its envelope's sizes, then the frames as
    they came down the relay): 3 ranks, 3 of 2 MiB: 31,458,027 in, 18,875,115 out."""
    monkeypatch.setenv("GEODE_SHARED_BYTES", "0")  # (read at the first topic: relays, not it)
    nodes = geode.nodes
    first = nodes[0]
    news = geode.topic("big", publishers=[first], subscribers=nodes)
    sizes = [2 * SPLIT_MIN, 2 * SPLIT_MIN + 1, 5 * SPLIT_MIN]
    if geode.hosts(first):
        for index, size in enumerate(sizes):
            news.publish(np.full(size, index, np.uint8), source=first).wait(timeout=TIMEOUT)
    for node in nodes:
        if geode.hosts(node):
            for index, size in enumerate(sizes):
                got = geode.receive(node, topic="big", timeout=TIMEOUT).data
                assert got.nbytes == size and got[-1] == index
    members = geode.size - 1
    family = getattr(geode.transport, "family", None)
    relays = sum(shape_for(size, members, family) is not None for size in sizes)
    assert getattr(geode.transport, "relayed", 0) == relays  # (rooted, or received down it)
    sent, sent_bytes, received, received_bytes = totals(geode)
    assert sent == received == len(sizes) * len(nodes)
    assert received_bytes == sent_bytes > sum(sizes) * len(nodes)


def test_a_late_subscriber_s_replays_count_in_on_it_and_as_resent_on_the_publisher(
    geode: Geode,
) -> None:
    """The one exception docs/observability.md names: a retained message replayed for a
    subscriber that joined later counts in its `received` and `received_bytes`, and in its
    publisher's `resent`, not in `sent` or `sent_bytes`."""
    nodes = geode.nodes
    first, late = nodes[0], nodes[-1]
    log = geode.topic("log", publishers=[first], subscribers=[first], retain=2)
    if geode.hosts(first):
        for index in range(2):
            log.publish(np.full(1000, index, np.float64), source=first)
            assert geode.receive(first, topic="log", timeout=TIMEOUT).data[0] == index
    log.subscribe(late)  # (collective)
    if geode.hosts(late):
        for index in range(2):
            assert geode.receive(late, topic="log", timeout=TIMEOUT).data[0] == index
    sent, sent_bytes, received, received_bytes, resent = totals(
        geode, "sent", "sent_bytes", "received", "received_bytes", "resent"
    )
    assert (sent, resent, received) == (2, 2, 4)
    assert received_bytes == 2 * sent_bytes > 2 * 8000
