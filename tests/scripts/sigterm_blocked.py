"""Every rank waits in receive() for a message that never comes, when SIGTERM arrives.

``--save``: catch `Terminated`, save the job's state with a checkpoint (every rank does, so the
collective works), print its epoch, and re-raise.
"""

import argparse

from geode_mpi import Geode, Terminated

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--save", action="store_true")
args = parser.parse_args()

geode = Geode(checkpoint_dir=args.dir)
print(f"ready {geode.rank}", flush=True)
try:
    geode.receive()  # nothing is ever sent
except Terminated as exc:
    if args.save:
        epoch = geode.checkpoint({"saved_by": "Terminated", "waited": exc.waited})
        print(f"rank {geode.rank} saved checkpoint {epoch}", flush=True)
    raise
