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
import json
import statistics
import sys
from pathlib import Path

from mpi4py import MPI

from geode_mpi import Geode, Message


def slowest(comm: MPI.Intracomm, seconds: float) -> float:
    return float(comm.allreduce(seconds, op=MPI.MAX))


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
        run_ms, raw_ms = statistics.median(runs) * 1e3, statistics.median(raws) * 1e3
        ratio = statistics.median(r / w for r, w in zip(runs, raws, strict=True))
        print(f"{'ranks':>5} {'run() ms':>9} {'allreduce ms':>13} {'ratio':>7}  (medians)")
        print(f"{size:>5} {run_ms:>9.3f} {raw_ms:>13.3f} {ratio:>7.1f}")
        if args.json is not None:
            figures = {
                "ranks": size,
                "repeat": args.repeat,
                "run_ms": [t * 1e3 for t in runs],
                "allreduce_ms": [t * 1e3 for t in raws],
                "median_run_ms": run_ms,
                "median_allreduce_ms": raw_ms,
                "median_ratio": ratio,
            }
            args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
