"""A large message's frames on the MPI transport: a frame held (probed, its size known) until
its envelope claims it, and the datatype a strided array is sent from."""

from __future__ import annotations

import time

from mpi4py import MPI

from geode_mpi.transport.base import Frame


def strided_datatype(frame: Frame) -> MPI.Datatype:
    """A committed MPI datatype that reads a strided array's elements in C order from BOTTOM."""
    current = MPI.BYTE.Create_contiguous(frame.itemsize)
    for count, stride in zip(reversed(frame.shape), reversed(frame.strides), strict=True):
        outer = current.Create_hvector(count, 1, stride)
        current.Free()
        current = outer
    address = frame.__array_interface__["data"][0]
    absolute = MPI.Datatype.Create_struct([1], [address], [current])
    current.Free()
    return absolute.Commit()


# A frame held this long (seconds) without its envelope gets its receive posted before the
# envelope comes (see _Held). On shared memory the envelope follows within a few us (the
# sender posts it right after the frame), and waiting for it keeps the frame's copy after the
# envelope's Python work, on a warm cache; over MPICH's ofi/tcp it comes only after the
# frame's last byte (1 MiB: about 500 us), where frames go first at all (a topic stream's:
# a point-to-point send over a network sends its envelope first, FRAMES_AFTER).
LATE_ENVELOPE = 30e-6


class _Held:
    """A frame probed (matched, its size known) and not yet claimed by its envelope. Its
    receive is posted once the envelope is `LATE_ENVELOPE` late (`MPITransport._post_late`):
    over a network the envelope waits behind the frame's bytes, which move only into a posted
    receive (or, slower, into MPI's unexpected-message buffers, then copied again)."""

    __slots__ = ("count", "message", "request", "since", "target")

    def __init__(self, count: int, message: MPI.Message) -> None:
        self.count = count
        self.message = message
        self.since = time.perf_counter()
        self.target: Frame | None = None
        self.request: MPI.Request | None = None
