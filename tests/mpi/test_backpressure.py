"""Bounded receive queues under a fast producer: block (credits), raise (QueueFull), drop_oldest.

node0 produces numbered arrays (the index in the first and last 8 bytes) for the last node,
which takes them slowly, so that every message can be checked: none lost, none twice, in order.
With several ranks the producer is rank 0 and the consumer the last rank; the ranks between
only create and close the Geode. In the embedded world (one rank) all four nodes live in one
process, where a send cannot wait for room: `block` raises QueueFull there instead.

The producer uses ``isend``: a producer that never waits for the network. (A plain ``send`` of
a 64 KiB array already waits until MPI has moved it, which needs the consumer to poll, so it
would rarely run out of credits and would not show what the credits do.)
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message, QueueConfig, QueueFull

TIMEOUT = 60.0
KiB = 1024
MiB = 1024 * KiB
SIZE = 64 * KiB
CAPACITY = 64
STREAM = 3000  # 3000 x 64 KiB = 188 MiB: what an unbounded consumer or producer could hold
RSS_LIMIT = 64 * MiB  # growth allowed to either side (the queue itself is at most 4 MiB)
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """This process's resident set size now, in bytes."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def numbered(index: int, size: int = SIZE) -> np.ndarray[Any, Any]:
    """A fresh, fully written array carrying ``index`` (as a producer computing data makes)."""
    data = np.full(size, index % 251, np.uint8)
    data[:8].view(np.int64)[0] = index
    data[-8:].view(np.int64)[0] = index
    return data


def index_of(message: Message, size: int = SIZE) -> int:
    """The index a received array carries, after checking that it arrived whole."""
    data = message.data
    assert isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape == (size,)
    index = int(data[:8].view(np.int64)[0])
    assert int(data[-8:].view(np.int64)[0]) == index, f"array {index} damaged at its end"
    assert data[8] == index % 251 and data[size // 2] == index % 251, f"array {index} damaged"
    assert message.seq == index, f"array {index} came with seq {message.seq}"
    return index


def window_of(geode: Geode, capacity: int) -> int:
    """Credits per sending node: capacity // number of nodes (the documented rule; a capacity
    below the number of nodes needs a window)."""
    return max(1, capacity // len(geode.nodes))


def poll_until(geode: Geode, node: str, condition: Any, what: str) -> None:
    """Drive progress (without taking anything from the queue) until ``condition()``."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        geode.pending(node)
        assert time.monotonic() < deadline, f"timed out waiting until {what}"


# -- block -------------------------------------------------------------------------------------


def test_block_keeps_both_sides_bounded_and_loses_nothing() -> None:
    g = Geode(queue=QueueConfig(capacity=CAPACITY, policy="block"))
    producer, consumer = g.nodes[0], g.nodes[-1]
    window = window_of(g, CAPACITY)
    if g.size == 1:
        block_in_one_process(g, producer, consumer, window)
    elif g.hosts(producer):
        produce_fast(g, consumer, window)
    elif g.hosts(consumer):
        consume_slowly(g, producer, consumer, window)
    g.close(timeout=TIMEOUT)


def produce_fast(g: Geode, consumer: str, window: int) -> None:
    before = most = rss()
    most_unacked = 0
    for index in range(STREAM):
        g.isend(numbered(index), dest=consumer, timeout=TIMEOUT)
        if index % 50 == 49:
            most = max(most, rss())
            most_unacked = max(most_unacked, g.stats().unacked)
    stats = g.stats()
    assert stats.sent == STREAM
    assert stats.credit_waits > 0, "a producer faster than its consumer never waited for credits"
    assert stats.credit_wait_seconds > 0
    # What it holds is bounded by its credits: the arrays not yet moved, and (with acks) those
    # not yet acknowledged, which come back with the credits in batches.
    assert most_unacked <= 2 * window, f"{most_unacked} messages unacked with {window} credits"
    growth = most - before
    assert growth < RSS_LIMIT, f"the producer grew by {growth / MiB:.0f} MiB"


def consume_slowly(g: Geode, producer: str, consumer: str, window: int) -> None:
    before = most = rss()
    # Take nothing until the producer has used all its credits, then keep polling a while:
    # however much it tries to send, no more than its window may reach this queue.
    poll_until(g, consumer, lambda: g.stats(consumer).received >= window, "the window arrived")
    hold = time.monotonic() + 0.3
    while time.monotonic() < hold:
        g.pending(consumer)
    held = g.stats(consumer)
    assert held.queue_depth == window, f"{held.queue_depth} queued with {window} credits"
    most = max(most, rss())
    for index in range(STREAM):
        message = g.receive(consumer, source=producer, timeout=TIMEOUT)
        assert index_of(message) == index, f"expected array {index}: lost or out of order"
        del message
        if index % 10 == 9:
            time.sleep(0.005)  # a slow consumer: 0.5 ms per message on average
        if index % 50 == 49:
            most = max(most, rss())
    stats = g.stats(consumer)
    assert stats.received == STREAM and stats.dropped == 0
    assert stats.queue_peak == window <= CAPACITY, f"queue peak {stats.queue_peak}"
    assert g.try_receive(consumer) is None, "a message beyond the stream arrived"
    growth = most - before
    assert growth < RSS_LIMIT, f"the consumer grew by {growth / MiB:.0f} MiB"


def block_in_one_process(g: Geode, producer: str, consumer: str, window: int) -> None:
    before = most = rss()
    for index in range(window):
        g.send(numbered(index), producer, consumer, timeout=TIMEOUT)
    with pytest.raises(QueueFull, match=rf"{consumer}'s queue is full for {producer}") as info:
        g.send(numbered(window), producer, consumer, timeout=TIMEOUT)
    text = str(info.value)
    assert f"capacity {CAPACITY}" in text and "one-process world" in text, text
    assert "nothing was sent" in text, text
    # Interleaved, the stream goes through: on QueueFull the consumer takes one, then retry.
    taken = 0
    for index in range(window, STREAM):
        while True:
            try:
                g.send(numbered(index), producer, consumer, timeout=TIMEOUT)
                break
            except QueueFull:
                assert index_of(g.receive(consumer, timeout=0)) == taken
                taken += 1
        if index % 50 == 49:
            most = max(most, rss())
    while taken < STREAM:
        assert index_of(g.receive(consumer, timeout=0)) == taken
        taken += 1
    assert g.try_receive(consumer) is None
    stats = g.stats(consumer)
    assert stats.received == STREAM and stats.queue_peak == window
    assert g.stats(producer).sent == STREAM and g.stats(producer).credit_waits == 0
    growth = most - before
    assert growth < RSS_LIMIT, f"the process grew by {growth / MiB:.0f} MiB"


# -- raise -------------------------------------------------------------------------------------


def test_raise_refuses_at_once_and_loses_nothing_accepted() -> None:
    capacity, total, size = 8, 200, KiB
    g = Geode(queue=QueueConfig(capacity=capacity, policy="raise"))
    signals = Geode()  # unbounded queues, for this test's own "go ahead"
    producer, consumer = g.nodes[0], g.nodes[-1]
    window = window_of(g, capacity)
    taken = 0

    def take_one() -> None:
        nonlocal taken
        message = g.receive(consumer, source=producer, timeout=TIMEOUT)
        assert index_of(message, size) == taken, f"expected array {taken}"
        taken += 1

    if g.hosts(producer):
        # Nothing is taken until the producer says so: exactly `window` sends fit.
        accepted = 0
        with pytest.raises(QueueFull) as info:
            for index in range(window + 1):
                g.isend(numbered(index, size), producer, consumer)
                accepted += 1
        assert accepted == window
        refused = info.value
        assert (refused.dest, refused.source) == (consumer, producer)
        assert (refused.capacity, refused.window) == (capacity, window)
        text = str(refused)
        assert f"{consumer}'s queue is full for {producer} (capacity {capacity}" in text, text
        assert "policy 'raise'" in text and "nothing was sent" in text, text
        assert g.stats(producer).sent == window
        signals.send("go ahead", producer, consumer, timeout=TIMEOUT)
        # The rest, the refused one first: retry when refused, until all are accepted.
        index = window
        while index < total:
            try:
                g.isend(numbered(index, size), producer, consumer)
                index += 1
            except QueueFull:
                if g.hosts(consumer):
                    take_one()  # one process: only taking makes room
                else:
                    g.pending(producer)  # let the credits the consumer returns arrive
        stats = g.stats(producer)
        assert stats.sent == total and stats.credit_waits == 0, "raise never waits"
    if g.hosts(consumer):
        assert signals.receive(consumer, source=producer, timeout=TIMEOUT).data == "go ahead"
        while taken < total:
            take_one()
        assert g.try_receive(consumer) is None, "a refused message arrived after all"
        stats = g.stats(consumer)
        assert stats.received == total and stats.queue_peak <= window
    g.close(timeout=TIMEOUT)
    signals.close(timeout=TIMEOUT)


# -- drop_oldest -------------------------------------------------------------------------------


def test_drop_oldest_keeps_the_newest_in_order_and_counts_the_rest() -> None:
    capacity, total, size = 8, 100, KiB
    g = Geode(queue=QueueConfig(capacity=capacity, policy="drop_oldest"))
    producer, consumer = g.nodes[0], g.nodes[-1]
    if g.hosts(producer):
        for index in range(total):
            g.send(numbered(index, size), producer, consumer, timeout=TIMEOUT)
        stats = g.stats(producer)
        assert stats.sent == total and stats.credit_waits == 0, "drop_oldest never waits"
    if g.hosts(consumer):
        # Take nothing until all of them arrived: the queue keeps the newest `capacity`.
        poll_until(g, consumer, lambda: g.stats(consumer).received >= total, "all arrived")
        stats = g.stats(consumer)
        assert stats.received == total
        assert stats.dropped == total - capacity
        assert stats.queue_depth == capacity and stats.queue_peak == capacity
        kept = []
        while (message := g.try_receive(consumer)) is not None:
            kept.append(index_of(message, size))
        assert kept == list(range(total - capacity, total)), kept
        assert len(kept) + g.stats(consumer).dropped == total
    g.close(timeout=TIMEOUT)


@pytest.mark.parametrize("how", ["receive", "areceive"])
def test_drop_oldest_hands_a_consumer_back_from_computing_the_newest(how: str) -> None:
    """Progress reports into a queue of 2 while the consumer computes: its next receives take
    the newest, the rest dropped. Before, a consumer that looped on receive() (taking a
    queued message without polling MPI, and the first arrival of a backlog) got every report,
    oldest first, and dropped none: the newer ones never reached the queue to displace them."""
    from mpi4py import MPI

    reports = 50
    g = Geode(queue=QueueConfig(capacity=2, policy="drop_oldest"))
    producer, consumer = "node0", g.nodes[-1]
    if g.hosts(producer):
        for k in range(reports):
            g.send({"step": k}, producer, consumer)
        g.send("end", producer, consumer)
        g.flush()
    MPI.COMM_WORLD.Barrier()  # (no geode call on the consumer's rank: it takes nothing in)
    if g.hosts(consumer):
        time.sleep(0.2)  # computing, while the last reports land (MPI moves them alone)
        got: list[Any] = []

        async def areceive() -> Message:
            return await g.areceive(consumer, timeout=TIMEOUT)

        while not got or got[-1] != "end":
            if how == "receive":
                message = g.receive(consumer, timeout=TIMEOUT)
            else:
                message = asyncio.run(areceive())
            got.append(message.data if message.data == "end" else message.data["step"])
        dropped = g.stats(consumer).dropped
        assert dropped > 0, f"nothing dropped: received {got}"
        assert got[-2] == reports - 1 and got == [*sorted(got[:-1]), "end"]
        assert len(got) - 1 + dropped == reports
    g.close(timeout=TIMEOUT)
