"""Computes without ever calling geode_mpi again (pure Python), when SIGTERM arrives.

``--stuck``: rank 0 instead waits in maybe_checkpoint() for the other ranks' votes (they never
call it), where no `Terminated` is raised; the other ranks get a grace ten times longer, so
the job ends at rank 0's grace only if rank 0's timer ends it.
"""

import argparse
import os

from geode_mpi import Geode

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--stuck", action="store_true")
args = parser.parse_args()

first = os.environ.get("PMI_RANK", "0") == "0"
grace = float(os.environ["GEODE_TERM_GRACE"]) * (1 if first or not args.stuck else 10)
geode = Geode(checkpoint_dir=args.dir, term_grace=grace)
print(f"ready {geode.rank} pid {os.getpid()}", flush=True)
if args.stuck and geode.rank == 0:
    geode.maybe_checkpoint()  # waits for the votes of ranks that never come
total = 0
while True:  # a job's long computation
    total = (total + 1) % 1_000_003
