"""Rank FAIL_RANK raises (or sys.exit(EXIT) when given); the others wait in a receive."""

import sys

from geode_mpi import Geode

fail_rank = int(sys.argv[1])
exit_code = int(sys.argv[2]) if len(sys.argv) > 2 else None
g = Geode()
if g.rank == fail_rank:
    if exit_code is not None:
        sys.exit(exit_code)
    raise ValueError(f"failing on purpose on rank {g.rank}")
g.receive(timeout=120)  # never satisfied: only the abort ends this rank
