"""Topic fan-out of a zero-copy array beside a copied publish and raw mpi4py Bcast, interleaved.

Run as ``mpiexec -n 4 python benchmarks/zero_copy.py`` (2 ranks or more, all on one node;
``--help`` for the options). Rank 0 publishes, every other rank subscribes. The loops, the
interleaving and the checks are fanout.py's; this adds the zero-copy methods.
``python benchmarks/zero_copy.py --embedded`` measures the embedded world instead (one
process, node0 publishing to three subscribers) beside one plain copy.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import launch
import numpy as np
import reporting
from baseline import arrays
from common import MiB, environment, size_label
from fanout import (
    GEODE,
    PUBLISHER,
    RAW_BCAST,
    TOPIC,
    Budget,
    Loop,
    Run,
    check_subscriber,
    geode_fanout,
    measure,
    raw_bcast,
)
from launch import Scaled
from reporting import Table
from timing import barrier_then_clock, paired, spread, summarise

from geode_mpi import Geode

ZERO_COPY = "zero-copy"  # a new zero_copy_array per publish; the data is the user's to write
ZERO_FILL = "zero-copy+fill"  # the same, with the data copied in (timed): the worst case
# Raw mpi4py doing what a copied publish does: np.copyto into an Allocate_shared window, then a
# 1-byte Send to each subscriber, which then holds a view: the floor of a copied publish.
RAW_SHARED = "raw copy+notice"
# The same two raw ways with subscribers that poll (Iprobe, yielding the core between polls
# after POLL_SPIN, as geode's receive waits) instead of blocking inside MPI as Bcast's do: the
# floor of any method whose subscribers are not already inside a collective when it starts.
RAW_SHARED_POLLED = "raw copy+notice, polled"
RAW_SENDS_POLLED = "raw Isend each, polled"  # the array to each subscriber; Recv into a buffer
RAW_IBCAST_POLLED = "raw Ibcast, polled"  # every rank in an Ibcast, waiting with Test
METHODS = (
    RAW_BCAST,
    GEODE,
    ZERO_COPY,
    ZERO_FILL,
    RAW_SHARED,
    RAW_SHARED_POLLED,
    RAW_SENDS_POLLED,
    RAW_IBCAST_POLLED,
)
NOTICE_TAG = 5
DATA_TAG = 6
POLL_SPIN = 50e-6  # seconds of pure polling before yielding between polls (geode's Backoff)
SCALED: Scaled = {
    "repeats": (7, 3, "repeats per size, each interleaving the methods in rounds"),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A topic publish of a Geode.zero_copy_array beside a publish of an "
        "ordinary array (copied once into the node's segment) and raw comm.Bcast: the time "
        "until every subscriber holds the array. mpiexec -n 4 python benchmarks/zero_copy.py",
    )
    launch.sizes_option(parser, "array sizes in bytes", "1Mi,4Mi,16Mi", "1Mi,4Mi")
    launch.scaled_options(parser, SCALED, "a smoke test: fewer sizes and repeats")
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="the embedded world: one process, no mpiexec (a tree without zero_copy_array "
        "measures its copied publish only)",
    )
    launch.json_option(parser, "zero_copy")
    args = launch.parse_scaled(parser, argv, SCALED)
    launch.fill_sizes(parser, args, (MiB, 4 * MiB, 16 * MiB), (MiB, 4 * MiB))
    return args


def zero_copy_fanout(
    run: Run, method: str, data: np.ndarray[Any, Any], unchecked: set[str], iters: int
) -> Any:
    """Publish a new zero-copy array each time on the copied publish's topic. Only the first
    fan-out of a size (the one checked: its method still in ``unchecked``) and every
    ``ZERO_FILL`` one fill it with ``data``; the others publish what the slot holds, as a job
    that computes into the array would. (Not every block of one fan-out: at 16 MiB, where a
    block is often one, the zero-copy column was the zero+fill one.)"""
    geode, topic, comm, wtime = run.geodes[GEODE], run.topics[GEODE], run.comm, run.wtime
    holding = run.holding[method]
    fill = method == ZERO_FILL or method in unchecked
    unchecked.discard(method)
    got: Any = None
    start = barrier_then_clock(comm, wtime)
    left = start
    if run.rank == 0:
        for _ in range(iters):
            array = geode.zero_copy_array(data.shape, data.dtype)
            if fill:
                np.copyto(array, data)
            topic.publish(array, source=PUBLISHER).wait()
            holding.append(wtime() - left)
            del array
            comm.Barrier()
            left = wtime()
    else:
        for _ in range(iters):
            got = None
            got = geode.receive(topic=TOPIC).data
            holding.append(wtime() - left)
            comm.Barrier()
            left = wtime()
    run.next_seq[GEODE] += iters
    return (left - start) / iters, got


def raw_shared(
    run: Run, window: np.ndarray[Any, Any], data: np.ndarray[Any, Any], iters: int
) -> tuple[float, Any]:
    """`RAW_SHARED`: rank 0 copies ``data`` into its shared window (``window``, every rank's
    view of it) and sends each subscriber a byte; a subscriber holds the window's view."""
    from mpi4py import MPI

    comm, wtime, holding = run.comm, run.wtime, run.holding[RAW_SHARED]
    part = window[: data.nbytes]
    note = bytearray(1)
    start = barrier_then_clock(comm, wtime)
    left = start
    for _ in range(iters):
        if run.rank == 0:
            np.copyto(part, data)  # (x86: ordered before the Isend, no Win.Sync needed)
            notices = [comm.Isend(note, dest, NOTICE_TAG) for dest in range(1, run.size)]
            MPI.Request.Waitall(notices)
        else:
            comm.Recv(note, 0, NOTICE_TAG)
        holding.append(wtime() - left)
        comm.Barrier()
        left = wtime()
    return (left - start) / iters, part


def poll(ready: Callable[[], Any]) -> None:
    """Poll ``ready()`` until true: spin `POLL_SPIN`, then yield the core between polls."""
    until = time.perf_counter() + POLL_SPIN
    while not ready():
        if time.perf_counter() > until:
            os.sched_yield()


def raw_polled(
    run: Run,
    method: str,
    window: np.ndarray[Any, Any],
    data: np.ndarray[Any, Any],
    out: np.ndarray[Any, Any],
    iters: int,
) -> tuple[float, Any]:
    """The polled raw methods (`RAW_SHARED_POLLED`, `RAW_SENDS_POLLED`, `RAW_IBCAST_POLLED`):
    rank 0 as in the blocking ones; a subscriber polls until its notice, array or broadcast
    is there, then takes it."""
    from mpi4py import MPI

    comm, wtime, holding = run.comm, run.wtime, run.holding[method]
    part = window[: data.nbytes]
    note = bytearray(1)
    root = run.rank == 0
    got = part if method == RAW_SHARED_POLLED else out
    buffer = [data if root else out, MPI.BYTE]
    start = barrier_then_clock(comm, wtime)
    left = start
    for _ in range(iters):
        if method == RAW_IBCAST_POLLED:
            request = comm.Ibcast(buffer, root=0)
            poll(request.Test)
        elif root:
            if method == RAW_SHARED_POLLED:
                np.copyto(part, data)
                sends = [comm.Isend(note, dest, NOTICE_TAG) for dest in range(1, run.size)]
            else:
                sends = [comm.Isend(buffer, dest, DATA_TAG) for dest in range(1, run.size)]
            MPI.Request.Waitall(sends)
        elif method == RAW_SHARED_POLLED:
            poll(partial(comm.Iprobe, 0, NOTICE_TAG))
            comm.Recv(note, 0, NOTICE_TAG)
        else:
            poll(partial(comm.Iprobe, 0, DATA_TAG))
            comm.Recv(buffer, 0, DATA_TAG)
        holding.append(wtime() - left)
        comm.Barrier()
        left = wtime()
    return (left - start) / iters, got


def shared_window(comm: Any, nbytes: int) -> tuple[Any, np.ndarray[Any, Any]]:
    """An MPI-3 shared window of ``nbytes`` on rank 0 (every rank on one node) and every
    rank's uint8 view of it."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    if node.Get_size() != comm.Get_size():
        raise SystemExit("zero_copy.py: every rank must be on one node")
    win = MPI.Win.Allocate_shared(nbytes if node.Get_rank() == 0 else 0, 1, comm=node)
    node.Free()
    return win, np.frombuffer(win.Shared_query(0)[0], np.uint8)


def bench_array(
    run: Run, size: int, budget: Budget, repeats: int, window: np.ndarray[Any, Any]
) -> dict[str, Any]:
    data, out = arrays(size)
    unchecked = {ZERO_COPY}
    loops: dict[str, Loop] = {
        RAW_BCAST: partial(raw_bcast, run, data, out),
        GEODE: partial(geode_fanout, run, GEODE, data),
        ZERO_COPY: partial(zero_copy_fanout, run, ZERO_COPY, data, unchecked),
        ZERO_FILL: partial(zero_copy_fanout, run, ZERO_FILL, data, unchecked),
        RAW_SHARED: partial(raw_shared, run, window, data),
    }
    for method in (RAW_SHARED_POLLED, RAW_SENDS_POLLED, RAW_IBCAST_POLLED):
        own = np.zeros_like(out)  # (each its own: a check must see what its method wrote)
        loops[method] = partial(raw_polled, run, method, window, data, own)
    for times in run.holding.values():
        times.clear()
    iterations, times, rounds = measure(
        run, loops, budget, repeats, partial(check_subscriber, run, data)
    )
    record: dict[str, Any] = {"size": size, "rounds": rounds}
    mine = {method: statistics.median(run.holding[method]) * 1e6 for method in METHODS}
    record["per_rank_us"] = run.comm.allgather(mine)  # rank 0: its publish; others: holding
    record["methods"] = summarise(iterations, times)
    raw = record["methods"][RAW_BCAST]["repeats_us"]
    for method in METHODS[1:]:
        ratios = paired(record["methods"][method]["repeats_us"], raw)
        record[f"{method}/Bcast"] = {"median": statistics.median(ratios), **spread(ratios)}
    return record


LABELS = {
    RAW_BCAST: "Bcast",
    GEODE: "copied",
    ZERO_COPY: "zero",
    ZERO_FILL: "zero+fill",
    RAW_SHARED: "raw copy",
    RAW_SHARED_POLLED: "copy,poll",
    RAW_SENDS_POLLED: "Isend,poll",
    RAW_IBCAST_POLLED: "Ibcast,poll",
}


def table(records: list[dict[str, Any]]) -> list[str]:
    columns = [("size", 9)] + [(f"{LABELS[method]} us", 15) for method in METHODS]
    columns += [(f"{LABELS[method]}/Bcast", 20) for method in METHODS[1:]]
    out = Table(tuple(columns))
    lines = out.head()
    for rec in records:
        cells = [size_label(rec["size"])]
        cells += [f"{rec['methods'][method]['median_us']:.1f}" for method in METHODS]
        cells += [
            "{median:.3f} ({q1:.2f}-{q3:.2f})".format(**rec[f"{method}/Bcast"])
            for method in METHODS[1:]
        ]
        lines.append(out.row(cells))
    lines.append(out.rule)
    for rec in records:
        ranks = rec["per_rank_us"]
        lines.append(
            f"{size_label(rec['size']):>9} publisher's publish / slowest subscriber holding, us: "
            + ", ".join(
                f"{LABELS[method]} {ranks[0][method]:.0f} / "
                f"{max(rank[method] for rank in ranks[1:]):.0f}"
                for method in METHODS
            )
        )
    lines += [
        "us: time per fan-out, from a barrier until every subscriber holds the array, plus the "
        "barrier that ends it; ratios paired per repeat (median, quartiles); publish / holding: "
        "medians from leaving the barrier (Bcast: the root's Bcast)",
        "copied: publish of an ordinary array (copied once into the node's segment); zero: "
        "publish of a new Geode.zero_copy_array (no copy; filling it is the job's own work, "
        "not timed); zero+fill: the same with np.copyto of the data timed; raw copy: raw "
        "mpi4py, np.copyto into an Allocate_shared window and a 1-byte Send to each subscriber "
        "(the floor of a copied publish); ',poll': the raw ways with subscribers polling "
        "(Iprobe or Test, yielding after 50 us) instead of blocking in MPI; Isend: the array "
        "sent to each subscriber; Ibcast: every rank in Ibcast, waiting with Test",
    ]
    return lines


def copies(data: np.ndarray[Any, Any], count: int) -> None:
    _ = [data.copy() for _ in range(count)]


def publish_embedded(geode: Geode, topic: Any, data: np.ndarray[Any, Any], zero: bool) -> None:
    """Publish ``data``, or if ``zero`` a new zero-copy array of its shape (filling it is the
    job's own work: not done here), and receive it on node1..node3."""
    array = geode.zero_copy_array(data.shape) if zero else data
    topic.publish(array, source=PUBLISHER)
    held = [geode.receive(node, timeout=10).data for node in geode.nodes[1:]]
    assert all(got.shape == data.shape for got in held)


def embedded(args: argparse.Namespace) -> int:
    """Per size, the median time of a publish from node0 until node1..node3 hold the array,
    beside one plain copy (``data.copy()``: what a sealed publish costs at least)."""
    geode = Geode(acks=False)
    topic = geode.topic(TOPIC, publishers=[PUBLISHER], subscribers=geode.nodes[1:])
    for size in args.sizes:
        data = np.arange(size // 8, dtype=np.float64)
        methods = {
            "1 copy": partial(copies, data, 1),
            "publish": partial(publish_embedded, geode, topic, data, False),
        }
        if hasattr(geode, "zero_copy_array"):
            methods["zero-copy publish"] = partial(publish_embedded, geode, topic, data, True)
        times: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.repeats * 10):
            for name, method in methods.items():
                began = time.perf_counter()
                method()
                times[name].append(time.perf_counter() - began)
        print(
            f"{size_label(size):>9} "
            + ", ".join(
                f"{name} {statistics.median(spent) * 1e6:.0f} us" for name, spent in times.items()
            ),
            flush=True,
        )
    geode.close()
    print(f"embedded world, {args.repeats * 10} times each, interleaved; medians")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.embedded:
        return embedded(args)
    MPI = launch.start_mpi("zero_copy.py", 2, why=" (a publisher and a subscriber)", suggest=4)
    if MPI is None:
        return 2
    geode = Geode(acks=False)  # collective; from here an exception on one rank aborts the job
    topic = geode.topic(TOPIC, publishers=[PUBLISHER], subscribers=geode.nodes[1:])
    comm = MPI.COMM_WORLD.Dup()
    holding: dict[str, list[float]] = {method: [] for method in METHODS}
    run = Run(comm, comm.Get_rank(), comm.Get_size(), MPI.Wtime, {GEODE: geode}, {GEODE: topic}, 1)
    run.holding = holding
    began = reporting.started()
    env = environment(MPI)
    if run.rank == 0:
        title = (
            f"geode_mpi {env['geode_mpi']} zero-copy fan-out, {reporting.ranks_on_cores(env)}: "
            f"rank 0 publishes, {env['ranks'] - 1} subscribe; median of {args.repeats} repeats"
        )
        print("\n".join(reporting.header(env, title, args.quick)), flush=True)
    clock = time.perf_counter()
    budget = Budget.for_run(args.quick)
    win, window = shared_window(comm, max(args.sizes))
    records = [bench_array(run, size, budget, args.repeats, window) for size in args.sizes]
    elapsed = time.perf_counter() - clock
    del window
    win.Free()
    geode.close()
    comm.Free()
    if run.rank != 0:
        return 0
    print("\n".join(table(records)))
    settings = {"sizes": args.sizes, "repeats": args.repeats, "quick": args.quick}
    settings["budget"] = dataclasses.asdict(budget)
    reporting.finish(args.json, "zero_copy", (began, elapsed, settings, env), {"arrays": records})
    return 0


if __name__ == "__main__":
    sys.exit(main())
