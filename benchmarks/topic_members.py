"""What `topic()` costs with its members fixed at 2 nodes, as the world grows.

Each repetition times, after a barrier, one ``geode.topic(...)`` with one publisher (node0)
and one subscriber (node1), whatever the number of ranks, then one raw ``Allreduce`` of 32
bytes (what every rank's agreement on the topic's arguments costs at least: a digest reduced
over the world), each as the slowest rank's time. The rest of topic(), the streams and their
member ranks, is local work of O(members). Run it under a launcher:

    mpiexec -n 8 python benchmarks/topic_members.py --repeat 40
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI
from timing import report_beside_raw, slowest

from geode_mpi import Geode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40, help="timed repetitions (default 40)")
    parser.add_argument("--json", type=Path, help="write the figures to this file (rank 0)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    topics: list[float] = []
    raws: list[float] = []
    digest, out = np.zeros(4, np.uint64), np.zeros(4, np.uint64)
    with Geode() as geode:
        geode.topic("warm-up", publishers=["node0"], subscribers=["node1"])
        for k in range(args.repeat):
            comm.Barrier()
            start = MPI.Wtime()
            geode.topic(f"t{k}", publishers=["node0"], subscribers=["node1"])
            topics.append(slowest(comm, MPI.Wtime() - start))
            comm.Barrier()
            start = MPI.Wtime()
            comm.Allreduce(digest, out, op=MPI.MAX)
            raws.append(slowest(comm, MPI.Wtime() - start))
    if rank == 0:
        report_beside_raw(size, args.repeat, ("topic()", "Allreduce"), (topics, raws), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
