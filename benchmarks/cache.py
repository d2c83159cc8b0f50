"""The payload cache: the same shared array sent twice, beside raw Send of its bytes.

Run as ``mpiexec -n 2 python benchmarks/cache.py``. Each repeat shares a new array on rank 0
and times, interleaved (rotated per repeat), four one-way sends to rank 1, each closed by a
1-byte reply so that rank 0's clock sees the arrival:

- ``raw Send``: blocking ``Send`` of the array's bytes into a preallocated buffer;
- ``plain``: ``Geode.send`` of an array that is not shared (what every send cost before);
- ``first``: ``Geode.send`` of this repeat's shared array, which the receiver does not hold yet
  (it moves in full and the receiver keeps it);
- ``second``: the same shared array again (a reference only).

It prints the medians, the ratios raw Send / method paired per repeat (above 1.00: faster than
raw Send), and the bytes each geode send handed to the transport (`Geode.cache_stats`'s
``wire_bytes``; the MPI envelope adds 16 bytes and 8 per frame). The second send must move
under 1 KiB; the script exits 1 if it did not.
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
from common import MiB, environment
from launch import Scaled
from timing import barrier_then_clock, paired_median, rotated

from geode_mpi import Geode, share

TAG = 21
RAW_SEND = "raw Send"
METHODS = (RAW_SEND, "plain", "first", "second")
SCALED: Scaled = {"repeats": (15, 3, "interleaved repeats")}
MPI: Any = None  # mpi4py.MPI, imported by `main` once the launch settings are applied


def first_then_second(methods: Sequence[str], repeat: int) -> list[str]:
    """``methods`` in this repeat's turn (`rotated`), "second" moved right after "first": the
    second transfer of a shared array follows its first."""
    order = rotated(list(methods), repeat)
    if order.index("second") < order.index("first"):
        order.remove("second")
        order.insert(order.index("first") + 1, "second")
    return order


def timed(
    comm: Any, geode: Geode, method: Callable[[], None], closing: Callable[[], None] | None = None
) -> tuple[float, int]:
    """Run ``method`` from a barrier (then ``closing``): its seconds, and what geode's cache
    handed the transport meanwhile."""
    before = geode.cache_stats().wire_bytes
    start = barrier_then_clock(comm, MPI.Wtime)
    method()
    if closing is not None:
        closing()
    return MPI.Wtime() - start, geode.cache_stats().wire_bytes - before


def one_size(size: int, comm: Any, geode: Geode, repeats: int) -> dict[str, Any]:
    """Time the four sends of one array size; return its JSON record."""
    rank = comm.Get_rank()
    data = np.random.default_rng(size).random(size // 8)
    out = np.empty_like(data)
    tick = np.zeros(1, np.uint8)
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    moved: dict[str, list[int]] = {name: [] for name in METHODS[1:]}
    for repeat in range(repeats + 1):  # the first repeat warms up and is dropped
        shared = share(data + repeat)  # a new array each repeat: its first send is a store

        def raw() -> None:
            if rank == 0:
                comm.Send([data, MPI.BYTE], 1, TAG)
                comm.Recv(tick, 1, TAG)
            else:
                comm.Recv([out, MPI.BYTE], 0, TAG)
                comm.Send(tick, 0, TAG)

        def through_geode(array: np.ndarray[Any, Any]) -> Callable[[], None]:
            def trip() -> None:
                if rank == 0:
                    geode.send(array, geode.node, geode.nodes[1])
                    geode.receive(geode.node, timeout=60)
                else:
                    got = geode.receive(geode.node, timeout=60).data
                    assert got.nbytes == size
                    geode.send(b"", geode.node, geode.nodes[0])

            return trip

        methods = {
            RAW_SEND: raw,
            "plain": through_geode(data),
            "first": through_geode(shared),
            "second": through_geode(shared),
        }
        for name in first_then_second(METHODS, repeat):
            elapsed, wire = timed(comm, geode, methods[name])
            if repeat:
                times[name].append(elapsed)
                if name != RAW_SEND and rank == 0:
                    moved[name].append(wire if wire else size)  # plain: not counted there
    record: dict[str, Any] = {"size": size}
    record["median_us"] = {name: statistics.median(ts) * 1e6 for name, ts in times.items()}
    record["repeats_us"] = {name: [t * 1e6 for t in ts] for name, ts in times.items()}
    # raw Send's time over the method's, paired per repeat (above 1.00: faster than raw Send)
    record["send_over"] = {name: paired_median(times[RAW_SEND], times[name]) for name in moved}
    record["moved_bytes"] = {name: max(values) if values else 0 for name, values in moved.items()}
    return record


def row(record: dict[str, Any]) -> str:
    """The size, each method's median one-way time, the ratios, the bytes moved."""
    times = "  ".join(f"{record['median_us'][name]:9.0f}" for name in METHODS)
    ratios = "  ".join(f"{record['send_over'][name]:7.2f}" for name in METHODS[1:])
    moved = record["moved_bytes"]["second"]
    return f"{record['size'] // MiB:4d} MiB  {times}   {ratios}   {moved:8d}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    launch.sizes_option(parser, "array sizes", "1Mi,16Mi,64Mi", "1Mi,16Mi")
    launch.scaled_options(parser, SCALED, "a smoke test of a few seconds")
    launch.json_option(parser, "cache")
    args = launch.parse_scaled(parser, argv, SCALED)
    launch.fill_sizes(parser, args, [MiB, 16 * MiB, 64 * MiB], [MiB, 16 * MiB])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    global MPI
    args = parse_args(argv)
    MPI = launch.start_mpi("cache.py", 2, exactly=True)
    if MPI is None:
        return 2
    sizes: list[int] = args.sizes
    geode = Geode(cache_bytes=4 * max(sizes))  # four arrays of the largest size per pair
    comm = MPI.COMM_WORLD.Dup()
    rank = comm.Get_rank()
    began = reporting.started()
    env = environment(MPI)
    if rank == 0:
        print("send + reply, us (medians):" + " " * 4 + "ratios raw Send / method:   second send")
        heads = "  ".join(f"{name:>9}" for name in METHODS)
        print(f"    size  {heads}   {'plain':>7}  {'first':>7}  {'second':>7}   bytes")
    clock = time.perf_counter()
    shown = rank == 0
    records = [shown_row(one_size(size, comm, geode, args.repeats), shown) for size in sizes]
    head = (began, time.perf_counter() - clock, {"sizes": sizes, "repeats": args.repeats}, env)
    geode.close()
    comm.Free()
    if shown:
        reporting.finish(args.json, "cache", head, {"quick": args.quick, "sizes": records})
    return 0 if all(r["moved_bytes"]["second"] < 1024 for r in records) else 1


def shown_row(record: dict[str, Any], shown: bool) -> dict[str, Any]:
    """``record``, printed as a row of the table first if ``shown`` (rank 0)."""
    if shown:
        print(row(record), flush=True)
    return record


if __name__ == "__main__":
    sys.exit(main())
