"""The payload cache on a topic: a shared array published twice, beside raw Bcast of its bytes.

Run as ``mpiexec -n 4 python benchmarks/cache_topic.py`` (any number of ranks from 2: rank 0
publishes, one subscriber on each other rank). Each repeat shares a new array on rank 0 and
times, interleaved (rotated per repeat), four transfers from rank 0 to every other rank, each
closed by a barrier once every rank has it:

- ``raw Bcast``: ``Bcast`` of the array's bytes into a preallocated buffer;
- ``plain``: ``Topic.publish`` of an array that is not shared (what every publish cost before);
- ``first``: the publish of this repeat's shared array, which the member ranks do not hold yet
  (it moves in full, through the node's shared segment or down relays, and they keep it);
- ``second``: the same shared array again (a reference only).

It prints the medians, the ratios raw Bcast / method paired per repeat (above 1.00: faster
than raw Bcast), and the bytes each publish handed the transport per member rank
(`Geode.cache_stats`'s ``wire_bytes`` over the member ranks). The second publish must move
under 1 KiB per member rank; the script exits 1 if it did not. ``GEODE_SHARED_BYTES=0`` takes
the node's shared segment away (the first publish is then relayed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import cache
import launch
import numpy as np
import reporting
from common import MiB, environment
from launch import Scaled
from timing import paired_median

from geode_mpi import Geode, share

RAW = "raw Bcast"
METHODS = (RAW, "plain", "first", "second")
SCALED: Scaled = {"repeats": (15, 3, "interleaved repeats")}
MPI: Any = None  # mpi4py.MPI, imported by `main` once the launch settings are applied


def one_size(size: int, comm: Any, geode: Geode, topic: Any, repeats: int) -> dict[str, Any]:
    """Time the four transfers of one array size; return its JSON record."""
    rank, members = comm.Get_rank(), comm.Get_size() - 1
    data = np.random.default_rng(size).random(size // 8)
    out = np.empty_like(data)
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    moved: dict[str, list[int]] = {name: [] for name in METHODS[2:]}
    for repeat in range(repeats + 1):  # the first repeat warms up and is dropped
        shared = share(data + repeat)  # a new array each repeat: its first publish stores it

        def raw() -> None:
            comm.Bcast([data if rank == 0 else out, MPI.BYTE], 0)

        def publishing(array: np.ndarray[Any, Any]) -> Callable[[], None]:
            def publish() -> None:
                if rank == 0:
                    topic.publish(array, geode.node).wait(timeout=60)
                else:
                    got = geode.receive(geode.node, topic="mesh", timeout=60).data
                    assert got.nbytes == size

            return publish

        methods = {
            RAW: raw,
            "plain": publishing(data),
            "first": publishing(shared),
            "second": publishing(shared),
        }
        for name in cache.first_then_second(METHODS, repeat):
            elapsed, wire = cache.timed(comm, geode, methods[name], comm.Barrier)  # all have it
            if repeat:
                times[name].append(elapsed)
                if name in moved and rank == 0:
                    moved[name].append(wire // members)
    record: dict[str, Any] = {"size": size, "members": members}
    record["median_us"] = {name: statistics.median(ts) * 1e6 for name, ts in times.items()}
    record["repeats_us"] = {name: [t * 1e6 for t in ts] for name, ts in times.items()}
    # raw Bcast's time over the method's, paired per repeat (above 1.00: faster than raw)
    record["bcast_over"] = {name: paired_median(times[RAW], times[name]) for name in METHODS[1:]}
    record["moved_per_member"] = {name: max(v) if v else 0 for name, v in moved.items()}
    return record


def row(record: dict[str, Any]) -> str:
    """The size, each method's median time, the ratios, the bytes per member rank."""
    times = "  ".join(f"{record['median_us'][name]:9.0f}" for name in METHODS)
    ratios = "  ".join(f"{record['bcast_over'][name]:7.2f}" for name in METHODS[1:])
    moved = record["moved_per_member"]
    return f"{record['size'] // MiB:4d} MiB  {times}   {ratios}   {moved['second']:8d}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    launch.sizes_option(parser, "array sizes", "1Mi,16Mi", "16Mi")
    launch.scaled_options(parser, SCALED, "a smoke test of a few seconds")
    launch.json_option(parser, "cache_topic")
    args = launch.parse_scaled(parser, argv, SCALED)
    launch.fill_sizes(parser, args, [MiB, 16 * MiB], [16 * MiB])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    global MPI
    args = parse_args(argv)
    MPI = cache.MPI = launch.start_mpi("cache_topic.py", 2, suggest=4)
    if MPI is None:
        return 2
    sizes: list[int] = args.sizes
    geode = Geode(cache_bytes=4 * max(sizes))  # four arrays of the largest size per stream
    nodes = geode.nodes[: geode.size]
    topic = geode.topic("mesh", publishers=[nodes[0]], subscribers=nodes[1:])
    comm = MPI.COMM_WORLD.Dup()
    shown = comm.Get_rank() == 0
    began = reporting.started()
    env = environment(MPI)
    if shown:
        print(f"publish to {comm.Get_size() - 1} member ranks, us (medians):")
        heads = "  ".join(f"{name:>9}" for name in METHODS)
        ratios = "  ".join(f"{name:>7}" for name in METHODS[1:])
        print(f"    size  {heads}   {ratios}   bytes per member, second")
    clock = time.perf_counter()
    records = []
    for size in sizes:
        records.append(one_size(size, comm, geode, topic, args.repeats))
        if shown:
            print(row(records[-1]), flush=True)
    head = (began, time.perf_counter() - clock, {"sizes": sizes, "repeats": args.repeats}, env)
    geode.close()
    comm.Free()
    if shown:
        reporting.finish(args.json, "cache_topic", head, {"quick": args.quick, "sizes": records})
        return 0 if all(r["moved_per_member"]["second"] < 1024 for r in records) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
