"""A job that hangs while rank 0 computes: the other ranks wait for their left neighbour.

Rank 0 cannot answer the watchdog (it sleeps, outside geode_mpi), so rank 1 asks instead,
one grace period later; the higher ranks leave it to rank 1.
"""

import time

from geode_mpi import Geode

with Geode() as geode:
    if geode.rank == 0:
        time.sleep(120)  # busy outside geode_mpi
    left = (geode.rank - 1) % geode.size
    geode.receive(source=left)
