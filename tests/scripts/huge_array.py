"""An array over 2 GiB from node0 to node1 and back, checked at both ends."""

import numpy as np

from geode_mpi import Geode

N = 2**31 + 4096  # bytes: over the 32-bit count limit
with Geode() as g:
    if g.hosts("node0"):
        data = np.arange(N // 8, dtype=np.int64)
        g.send(data, "node0", "node1", timeout=300)
        del data
    if g.hosts("node1"):
        got = g.receive("node1", timeout=300).data
        assert got.nbytes == N and got[0] == 0 and got[-1] == N // 8 - 1
        assert got[N // 16] == N // 16
        print(f"received {got.nbytes} bytes intact")
