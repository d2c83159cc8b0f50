"""What `topic()` leaves on one rank, and its time there, for a topic of every node of P ranks.

Replayed in one process: a `Geode` on one simulated rank of P (an `InProcHub` endpoint, one node
per rank), whose streams are recorded in the table an MPI rank keeps (`FanoutTable`), as
`MPITransport.open_streams` does. Each topic has every node as publisher and subscriber: P
streams, each to every rank. For each P it prints the bytes the topic leaves held on the rank
(tracemalloc, after a full collection), the member-rank entries the rank's stream table holds
(each distinct tuple counted once) and the median CPU time of ``topic()`` (process time, without
tracemalloc: on a loaded machine the wall time is mostly waiting for a core):

    python benchmarks/topic_replay.py --ranks 250 500 1000 2000 [--rank 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

from geode_mpi import Geode
from geode_mpi.transport import InProcHub
from geode_mpi.transport.fanout import FanoutTable
from geode_mpi.transport.inproc import InProcTransport


class TableTransport(InProcTransport):
    """A simulated rank whose streams go into an MPI rank's `FanoutTable` (nothing is ever
    broadcast here: the replay creates topics only)."""

    def __init__(self, hub: InProcHub, rank: int) -> None:
        super().__init__(hub, rank)
        self.fanouts = FanoutTable(rank)
        self.keys: list[int] = []

    def open_streams(self, streams: Sequence[tuple[int, int]], members: Sequence[int]) -> None:
        self.keys += [key for key, _ in streams]
        self.fanouts.open(streams, members)


def member_entries(transport: TableTransport) -> int:
    """The member ranks the rank's stream table holds, each distinct tuple counted once."""
    streams = [stream for stream in map(transport.fanouts.get, transport.keys) if stream]
    return sum({id(stream[1]): len(stream[1]) for stream in streams}.values())


def replay(ranks: int, rank: int, repeat: int) -> dict[str, float]:
    transport = TableTransport(InProcHub(ranks), rank)
    nodes = [f"node{k}" for k in range(ranks)]
    geode = Geode(transport=transport)
    geode.topic("warm-up", publishers=nodes, subscribers=nodes)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    geode.topic("measured", publishers=nodes, subscribers=nodes)
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    entries = member_entries(transport) / 2  # (the warm-up's and the measured one's)
    times = []
    for k in range(repeat):
        start = time.process_time()
        geode.topic(f"t{k}", publishers=nodes, subscribers=nodes)
        times.append(time.process_time() - start)
    return {
        "ranks": ranks,
        "held_mib": (held - before) / 2**20,
        "peak_mib": (peak - before) / 2**20,
        "member_entries_per_topic": entries,
        "seconds": statistics.median(times),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--rank", type=int, default=0, help="the rank replayed (default 0)")
    parser.add_argument("--repeat", type=int, default=5, help="timed topics per P (default 5)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    rows = [replay(p, args.rank, args.repeat) for p in args.ranks]
    print(f"{'ranks':>6} {'held MiB':>9} {'peak MiB':>9} {'entries':>9} {'CPU s':>8}")
    for row in rows:
        print(
            f"{row['ranks']:>6} {row['held_mib']:>9.2f} {row['peak_mib']:>9.2f} "
            f"{row['member_entries_per_topic']:>9.0f} {row['seconds']:>8.4f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
