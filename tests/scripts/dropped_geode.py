"""A job that drops its Geode without closing it: normal exit must still deliver everything."""

import time

import numpy as np

from geode_mpi import Geode


def produce() -> None:
    g = Geode()
    if g.rank == 0:
        for k in range(1, g.size):
            g.isend(np.full(4 * 2**20, k, np.float64), dest=k)  # 32 MiB each, not waited for
    else:
        time.sleep(0.5)  # the sender has returned and dropped its Geode by now
        got = g.receive(timeout=60).data
        assert got.shape == (4 * 2**20,) and (got == g.rank).all()
        print(f"rank {g.rank} received {got.nbytes} bytes", flush=True)


produce()
