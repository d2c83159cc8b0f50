"""A job that drops its Geode without closing it: normal exit must still deliver everything."""

import numpy as np
from mpi4py import MPI

from geode_mpi import Geode


def produce() -> Geode | None:
    g = Geode()
    if g.rank != 0:
        return g
    for k in range(1, g.size):
        g.isend(np.full(4 * 2**20, k, np.float64), dest=k)  # 32 MiB each, not waited for
    return None  # rank 0's Geode is dropped here


g = produce()
MPI.COMM_WORLD.Barrier()  # from here on, rank 0 has returned and dropped its Geode
if g is not None:
    got = g.receive(timeout=60).data
    assert got.shape == (4 * 2**20,) and (got == g.rank).all()
    print(f"rank {g.rank} received {got.nbytes} bytes", flush=True)
