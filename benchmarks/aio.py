"""asyncio: an awaited ping-pong beside a blocking one and raw mpi4py, and an idle await's CPU.

Run as ``mpiexec -n 2 python benchmarks/aio.py`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import launch
from common import environment
from launch import Scaled
from reporting import Table, finish, header, ranks_on_cores, started
from timing import barrier_then_clock, paired_median, rotated, summarise

from geode_mpi import Geode, ReceiveTimeout

SCALED: Scaled = {
    "iterations": (2000, 200, "round trips per timed loop"),
    "repeats": (11, 3, "timed loops per method; the median is reported"),
    "idle": (2.0, 0.5, "seconds of waiting for nothing, blocking and awaited"),
}
RAW = "raw pickle"
BLOCKING = "geode receive"
AWAITED = "geode areceive"
METHODS = (RAW, BLOCKING, AWAITED)
PAYLOAD = {"step": 1, "value": 0.5}  # a small Python object (pickled either way)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="One-way latency of a small message: raw pickled send/recv, geode_mpi's "
        "blocking receive and its awaited areceive (asyncio), interleaved; then the CPU time "
        "an idle receive costs, blocking and awaited. Run with 2 ranks.",
    )
    launch.scaled_options(parser, SCALED, "a smoke test: a few seconds")
    launch.json_option(parser, "aio")
    return launch.parse_scaled(parser, argv, SCALED)


def raw(comm: Any, rank: int, iters: int, wtime: Callable[[], float]) -> float:
    peer = 1 - rank
    start = barrier_then_clock(comm, wtime)
    for _ in range(iters):
        if rank == 0:
            comm.send(PAYLOAD, peer)
            comm.recv(source=peer)
        else:
            comm.send(comm.recv(source=peer), peer)
    return (wtime() - start) / (2 * iters)


def blocking(geode: Geode, comm: Any, iters: int, wtime: Callable[[], float]) -> float:
    peer = geode.nodes[1 - geode.rank]
    start = barrier_then_clock(comm, wtime)
    for _ in range(iters):
        if geode.rank == 0:
            geode.send(PAYLOAD, dest=peer)
            geode.receive()
        else:
            geode.send(geode.receive().data, dest=peer)
    return (wtime() - start) / (2 * iters)


def awaited(geode: Geode, comm: Any, iters: int, wtime: Callable[[], float]) -> float:
    """The same loop in a coroutine: ``await asend()`` and ``await areceive()`` (the event
    loop is made before the clock starts)."""
    peer = geode.nodes[1 - geode.rank]

    async def loop() -> float:
        start = barrier_then_clock(comm, wtime)
        for _ in range(iters):
            if geode.rank == 0:
                await geode.asend(PAYLOAD, dest=peer)
                await geode.areceive()
            else:
                await geode.asend((await geode.areceive()).data, dest=peer)
        return (wtime() - start) / (2 * iters)

    return asyncio.run(loop())


def idle_cpu(geode: Geode, comm: Any, seconds: float) -> dict[str, float]:
    """CPU seconds per wall second of a receive that gets nothing for ``seconds``."""
    out = {}
    comm.Barrier()
    wall, cpu = time.monotonic(), time.process_time()
    with contextlib.suppress(ReceiveTimeout):
        geode.receive(timeout=seconds)
    out["blocking"] = (time.process_time() - cpu) / (time.monotonic() - wall)

    async def wait() -> None:
        with contextlib.suppress(ReceiveTimeout):
            await geode.areceive(timeout=seconds)

    comm.Barrier()
    wall, cpu = time.monotonic(), time.process_time()
    asyncio.run(wait())
    out["awaited"] = (time.process_time() - cpu) / (time.monotonic() - wall)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp, began = started(), time.monotonic()
    mpi = launch.start_mpi("aio.py", 2, exactly=True)
    if mpi is None:
        return 2
    comm = mpi.COMM_WORLD.Dup()
    rank, wtime = comm.Get_rank(), mpi.Wtime
    env = environment(mpi)
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    with Geode() as geode:
        loops = {
            RAW: lambda: raw(comm, rank, args.iterations, wtime),
            BLOCKING: lambda: blocking(geode, comm, args.iterations, wtime),
            AWAITED: lambda: awaited(geode, comm, args.iterations, wtime),
        }
        for name in METHODS:  # warm-up, untimed
            loops[name]()
        for turn in range(args.repeats):
            for name in rotated(METHODS, turn):
                times[name].append(loops[name]())
        cpu = idle_cpu(geode, comm, args.idle)
        cpus = comm.gather(cpu)
    comm.Free()
    if rank != 0:
        return 0
    lines = header(env, "asyncio: awaited receive beside blocking receive", args.quick)
    lines.append(f"{ranks_on_cores(env)}; {args.iterations} round trips x {args.repeats}")
    table = Table([("method", 16), ("one way us", 12), ("/ raw", 8), ("/ receive", 11)])
    lines += table.head()
    for name in METHODS:
        median = statistics.median(times[name]) * 1e6
        over_raw = paired_median(times[name], times[RAW])
        over_blocking = paired_median(times[name], times[BLOCKING])
        lines.append(table.row([name, f"{median:.1f}", f"{over_raw:.2f}", f"{over_blocking:.2f}"]))
    lines.append(f"idle receive for {args.idle:g} s, CPU seconds per second (rank 0, rank 1):")
    for kind in ("blocking", "awaited"):
        lines.append(f"  {kind:>9}: " + ", ".join(f"{c[kind]:.3f}" for c in cpus))
    print("\n".join(lines))
    settings = {"iterations": args.iterations, "repeats": args.repeats, "idle": args.idle}
    numbers = {
        "latency": summarise({name: [args.iterations] * args.repeats for name in METHODS}, times),
        "ratios": {
            "awaited_over_blocking": paired_median(times[AWAITED], times[BLOCKING]),
            "awaited_over_raw": paired_median(times[AWAITED], times[RAW]),
            "blocking_over_raw": paired_median(times[BLOCKING], times[RAW]),
        },
        "idle_cpu_per_second": cpus,
    }
    finish(args.json, "aio", (stamp, time.monotonic() - began, settings, env), numbers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
