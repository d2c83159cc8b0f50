"""The plain receive's direct take: replies taken straight from MPI, never queued, keep every
guarantee (order, data, counters, acks, other nodes' messages, filtered receives)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from geode_mpi import Geode, Message

TIMEOUT = 60.0
ROUNDS = 200


def payload(k: int) -> Any:
    kind = k % 5
    if kind == 0:
        return np.arange(4, dtype=np.int16) + k  # 8 B: inside the meta
    if kind == 1:
        return np.full(128, float(k))  # 1 KiB
    if kind == 2:
        return f"text #{k}"
    if kind == 3:
        return {"k": k, "list": [k, (k, None)]}
    return k


def same(got: Any, expected: Any) -> bool:
    if isinstance(expected, np.ndarray):
        return (
            isinstance(got, np.ndarray)
            and got.dtype == expected.dtype
            and np.array_equal(got, expected)
        )
    return bool(got == expected)


def partner(geode: Geode) -> int | None:
    """The rank this one plays ping-pong with (rank 0 with 1, 2 with 3; itself alone)."""
    other = geode.rank ^ 1
    if geode.size == 1:
        return 0
    return other if other < geode.size else None


def test_ping_pong_keeps_order_data_counters_and_acks() -> None:
    # Two nodes per rank: node r and node r+P live on rank r. Every 7th round the replier
    # first sends to the other node of the asker's rank, whose message arrives while the
    # asker's plain receive waits (the sink queues it for that node).
    with Geode(_nodes()) as geode:
        size, rank = geode.size, geode.rank
        peer = partner(geode)
        if peer is None:
            return
        asking = rank <= peer
        me, other = f"node{rank}", f"node{peer}"
        # Counted: a direct take must have run, a message handed out without being queued
        # (`take_arrival`, or the express take's inline decode of a plain payload)
        engine = geode._runtime.engine
        direct, express = engine.take_arrival, engine.take_express
        taken = [0]

        def counted(*args: Any) -> Any:
            taken[0] += 1
            return direct(*args)

        def counted_express(*args: Any) -> Any:
            got = express(*args)
            if isinstance(got, Message):
                taken[0] += 1
            return got

        engine.take_arrival = counted  # type: ignore[method-assign]
        engine.take_express = counted_express  # type: ignore[method-assign]
        for k in range(ROUNDS):
            if size == 1:  # one process: node0 asks node1
                geode.send(payload(k), "node0", "node1")
                got = geode.receive("node1")
                geode.send(got.data, "node1", "node0")
                reply = geode.receive()
            elif asking:
                geode.send(payload(k), dest=other)
                reply = geode.receive()
            else:
                got = geode.receive()
                assert got.seq == k and got.source == other and same(got.data, payload(k))
                if k % 7 == 0:  # from this rank's second node to the asker's
                    geode.send(f"aside {k}", f"node{rank + size}", f"node{peer + size}")
                geode.send(got.data, dest=other)
                continue
            assert reply.seq == k and same(reply.data, payload(k)), (k, reply)
            if isinstance(reply.data, np.ndarray):  # yours: writable, and no one else's
                assert reply.data.flags.writeable
                reply.data[...] = 0
        if asking and size > 1:
            aside = [
                geode.receive(f"node{rank + size}", timeout=TIMEOUT).data
                for _ in range(0, ROUNDS, 7)
            ]
            assert aside == [f"aside {k}" for k in range(0, ROUNDS, 7)]
        if size > 1:
            # A last send that waits for its ack: the pair's acks are ranges, so every
            # message before it is acked too.
            if asking:
                geode.send("end", dest=other, ack=True, timeout=TIMEOUT)
                assert geode.receive(timeout=TIMEOUT).data == "end"
            else:
                assert geode.receive(timeout=TIMEOUT).data == "end"
                geode.send("end", dest=other, ack=True, timeout=TIMEOUT)
            stats = geode.stats(me)
            assert stats.received == stats.processed == ROUNDS + 1
            assert stats.sent == ROUNDS + 1
            assert stats.unacked == 0 and stats.duplicates == 0
            print(f"rank {rank}: {taken[0]} direct takes")
            # With more ranks than cores, or a loaded machine, a reply may come after the spin
            # every time (0 takes in a CI run at load 20); tests/unit/test_take_arrival.py
            # checks the path itself whatever the load.
            if size == 2 and os.getloadavg()[0] < (os.cpu_count() or 1):
                assert taken[0] > 0


def test_a_filtered_receive_leaves_the_other_arrivals_queued() -> None:
    # While a receive filtered by source waits, a message from another source arrives first:
    # it is queued (not taken by the plain receive's direct path), and the next plain receive
    # gets it.
    with Geode(_nodes()) as geode:
        size, rank = geode.size, geode.rank
        if size == 1:
            geode.send("first", "node1", "node0")
            geode.send("wanted", "node3", "node0")
            assert geode.receive(source="node3", timeout=TIMEOUT).data == "wanted"
            assert geode.receive().data == "first"
            return
        if rank == 1:
            geode.send("first", "node1", "node0")
            geode.send("wanted", f"node{1 + size}", "node0")
            assert geode.receive().data == "done"
        elif rank == 0:
            assert geode.receive(source=f"node{1 + size}", timeout=TIMEOUT).data == "wanted"
            assert geode.receive().data == "first"
            geode.send("done", dest="node1")


def _nodes() -> int:
    """Two nodes per rank (four in one process)."""
    from mpi4py import MPI

    return max(4, 2 * MPI.COMM_WORLD.Get_size())
