"""maybe_checkpoint(timeout=1) on rank 0 while the other ranks never call it: it raises
GeodeTimeoutError at about 1 s (it waited in the vote's reduction until they did)."""

import os
import sys
import time

from geode_mpi import Geode, GeodeTimeoutError

geode = Geode(checkpoint_dir=sys.argv[1], checkpoint_every=0.0)
if geode.rank == 0:
    began = time.monotonic()
    try:
        geode.maybe_checkpoint({"x": 1}, timeout=1.0)
        print(f"returned after {time.monotonic() - began:.2f} s", flush=True)
    except GeodeTimeoutError as exc:
        print(f"raised after {time.monotonic() - began:.2f} s: {exc}", flush=True)
else:
    time.sleep(6)  # busy outside geode_mpi: never calls it
os._exit(0)  # a collective given up on leaves the job unfit to close: end it here
