"""A checkpoint on one number of ranks, a restart on another (tests/test_checkpoint_resize.py).

``save DIR``: every node sends ``SENT`` messages to every node; each receives ``EARLY`` of them
before the checkpoint and saves which in its per-node state; the rest are queued or in flight.
``load DIR``: restart (on any number of ranks): each node gets every message it had not
received, exactly once, and its per-node state, on its new rank.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from geode_mpi import Geode, Message

NODES = [f"n{k}" for k in range(12)]
SENT = 5  # messages from each node to each node
EARLY = 7  # messages each node receives before the checkpoint
TIMEOUT = 60.0


def barrier(size: int) -> None:
    if size > 1:
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()


def save(directory: str) -> None:
    geode = Geode(NODES, checkpoint_dir=directory, resend_after=0.2)
    for k in range(SENT):
        for source in geode.local_nodes:
            for dest in NODES:
                geode.send(Message((source, k, np.full(100, k))), source, dest)
    seen = {}
    for node in geode.local_nodes:
        got = [geode.receive(node, timeout=TIMEOUT) for _ in range(EARLY)]
        seen[node] = {"name": node, "seen": [list(msg.data[:2]) for msg in got]}
        seen[node]["grid"] = np.arange(NODES.index(node), dtype=np.float64)
    geode.checkpoint(state={"rank": geode.rank}, node_state=seen, timeout=TIMEOUT)
    geode.close(timeout=TIMEOUT)
    if geode.rank == 0:
        print(f"saved on {geode.size} ranks")


def load(directory: str, saved_ranks: int) -> None:
    geode = Geode(NODES, checkpoint_dir=directory, restart=True, resend_after=0.2)
    assert geode.restored_epoch == 1, geode.restored_epoch
    expected_state = {"rank": geode.rank} if geode.rank < saved_ranks else {}
    assert geode.restored_state == expected_state, (geode.restored_state, expected_state)
    for node in geode.local_nodes:
        saved = geode.restored_node_state(node)
        assert saved is not None and saved["name"] == node, (node, saved)
        assert np.array_equal(saved["grid"], np.arange(NODES.index(node), dtype=np.float64))
        got = [tuple(pair) for pair in saved["seen"]]
        for _ in range(SENT * len(NODES) - EARLY):
            msg = geode.receive(node, timeout=TIMEOUT)
            assert msg.data[2][-1] == msg.data[1]
            got.append(msg.data[:2])
        assert sorted(got) == sorted((s, k) for s in NODES for k in range(SENT)), got
    # Nothing comes twice: resends of what was unacknowledged at the checkpoint are dropped.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for node in geode.local_nodes:
            extra = geode.try_receive(node)
            assert extra is None, (node, extra.data[:2])
    barrier(geode.size)  # no rank sends the next messages while another checks for extras
    # New messages continue each pair's numbers.
    for source in geode.local_nodes:
        for dest in NODES:
            geode.send(Message("after"), source, dest)
    for node in geode.local_nodes:
        after = [geode.receive(node, timeout=TIMEOUT) for _ in NODES]
        assert sorted(msg.seq for msg in after) == [SENT] * len(NODES), after
    geode.close(timeout=TIMEOUT)
    if geode.rank == 0:
        print(f"restored on {geode.size} ranks")


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(sys.argv[2])
    else:
        load(sys.argv[2], int(sys.argv[3]))
