"""SIGTERM reaches every rank at step 2; the last rank computes ``--late`` seconds more before
its maybe_checkpoint(), while the others already wait in theirs (with ``--timeout``, or none).

The others must wait on for it (maybe_checkpoint() never raises Terminated): the last
checkpoint is written if the late rank arrives before t0 + term_grace, else the grace's timer
ends the job (status 143).
"""

import argparse
import os
import signal
import time

from geode_mpi import Geode

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--late", type=float, required=True)
parser.add_argument("--timeout", type=float, default=None)
args = parser.parse_args()

with Geode(checkpoint_dir=args.dir) as geode:
    state = geode.restored_state or {"step": 0}
    print(f"ready {geode.rank}", flush=True)
    for step in range(state["step"], 5):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as SLURM signals every process of the job
            if geode.rank == geode.size - 1:
                until = time.monotonic() + args.late
                while time.monotonic() < until:  # still computing its step
                    pass
        state["step"] = step + 1
        geode.maybe_checkpoint(state, timeout=args.timeout)
    print(f"finished {geode.rank} without a SIGTERM exit", flush=True)
