"""Where a large array's time goes: raw Send, raw matched probe, raw frame+envelope, geode_mpi.

Run as ``mpiexec -n 2 python benchmarks/large_path.py``. Each method is a ping-pong of one
array, timed with ``MPI.Wtime()`` after a barrier; the methods are interleaved in every repeat
and the ratios are paired within a repeat (see benchmarks/README.md). The raw variants rebuild
geode_mpi's protocol one step at a time, so the gap between two neighbouring columns is the cost
of one step:

- ``raw Send``: blocking ``Send``/``Recv`` into a preallocated buffer (the issue's baseline);
- ``matched``: ``Improbe`` on any tag, then ``Message.Irecv``, as geode_mpi receives a frame;
- ``+envelope``: the same plus a small second message per array, as geode_mpi's envelope;
- ``envelope first``: the small message first, then the array into a receive posted as the small
  one arrives, as geode_mpi sent to a rank over the network (``FRAMES_AFTER``) until leads;
- ``preposted``: the same, the small message received into a receive posted before it comes,
  as geode_mpi's standing receive takes a lead (transport/prepost.py);
- ``one message``: the small message and the array as one MPI message (a derived datatype of
  absolute addresses from ``MPI.BOTTOM``, the small part padded to a fixed size), received
  with ``Improbe`` then ``Message.Irecv`` into the same two places;
- ``geode``: ``Geode.send`` / ``Geode.receive``, the array released before the next receive;
- ``raw placed``: raw ``Send``/``Recv`` again, into a buffer placed as geode_mpi's receive pool
  places one (2 MiB-aligned, transparent huge pages, at the sender's offset within a page): how
  much of geode_mpi's speed comes from where it receives, which hand-written code can copy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import launch
import numpy as np
import reporting
from baseline import arrays
from common import MiB, environment
from launch import Scaled
from mpi4py import MPI
from timing import barrier_then_clock, rotated

from geode_mpi import Geode
from geode_mpi.transport.pool import BufferPool

TAG_DATA, TAG_ENV = 11, 12
HEAD_BYTES = 2048  # the small part of ``one message``
RAW_SEND = "raw Send"
SCALED: Scaled = {
    "repeats": (9, 3, "interleaved repeats"),
    "trips": (16, 4, "round trips per timed loop"),
}


def ratios_for(
    size: int, comm: MPI.Intracomm, geode: Geode, repeats: int, trips: int
) -> dict[str, Any]:
    """Time the methods on one array size, interleaved; return its JSON record."""
    rank, peer = comm.Get_rank(), 1 - comm.Get_rank()
    status = MPI.Status()
    data, out = arrays(size)
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

    def recv_envelope_first() -> None:
        while (message := comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)) is None:
            pass
        message.Recv(bytearray(status.Get_count(MPI.BYTE)))
        request = comm.Irecv([out, MPI.BYTE], status.Get_source(), TAG_DATA)
        while not request.Test():
            pass

    def recv_preposted(request: MPI.Request) -> None:
        while not request.Test():
            pass
        request = comm.Irecv([out, MPI.BYTE], peer, TAG_DATA)
        while not request.Test():
            pass

    def send_nonblocking(array: np.ndarray, with_envelope: bool, first: bool = False) -> None:
        requests = [comm.Isend(envelope, peer, TAG_ENV)] if first else []
        requests.append(comm.Isend([array, MPI.BYTE], peer, TAG_DATA))
        if with_envelope and not first:
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

    def envelope_first() -> None:
        if rank == 0:
            send_nonblocking(data, True, first=True)
            recv_envelope_first()
        else:
            recv_envelope_first()
            send_nonblocking(out, True, first=True)

    def preposted() -> None:
        # Posted as the trip begins: before the peer sends it, as a standing receive is.
        request = comm.Irecv(bytearray(len(envelope)), peer, TAG_ENV)
        if rank == 0:
            send_nonblocking(data, True, first=True)
            recv_preposted(request)
        else:
            recv_preposted(request)
            send_nonblocking(out, True, first=True)

    head = bytearray(HEAD_BYTES)

    def two_places(array: np.ndarray) -> MPI.Datatype:
        addresses = [MPI.Get_address(head), MPI.Get_address(array)]
        return MPI.BYTE.Create_hindexed([HEAD_BYTES, array.nbytes], addresses).Commit()

    def one_message() -> None:
        for step in (0, 1) if rank == 0 else (1, 0):
            if step == 0:
                datatype = two_places(data if rank == 0 else out)
                request = comm.Isend([MPI.BOTTOM, 1, datatype], peer, TAG_DATA)
            else:
                while (message := comm.Improbe(peer, TAG_DATA, status)) is None:
                    pass
                datatype = two_places(out)
                request = message.Irecv([MPI.BOTTOM, 1, datatype])
            while not request.Test():
                pass
            datatype.Free()

    def geode_trip() -> None:
        if rank == 0:
            geode.send(data, dest=geode.nodes[peer])
            geode.receive()  # released at once: the pool reuses its buffer
        else:
            got = geode.receive().data
            geode.send(got, dest=geode.nodes[peer])

    methods = {
        RAW_SEND: raw_into(out),
        "matched": matched(False),
        "+envelope": matched(True),
        "envelope first": envelope_first,
        "preposted": preposted,
        "one message": one_message,
        "geode": geode_trip,
        "raw placed": raw_into(placed),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(repeats + 1):  # the first repeat warms up and is dropped
        for name in rotated(list(methods), repeat):
            start = barrier_then_clock(comm, MPI.Wtime)
            for _ in range(trips):
                methods[name]()
            if repeat:
                times[name].append((MPI.Wtime() - start) / (2 * trips))
    base = times[RAW_SEND]
    return {
        "size": size,
        "median_us": {name: statistics.median(ts) * 1e6 for name, ts in times.items()},
        "repeats_us": {name: [t * 1e6 for t in ts] for name, ts in times.items()},
        # raw Send's time over the method's in the same repeat: the method's share of raw
        # Send's bandwidth (above 1.00 it is faster)
        "send_over": {
            name: statistics.median(b / t for b, t in zip(base, ts, strict=True))
            for name, ts in times.items()
            if name != RAW_SEND
        },
    }


def row(record: dict[str, Any]) -> str:
    """One line of the table: the size, raw Send's one-way latency, then the ratios."""
    cells = [f"{name} {ratio:.2f}" for name, ratio in record["send_over"].items()]
    raw = record["median_us"][RAW_SEND]
    return f"{record['size'] // MiB:3d} MiB  {raw:10.0f}    " + "   ".join(cells)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes", default=None, help="array sizes in MiB (default 1,4,16; quick 1,4)"
    )
    launch.scaled_options(parser, SCALED, "a smoke test of a few seconds")
    launch.json_option(parser, "large_path")
    args = launch.parse_scaled(parser, argv, SCALED)
    if args.sizes is None:
        args.sizes = "1,4" if args.quick else "1,4,16"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    world = MPI.COMM_WORLD
    if launch.ranks_refused(world, "large_path.py", 2, exactly=True):
        return 2
    geode = Geode()
    comm = world.Dup()
    rank = comm.Get_rank()
    began = reporting.started()
    env = environment(MPI)
    if rank == 0:
        print("size     raw Send us   then, as ratios raw Send / method (paired per repeat)")
    clock = time.perf_counter()
    sizes = []
    for text in args.sizes.split(","):
        record = ratios_for(int(float(text) * MiB), comm, geode, args.repeats, args.trips)
        sizes.append(record)
        if rank == 0:
            print(row(record), flush=True)
    elapsed = time.perf_counter() - clock
    geode.close()
    comm.Free()
    if rank != 0:
        return 0
    settings = {"sizes": [r["size"] for r in sizes], "repeats": args.repeats}
    settings |= {"trips": args.trips, "quick": args.quick}
    reporting.finish(args.json, "large_path", (began, elapsed, settings, env), {"sizes": sizes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
