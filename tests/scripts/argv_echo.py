"""Prints what the job sees of its own launch."""

import sys

from geode_mpi import Geode

with Geode() as g:
    print(f"rank={g.rank} size={g.size} name={__name__} argv={sys.argv[1:]}")
