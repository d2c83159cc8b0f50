"""What a total-order topic's sequencer holds for a full subscriber, across a restart on
another number of ranks (tests/test_checkpoint_resize.py).

``save DIR``: ``n1`` publishes ``MESSAGES`` on topic ``to`` (sequencer ``n2``), whose only
subscriber ``n3`` has room for 4: the sequencer holds the rest at the checkpoint. ``load
DIR``: restart (the sequencer's node on another rank): ``n3`` receives every message once, in
order, and the publisher's are all acknowledged.
"""

from __future__ import annotations

import sys
from typing import Any

from geode_mpi import Geode, QueueConfig, Topic

NODES = ["n0", "n1", "n2", "n3"]
MESSAGES = 7
TIMEOUT = 60.0


def open_job(directory: str, restart: bool) -> tuple[Geode, Topic]:
    bounded = {"n3": QueueConfig(capacity=4, policy="block")}
    geode = Geode(NODES, checkpoint_dir=directory, restart=restart, queues=bounded)
    return geode, geode.topic("to", ["n2", "n1"], ["n3"], total_order=True)


def gather(value: Any) -> list[Any]:
    from mpi4py import MPI

    return list(MPI.COMM_WORLD.gather(value) or [])


def save(directory: str) -> None:
    geode, topic = open_job(directory, False)
    if geode.hosts("n1"):
        for k in range(MESSAGES):
            topic.publish(k, source="n1", timeout=TIMEOUT)
    geode.checkpoint()
    if geode.rank == 0:
        print(f"saved on {geode.size} ranks", flush=True)
    geode.close(timeout=TIMEOUT)


def load(directory: str) -> None:
    geode, topic = open_job(directory, True)
    if geode.hosts("n3"):
        got = [geode.receive("n3", topic=topic, timeout=TIMEOUT) for _ in range(MESSAGES)]
        seen = [(msg.data, msg.seq, msg.origin) for msg in got]
        assert seen == [(k, k, "n1") for k in range(MESSAGES)], seen
        assert geode.try_receive("n3") is None
    geode.close(timeout=TIMEOUT)
    unacked = gather(geode.stats("n1").unacked if geode.hosts("n1") else 0)
    if geode.rank == 0:
        assert sum(unacked) == 0, f"the publisher's messages stayed unacknowledged: {unacked}"
        print(f"restored on {geode.size} ranks", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(sys.argv[2])
    else:
        load(sys.argv[2])
