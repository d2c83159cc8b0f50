"""Per-peer state of the MPI transport: made for the ranks that send here, not for every rank.

A job of thousands of ranks where each talks to a few: a transport that kept two queues per
rank of the world held 1.5 KB per peer (31 MB a rank at 16,000 ranks, 2 GB per 64-rank node).
Measured in a subprocess (it starts MPI as a one-rank singleton), over a communicator that
says it has thousands of ranks.
"""

from __future__ import annotations

from mpirun import clean_env, python

# The transport built over COMM_SELF said to be of `size` ranks, twice; what it allocated.
SCRIPT = """
import tracemalloc
from mpi4py import MPI
from geode_mpi.transport.mpi import MPITransport


class Posing:
    '''A communicator of `size` ranks, as far as the transport's start asks.'''

    def __init__(self, comm, size):
        self._comm, self._size = comm, size

    def Get_size(self):
        return self._size

    def Dup(self):
        return Posing(self._comm.Dup(), self._size)

    def __getattr__(self, name):
        return getattr(self._comm, name)


made = []
for size in (1_000, 5_000):
    tracemalloc.start()
    made.append(MPITransport(Posing(MPI.COMM_SELF, size)))
    print(size, tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
"""


def test_the_mpi_transport_makes_no_state_per_peer_that_never_sent() -> None:
    result = python(["-c", SCRIPT], timeout=120, env=clean_env())
    assert result.returncode == 0, result.explain()
    sizes = dict(map(int, line.split()) for line in result.stdout.splitlines())
    per_peer = (sizes[5_000] - sizes[1_000]) / 4_000
    # Five counts or flags per rank (8 bytes each: sent and received counts, what was last
    # told each peer, and the two queues' places, empty until a peer sends): 1,560 before.
    assert per_peer <= 48, f"{per_peer:.0f} bytes per peer rank that never sent"
