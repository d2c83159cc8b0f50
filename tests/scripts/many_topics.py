"""Thousands of topics in one job (issue 15): no communicator per topic, every topic works, and
an idle wait costs what it costs with none. Run under a launcher with 2 ranks or more::

    mpiexec -n 4 python -m geode_mpi tests/scripts/many_topics.py 10000

Prints one line per rank: the communicators made, and the fastest point-to-point round trip
between node0 and node1 before and after the topics were created.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from mpi4py import MPI

from geode_mpi import Geode

TIMEOUT = 120.0
MAKERS = ("Dup", "Idup", "Split", "Split_type", "Create", "Create_group", "Create_from_group")


class CountingComm:
    """An MPI communicator that counts the communicators made from it (and from those)."""

    def __init__(self, comm: MPI.Intracomm, made: list[str]) -> None:
        self._comm = comm
        self.made = made

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._comm, name)
        if name not in MAKERS:
            return found

        def make(*args: Any, **kwargs: Any) -> Any:
            self.made.append(name)
            return CountingComm(found(*args, **kwargs), self.made)

        return make


def round_trip(geode: Geode, rounds: int = 300) -> float:
    """The fastest of ``rounds`` round trips node0 -> node1 -> node0, in seconds (0: off the
    two ranks)."""
    best = float("inf")
    for k in range(rounds):
        if geode.hosts("node0"):
            began = time.perf_counter()
            geode.send(k, "node0", "node1")
            geode.receive("node0", source="node1", timeout=TIMEOUT)
            best = min(best, time.perf_counter() - began)
        elif geode.hosts("node1"):
            geode.receive("node1", source="node0", timeout=TIMEOUT)  # not a topic's
            geode.send(k, "node1", "node0")
    return best if best < float("inf") else 0.0


def main(count: int) -> None:
    # The node's shared segment (transport/shared.py) makes one communicator at the first
    # topic, however many follow: tests/mpi/test_shared.py covers it. What this script counts
    # is what topics make per topic, so the segment is off here.
    os.environ["GEODE_SHARED_BYTES"] = "0"
    made: list[str] = []
    geode = Geode(comm=CountingComm(MPI.COMM_WORLD, made))  # type: ignore[arg-type]
    nodes, size = geode.nodes, geode.size
    before_topics = list(made)
    idle = round_trip(geode)
    began = time.perf_counter()
    topics = []
    for k in range(count):  # every rank publishes some; half reach every rank, half one other
        publisher = nodes[k % size]
        subscribers = nodes if k % 2 else [nodes[(k + 1) % size]]
        topics.append(geode.topic(f"t{k}", publishers=[publisher], subscribers=subscribers))
    created = time.perf_counter() - began
    busy = round_trip(geode)
    sample = sorted({*range(0, count, 997), count - 2, count - 1})
    for k in sample:
        topics[k].publish({"k": k}, source=nodes[k % size])
    for node in geode.local_nodes:
        want = [f"t{k}" for k in sample if node in topics[k].subscribers]
        got = sorted(str(geode.receive(node, timeout=TIMEOUT).topic) for _ in want)
        assert got == sorted(want), (node, got, want)
        assert geode.try_receive(node) is None
    last = topics[-1]  # its subscribers change: its stream ends and begins again
    last.subscribe(nodes)
    last.publish("again", source=nodes[(count - 1) % size])
    for node in geode.local_nodes:
        assert geode.receive(node, topic=last, timeout=TIMEOUT).data == "again"
    assert made == before_topics, f"topics made communicators: {made[len(before_topics) :]}"
    geode.close(timeout=TIMEOUT)
    print(
        f"rank {geode.rank}: {count} topics in {created:.1f} s; communicators made: "
        f"{len(before_topics)} ({', '.join(before_topics)}); fastest round trip "
        f"{idle * 1e6:.1f} us with no topic, {busy * 1e6:.1f} us with {count}",
        flush=True,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
