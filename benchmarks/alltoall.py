"""All-to-all of arrays: geode_mpi (acks on and off) beside raw mpi4py, interleaved in one run.

Every rank sends one array of S bytes to every other rank and receives P-1. Run as
``mpiexec -n P python benchmarks/alltoall.py`` (``--help`` for the options); with more ranks
than cores geode's launch settings turn MPICH's single-copy path off for every method alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import launch
import numpy as np
import reporting
from common import KiB, MiB, environment, size_label
from launch import Scaled
from reporting import Table
from timing import barrier_then_clock, paired_median, rotated, slowest

from geode_mpi import Geode

DEFAULT_SIZES = (KiB, 64 * KiB, MiB)
QUICK_SIZES = (KiB, MiB)
SCALED: Scaled = {
    "repeats": (9, 3, "timed loops per method and size; the median is reported"),
    "rounds": (1.0, 0.2, "scales the all-to-all rounds in each loop"),
}
# Rounds per timed loop at each size (before --rounds scales them): about 10-50 ms a loop at
# 2 ranks, longer oversubscribed.
ROUNDS = {KiB: 200, 64 * KiB: 40, MiB: 8}

RAW_BUFFER = "raw Isend/Irecv"
RAW_PICKLE = "raw isend/irecv"
GEODE = "geode"
GEODE_ACK = "geode ack"
METHODS = (RAW_BUFFER, RAW_PICKLE, GEODE, GEODE_ACK)
PICKLE_SLACK = 4 * KiB  # room in a pickled irecv's buffer for the pickle's own bytes


@dataclasses.dataclass
class World:
    """This rank, its peers, the arrays it sends and receives into, and a Geode."""

    comm: Any
    geode: Geode
    rank: int
    size: int
    wtime: Callable[[], float]
    mpi: Any  # the MPI module (its Request.Waitall)

    @property
    def peers(self) -> list[int]:
        """The other ranks, starting after this one (so that no rank sends to rank 0 first)."""
        return [(self.rank + k) % self.size for k in range(1, self.size)]


def payload(rank: int, size: int) -> np.ndarray[Any, Any]:
    """The array ``rank`` sends to everyone: its bytes say whose it is."""
    return (np.arange(size, dtype=np.uint32) % 251 + rank).astype(np.uint8)


def raw_buffer(world: World, data: np.ndarray[Any, Any], rounds: int) -> dict[int, Any]:
    comm, peers = world.comm, world.peers
    out = {peer: np.empty_like(data) for peer in peers}
    for _ in range(rounds):
        requests = [comm.Irecv(out[peer], peer, 11) for peer in peers]
        requests += [comm.Isend(data, peer, 11) for peer in peers]
        world.mpi.Request.Waitall(requests)
    return out


def raw_pickle(world: World, data: np.ndarray[Any, Any], rounds: int) -> dict[int, Any]:
    comm, peers = world.comm, world.peers
    buffers = {peer: bytearray(data.nbytes + PICKLE_SLACK) for peer in peers}
    got: dict[int, Any] = {}
    for _ in range(rounds):
        receives = [comm.irecv(buffers[peer], peer, 12) for peer in peers]
        sends = [comm.isend(data, peer, 12) for peer in peers]
        got = dict(zip(peers, world.mpi.Request.waitall(receives), strict=True))
        world.mpi.Request.waitall(sends)
    return got


def geode_loop(world: World, data: np.ndarray[Any, Any], rounds: int, ack: bool) -> dict[int, Any]:
    """isend to every other node, receive one from each (by source, as raw Irecv: a peer a
    round ahead must not stand in for a slow one), then wait for the sends (their acks)."""
    geode, nodes = world.geode, world.geode.nodes
    dests = [nodes[peer] for peer in world.peers]
    got: dict[int, Any] = {}
    for _ in range(rounds):
        got = {}  # (the last round's arrays go back to the receive pool)
        handles = [geode.isend(data, dest=dest, ack=ack) for dest in dests]
        for peer, node in zip(world.peers, dests, strict=True):
            got[peer] = geode.receive(source=node, timeout=60).data
        for handle in handles:
            handle.wait(timeout=60)
    return got


def run_method(world: World, method: str, data: np.ndarray[Any, Any], rounds: int) -> float:
    """One timed loop: seconds per all-to-all, the slowest rank's; then check what arrived."""
    start = barrier_then_clock(world.comm, world.wtime)
    if method == RAW_BUFFER:
        got = raw_buffer(world, data, rounds)
    elif method == RAW_PICKLE:
        got = raw_pickle(world, data, rounds)
    else:
        got = geode_loop(world, data, rounds, method == GEODE_ACK)
    seconds = slowest(world.comm, world.wtime() - start) / rounds
    for peer in world.peers:  # after the clock: checking is not timed
        want = payload(peer, data.nbytes)
        array = got.get(peer)
        if not (isinstance(array, np.ndarray) and np.array_equal(array, want)):
            raise RuntimeError(
                f"rank {world.rank}: {method} of {data.nbytes} bytes received the wrong data "
                f"from rank {peer}"
            )
    return seconds


def bench_size(world: World, size: int, args: argparse.Namespace) -> dict[str, Any]:
    data = payload(world.rank, size)
    rounds = max(1, round(ROUNDS.get(size, max(1, 8 * MiB // size)) * args.rounds))
    for method in METHODS:  # a warm-up loop each: pools, lanes, first touch
        run_method(world, method, data, 1)
    times: dict[str, list[float]] = {method: [] for method in METHODS}
    for turn in range(args.repeats):
        for method in rotated(METHODS, turn):
            times[method].append(run_method(world, method, data, rounds))
    medians = {method: statistics.median(values) * 1e6 for method, values in times.items()}
    ratios = {
        f"{mine} / {RAW_BUFFER}": paired_median(times[mine], times[RAW_BUFFER])
        for mine in (GEODE, GEODE_ACK, RAW_PICKLE)
    }
    ratios[f"{GEODE} / {RAW_PICKLE}"] = paired_median(times[GEODE], times[RAW_PICKLE])
    ratios[f"{GEODE_ACK} / {GEODE}"] = paired_median(times[GEODE_ACK], times[GEODE])
    return {
        "size": size,
        "rounds": rounds,
        "repeats_us": {method: [t * 1e6 for t in values] for method, values in times.items()},
        "median_us": medians,
        "ratios": ratios,
    }


def table(records: list[dict[str, Any]]) -> list[str]:
    columns = [("size", 9), *((f"{m} us", 18) for m in METHODS)]
    columns += [("geode/raw", 11), ("ack/raw", 9), ("pickle/raw", 12)]
    out = Table(columns)
    lines = out.head()
    for record in records:
        ratios = record["ratios"]
        cells = [size_label(record["size"])]
        cells += [f"{record['median_us'][m]:.1f}" for m in METHODS]
        cells += [f"{ratios[f'{name} / {RAW_BUFFER}']:.2f}" for name in (GEODE, GEODE_ACK)]
        cells.append(f"{ratios[f'{RAW_PICKLE} / {RAW_BUFFER}']:.2f}")
        lines.append(out.row(cells))
    lines.append(
        "time per all-to-all (slowest rank, median); ratios: paired medians over raw Isend/Irecv"
    )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    launch.sizes_option(parser, "array sizes", "1Ki,64Ki,1Mi", "1Ki,1Mi")
    launch.json_option(parser, "alltoall")
    launch.scaled_options(parser, SCALED, "fewer repeats and rounds: a smoke test")
    args = launch.parse_scaled(parser, argv, SCALED)
    launch.fill_sizes(parser, args, DEFAULT_SIZES, QUICK_SIZES)
    if args.rounds <= 0:
        parser.error(f"--rounds must be > 0, got {args.rounds}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mpi = launch.start_mpi("alltoall.py", 2)
    if mpi is None:
        return 2
    geode = Geode()  # collective; from here an exception on one rank aborts the job
    comm = mpi.COMM_WORLD.Dup()
    world = World(comm, geode, comm.Get_rank(), comm.Get_size(), mpi.Wtime, mpi)
    began, clock, env = reporting.started(), time.perf_counter(), environment(mpi)
    if world.rank == 0:
        title = (
            f"geode_mpi {env['geode_mpi']} all-to-all, {reporting.ranks_on_cores(env)}, "
            f"median of {args.repeats} interleaved repeats"
        )
        print("\n".join(reporting.header(env, title, args.quick)), flush=True)
    records = [bench_size(world, size, args) for size in args.sizes]
    elapsed = time.perf_counter() - clock
    geode.close()
    comm.Free()
    if world.rank != 0:
        return 0
    print("\n".join(table(records)))
    settings = {"sizes": args.sizes, "repeats": args.repeats, "rounds": args.rounds}
    settings["quick"] = args.quick
    reporting.finish(args.json, "alltoall", (began, elapsed, settings, env), {"arrays": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
