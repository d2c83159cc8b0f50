"""run()'s quiescence detection beside a raw allreduce, in the same run.

In each repetition every rank sends one message to the next rank's node, whose handler returns
at once, and calls ``run()``: the time is almost all detection, the waves that prove that no
message is in flight (the message makes the counts change, so a first wave cannot prove it
alone). Each repetition times, after a barrier, one ``run()`` and then one raw
``comm.allreduce`` of an int (the least any agreement over the ranks costs), each as the
slowest rank's time. Run it under a launcher:

    mpiexec -n 4 python benchmarks/quiescence.py --repeat 30
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mpi4py import MPI
from timing import report_beside_raw, slowest

from geode_mpi import Geode, Message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions (default 20)")
    parser.add_argument("--json", type=Path, help="write the figures to this file (rank 0)")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    runs: list[float] = []
    raws: list[float] = []
    with Geode() as geode:
        geode.on(Message)(lambda message: None)
        after = geode.nodes[(rank + 1) % size]
        geode.run(timeout=120)  # warm-up: first waves, first control records
        for _ in range(args.repeat):
            comm.Barrier()
            start = MPI.Wtime()
            geode.send(Message(None), geode.node, after)
            reason = geode.run(timeout=120).reason
            runs.append(slowest(comm, MPI.Wtime() - start))
            assert reason == "quiescent", reason
            comm.Barrier()
            start = MPI.Wtime()
            comm.allreduce(1)
            raws.append(slowest(comm, MPI.Wtime() - start))
    if rank == 0:
        report_beside_raw(size, args.repeat, ("run()", "allreduce"), (runs, raws), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
