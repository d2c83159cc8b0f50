"""Where a large array's time goes: raw Send, raw matched probe, raw frame+envelope, geode_mpi.

Run as ``mpiexec -n 2 python benchmarks/large_path.py``. Each method is a ping-pong of one
array, timed with ``MPI.Wtime()`` after a barrier; the methods are interleaved in every repeat
and the ratios are paired within a repeat (see benchmarks/README.md). The raw variants rebuild
geode_mpi's protocol one step at a time, so the gap between two neighbouring columns is the cost
of one step:

- ``raw Send``: blocking ``Send``/``Recv`` into a preallocated buffer (the issue's baseline);
- ``matched``: ``Improbe`` on any tag, then ``Message.Irecv``, as geode_mpi receives a frame;
- ``+envelope``: the same plus a small second message per array, as geode_mpi's envelope;
- ``geode``: ``Geode.send`` / ``Geode.receive``, the array released before the next receive;
- ``raw placed``: raw ``Send``/``Recv`` again, into a buffer placed as geode_mpi's receive pool
  places one (2 MiB-aligned, transparent huge pages, at the sender's offset within a page): how
  much of geode_mpi's speed comes from where it receives, which hand-written code can copy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import numpy as np
from common import wrong_rank_count
from mpi4py import MPI

from geode_mpi import Geode
from geode_mpi.transport.pool import BufferPool

MiB = 2**20
TAG_DATA, TAG_ENV = 11, 12


def ratios_for(size: int, comm: MPI.Intracomm, geode: Geode, repeats: int, trips: int) -> str:
    """Time the four methods on one array size; rank 0 gets the table row."""
    rank, peer = comm.Get_rank(), 1 - comm.Get_rank()
    status = MPI.Status()
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    out = np.zeros(size, np.uint8)
    placed = BufferPool(max_bytes=2 * size + 2**22).take(size, MPI.Get_address(data) % 4096)
    placed[:] = 0
    envelope = bytes(96)

    def recv_matched(with_envelope: bool) -> None:
        for _ in range(2 if with_envelope else 1):
            while (message := comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)) is None:
                pass
            if status.Get_tag() == TAG_DATA:
                request = message.Irecv([out, MPI.BYTE])
                while not request.Test():
                    pass
            else:
                message.Recv(bytearray(status.Get_count(MPI.BYTE)))

    def send_nonblocking(array: np.ndarray, with_envelope: bool) -> None:
        requests = [comm.Isend([array, MPI.BYTE], peer, TAG_DATA)]
        if with_envelope:
            requests.append(comm.Isend(envelope, peer, TAG_ENV))
        while not MPI.Request.Testall(requests):
            pass

    def raw_into(buffer: np.ndarray) -> Callable[[], None]:
        def trip() -> None:
            if rank == 0:
                comm.Send(data, peer, TAG_DATA)
                comm.Recv(buffer, peer, TAG_DATA)
            else:
                comm.Recv(buffer, peer, TAG_DATA)
                comm.Send(buffer, peer, TAG_DATA)

        return trip

    def matched(with_envelope: bool) -> Callable[[], None]:
        def trip() -> None:
            if rank == 0:
                send_nonblocking(data, with_envelope)
                recv_matched(with_envelope)
            else:
                recv_matched(with_envelope)
                send_nonblocking(out, with_envelope)

        return trip

    def geode_trip() -> None:
        if rank == 0:
            geode.send(data, dest=geode.nodes[peer])
            geode.receive()  # released at once: the pool reuses its buffer
        else:
            got = geode.receive().data
            geode.send(got, dest=geode.nodes[peer])

    methods = {
        "raw Send": raw_into(out),
        "matched": matched(False),
        "+envelope": matched(True),
        "geode": geode_trip,
        "raw placed": raw_into(placed),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(repeats + 1):  # the first repeat warms up and is dropped
        names = list(methods)
        names = names[repeat % len(names) :] + names[: repeat % len(names)]
        for name in names:
            comm.Barrier()
            start = MPI.Wtime()
            for _ in range(trips):
                methods[name]()
            if repeat:
                times[name].append((MPI.Wtime() - start) / (2 * trips))
    base = times["raw Send"]
    cells = [
        f"{name} {statistics.median(b / t for b, t in zip(base, ts, strict=True)):.2f}"
        for name, ts in times.items()
        if name != "raw Send"
    ]
    return f"{size // MiB:3d} MiB  {statistics.median(base) * 1e6:10.0f}    " + "   ".join(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1,4,16", help="array sizes in MiB (default 1,4,16)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved repeats (default 9)")
    parser.add_argument("--trips", type=int, default=16, help="round trips per timed loop")
    args = parser.parse_args()
    world = MPI.COMM_WORLD
    if wrong_rank_count(world, "large_path.py"):
        return 2
    geode = Geode()
    comm = world.Dup()
    if comm.Get_rank() == 0:
        print("size     raw Send us   then, as ratios raw Send / method (paired per repeat)")
    for text in args.sizes.split(","):
        row = ratios_for(int(float(text) * MiB), comm, geode, args.repeats, args.trips)
        if comm.Get_rank() == 0:
            print(row, flush=True)
    geode.close()
    comm.Free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
