"""What a pattern subscription costs, beside subscribing topic by topic and a raw Allreduce.

Each repetition makes 2 x ``--topics`` topics (one publisher, node0, no subscriber), then times,
after a barrier and as the slowest rank's time: one ``geode.subscribe(last node, "a<k>.*")``
over the first set; ``topic.subscribe(last node)`` on each topic of the second set; one raw
32-byte ``Allreduce`` (the least an agreement costs); and ``--topics`` new ``topic()`` calls
with a pattern that matches them beside as many that no pattern matches. Run it under a
launcher:

    mpiexec -n 4 python benchmarks/patterns.py --topics 50 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI
from timing import paired_median, slowest

from geode_mpi import Geode

STEPS = ("pattern", "one by one", "allreduce", "topics matched", "topics unmatched")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=50, help="topics per set (default 50)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions (default 5)")
    parser.add_argument("--json", type=Path, help="write the figures to this file (rank 0)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    digest, out = np.zeros(4, np.uint64), np.zeros(4, np.uint64)

    def timed(step: str, start: float) -> None:
        times[step].append(slowest(comm, MPI.Wtime() - start))

    with Geode() as geode:
        first, last = geode.nodes[0], geode.nodes[-1]
        for k in range(args.repeat):
            named = [geode.topic(f"a{k}.{j}", [first], []) for j in range(args.topics)]
            plain = [geode.topic(f"b{k}.{j}", [first], []) for j in range(args.topics)]
            comm.Barrier()
            start = MPI.Wtime()
            sub = geode.subscribe(last, f"a{k}.*")
            timed("pattern", start)
            assert all(topic.subscribers == (last,) for topic in named)
            comm.Barrier()
            start = MPI.Wtime()
            for topic in plain:
                topic.subscribe(last)
            timed("one by one", start)
            comm.Barrier()
            start = MPI.Wtime()
            comm.Allreduce(digest, out, op=MPI.MAX)
            timed("allreduce", start)
            comm.Barrier()
            start = MPI.Wtime()
            for j in range(args.topics):
                geode.topic(f"a{k}.late{j}", [first], [])
            timed("topics matched", start)
            comm.Barrier()
            start = MPI.Wtime()
            for j in range(args.topics):
                geode.topic(f"c{k}.late{j}", [first], [])
            timed("topics unmatched", start)
            assert len(sub.topics) == 2 * args.topics
    if comm.Get_rank() == 0:
        report(comm.Get_size(), args.topics, times, args.json)
    return 0


def report(ranks: int, topics: int, times: dict[str, list[float]], path: Path | None) -> None:
    medians = {step: statistics.median(values) * 1e3 for step, values in times.items()}
    ratios = {
        "one by one / pattern": paired_median(times["one by one"], times["pattern"]),
        "pattern / allreduce": paired_median(times["pattern"], times["allreduce"]),
        "topics matched / unmatched": paired_median(
            times["topics matched"], times["topics unmatched"]
        ),
    }
    print(f"{ranks} ranks, {topics} topics per set, medians of {len(times['pattern'])} repeats")
    for step, ms in medians.items():
        print(f"  {step:18s} {ms:10.3f} ms")
    for name, ratio in ratios.items():
        print(f"  {name:28s} {ratio:7.2f} (paired median)")
    if path is not None:
        record = {"ranks": ranks, "topics": topics, "times_s": times, "ratios": ratios}
        path.write_text(json.dumps(record, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
