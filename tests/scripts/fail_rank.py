"""Rank FAIL_RANK raises (or sys.exit(EXIT) when given); the others wait in a receive."""

import sys
import time

from geode_mpi import Geode

fail_rank = int(sys.argv[1])
exit_code = int(sys.argv[2]) if len(sys.argv) > 2 else None
g = Geode()
if g.rank == fail_rank:
    # (the test times the job's end from here, not from the launch: start-up varies with load)
    print(f"failing at {time.time():.3f}", file=sys.stderr, flush=True)
    try:  # MPICH's shared-memory segments, which the abort must not leave behind in /dev/shm
        with open("/proc/self/maps") as maps:
            found = {line.split()[-1] for line in maps if "/dev/shm/mpich_shm_" in line}
        print(f"shared segments: {' '.join(sorted(found))}", file=sys.stderr, flush=True)
    except OSError:
        pass
    if exit_code is not None:
        sys.exit(exit_code)
    raise ValueError(f"failing on purpose on rank {g.rank}")
g.receive(timeout=120)  # never satisfied: only the abort ends this rank
