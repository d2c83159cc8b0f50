"""`receive(source=...)` in a ping-pong: taken by the express take when the reply comes from
that source, while messages from other nodes to the same node stay queued, in order, for the
receives that ask for them."""

from __future__ import annotations

import os
from typing import Any

from geode_mpi import Geode, Message

TIMEOUT = 60.0
ROUNDS = 150


def test_a_source_filtered_ping_pong_leaves_other_sources_queued() -> None:
    with Geode(max(4, 2 * _size())) as geode:
        size, rank = geode.size, geode.rank
        if size == 1:  # one process: the filter alone
            geode.send("aside", "node2", "node0")
            geode.send("wanted", "node1", "node0")
            assert geode.receive(source="node1", timeout=TIMEOUT).data == "wanted"
            assert geode.receive(source=2, timeout=0).data == "aside"
            return
        peer = rank ^ 1
        if peer >= size:
            return
        # third: the replier's second node (node r + P lives on rank r)
        me, other, third = f"node{rank}", f"node{peer}", f"node{peer + size}"
        asking = rank < peer
        engine = geode._runtime.engine
        express = engine.take_express
        inline, filtered = [0], [0]

        def counted(*args: Any) -> Any:
            filtered[0] += len(args) > 3 and args[3] >= 0  # (a take for a source filter)
            got = express(*args)
            if isinstance(got, Message):
                inline[0] += 1
            return got

        engine.take_express = counted  # type: ignore[method-assign]
        asides: list[str] = []
        for k in range(ROUNDS):
            if asking:
                geode.send(k, dest=other)
                reply = geode.receive(me, source=other, timeout=TIMEOUT)
                assert (reply.source, reply.data, reply.seq) == (other, -k, k), (k, reply)
                if k % 5 == 0:  # (it came first: queued while the filtered receive took the reply)
                    assert geode.pending() == 1
                    asides.append(geode.receive(source=third, timeout=TIMEOUT).data)
            else:
                got = geode.receive(source=other, timeout=TIMEOUT)
                assert (got.data, got.seq) == (k, k), (k, got)
                if k % 5 == 0:  # another node of this rank to the asker's node, first
                    geode.send(f"aside {k}", f"node{rank + size}", other)
                geode.send(-k, dest=other)
        if asking:
            aside = asides
            assert aside == [f"aside {k}" for k in range(0, ROUNDS, 5)]
            assert geode.pending() == 0
            stats = geode.stats()
            assert stats.received == stats.processed == ROUNDS + len(aside)
            print(f"rank {rank}: {inline[0]} replies taken inline with a source filter")
            assert filtered[0] > 0  # (its queue was empty at times: the express take tried)
            # (a loaded machine may deliver every reply after the spin: see test_direct_receive)
            if size == 2 and os.getloadavg()[0] < (os.cpu_count() or 1):
                assert inline[0] > 0


def _size() -> int:
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.Get_size())
