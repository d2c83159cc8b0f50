"""Topic fan-out of the shapes a scientist varies, each beside raw ``Bcast`` of its bytes.

Run as ``mpiexec -n 4 python benchmarks/fanout_shapes.py`` (2 ranks or more). Issue 17's
target (16 MiB to the other ranks within 0.5x raw ``Bcast``'s time) was measured on one
workload: a contiguous ``uint8`` array from rank 0 to every other rank. Here the same loop
(fanout.py's: one fan-out, then a barrier of every rank, methods interleaved in rounds,
paired ratios) runs for other sizes, dtypes, a strided array, the array inside a dict and
inside a Message subclass, subscribers that keep their last messages, a topic of a subset of
the ranks and a publisher that is not rank 0. Raw ``Bcast`` always moves the array's bytes
from the same root to the same ranks into a preallocated buffer.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import launch
import numpy as np
import reporting
from common import MiB, environment, parse_size, size_label
from fanout import Budget, Loop, Run, measure
from reporting import Table
from timing import barrier_then_clock, check_array, paired, spread, summarise

from geode_mpi import Geode, Message

if TYPE_CHECKING:
    from geode_mpi.core.topics import Topic

RAW = "raw Bcast"
GEODE = "geode"
TARGET_MAX = 0.5  # issue 17: at most this multiple of raw Bcast's time
KEEP = 4  # the "keep" workload: each subscriber holds its last KEEP messages
SCALED: launch.Scaled = {
    "repeats": (7, 3, "repeats per workload; the median of the paired ratios is reported"),
}


class Field(Message):
    """A user's Message subclass that carries the array in a dict."""


@dataclasses.dataclass(frozen=True)
class Shape:
    """One workload: the topic it runs on, the array and what is published around it."""

    name: str
    topic: str
    dtype: str = "uint8"
    size: int = 16 * MiB
    strided: bool = False  # every other element of an array twice the size
    wrap: str = ""  # "", "dict" or "message"
    keep: int = 0  # messages each subscriber keeps (read-only views) while receiving more

    def array(self) -> np.ndarray[Any, Any]:
        dtype = np.dtype(self.dtype)
        count = self.size // dtype.itemsize * (2 if self.strided else 1)
        rng = np.random.default_rng(self.size)
        base = rng.integers(0, 100, count).astype(dtype)
        return base[::2] if self.strided else base

    def payload(self, data: np.ndarray[Any, Any]) -> Any:
        if self.wrap == "dict":
            return {"step": 1, "field": data}
        if self.wrap == "message":
            return Field({"step": 1, "field": data})
        return data


def unwrap(got: Any) -> Any:
    """The array in a received Message's data (bare, in a dict, or in a Field's dict)."""
    return got["field"] if isinstance(got, dict) else got


# Topics: name -> (publisher rank, subscriber ranks), given the world size.
def topic_ranks(size: int) -> dict[str, tuple[int, list[int]]]:
    ranks = {"all": (0, list(range(1, size))), "from1": (1, [0, *range(2, size)])}
    if size >= 4:
        ranks["subset"] = (0, [1, 2])
    return ranks


def shapes(sizes: Sequence[int], size: int, world: int) -> list[Shape]:
    every = [Shape(f"u8 {size_label(s)}", "all", size=s) for s in sizes]
    every += [
        Shape(f"{dtype} {size_label(size)}", "all", dtype=dtype, size=size)
        for dtype in ("float32", "int8", "complex128")
    ]
    every += [
        Shape("f8 strided [::2]", "all", dtype="float64", size=size, strided=True),
        Shape("f8 in a dict", "all", dtype="float64", size=size, wrap="dict"),
        Shape("f8 in a Message subclass", "all", dtype="float64", size=size, wrap="message"),
        Shape(f"u8, subscribers keep {KEEP}", "all", size=size, keep=KEEP),
        Shape("u8 from rank 1", "from1", size=size),
    ]
    if "subset" in topic_ranks(world):
        every.append(Shape("u8 to ranks 1,2 of 4+", "subset", size=size))
    return every


@dataclasses.dataclass
class Case:
    """One workload on this rank: its raw communicator (None off it) and what it sends."""

    shape: Shape
    root: int  # the publisher's rank in `world`
    members: list[int]  # publisher and subscribers, world ranks
    sub: Any  # a communicator of `members` (None on the other ranks)
    data: np.ndarray[Any, Any]
    out: np.ndarray[Any, Any]
    views: bool = False  # this subscriber got a read-only view (the node's shared copy)


def raw_loop(run: Run, case: Case, iters: int) -> tuple[float, Any]:
    from mpi4py import MPI

    comm, wtime, rank = run.comm, run.wtime, run.rank
    source = np.ascontiguousarray(case.data) if rank == case.root else case.out
    buffer = [source, MPI.BYTE]
    root = case.members.index(case.root)
    start = barrier_then_clock(comm, wtime)
    for _ in range(iters):
        if case.sub is not None:
            case.sub.Bcast(buffer, root=root)
        comm.Barrier()
    elapsed = (wtime() - start) / iters
    return elapsed, case.out.view(case.data.dtype)


def geode_loop(run: Run, case: Case, iters: int) -> tuple[float, Any]:
    geode, topic, comm, wtime = run.geodes[GEODE], run.topics[case.shape.topic], run.comm, run.wtime
    kept: deque[Any] = deque(maxlen=max(1, case.shape.keep))
    payload = case.shape.payload(case.data)
    source = f"node{case.root}"
    got: Any = None
    start = barrier_then_clock(comm, wtime)
    if run.rank == case.root:
        for _ in range(iters):
            handle = topic.publish(payload, source=source)
            assert handle is not None
            handle.wait()
            comm.Barrier()
    elif run.rank in case.members:
        for _ in range(iters):
            if not case.shape.keep:
                kept.clear()  # released before the next receive, as fanout.py does
            got = geode.receive(topic=topic, timeout=60).data
            kept.append(got)
            comm.Barrier()
    else:
        for _ in range(iters):
            comm.Barrier()
    elapsed = (wtime() - start) / iters
    return elapsed, None if got is None else unwrap(got)


def check(run: Run, case: Case, name: str, got: Any) -> None:
    """Raise unless a subscriber got exactly the array; a read-only view must refuse a write
    with numpy's ValueError (the documented ownership), and is recorded in ``case.views``."""
    if run.rank not in case.members or run.rank == case.root:
        return
    check_array(run.rank, case.data, f"{case.shape.name} {name}", got)
    if name != GEODE or got.flags.writeable:
        return
    try:
        got[...] = 0
    except ValueError:
        case.views = True
        return
    raise RuntimeError(f"rank {run.rank}: {case.shape.name}: a read-only view took a write")


def bench_shape(run: Run, world: Any, shape: Shape, budget: Budget, repeats: int) -> dict[str, Any]:
    root, subscribers = topic_ranks(run.size)[shape.topic]
    members = sorted([root, *subscribers])
    sub = world.Split(0 if run.rank in members else 1, run.rank)
    data = shape.array()
    out = np.zeros(data.nbytes, np.uint8)
    case = Case(shape, root, members, sub if run.rank in members else None, data, out)
    loops: dict[str, Loop] = {
        RAW: partial(raw_loop, run, case),
        GEODE: partial(geode_loop, run, case),
    }
    iterations, times, rounds = measure(run, loops, budget, repeats, partial(check, run, case))
    sub.Free()
    views = world.gather(case.views, root=0)
    ratios = paired(times[GEODE], times[RAW])
    record = {"workload": dataclasses.asdict(shape), "rounds": rounds}
    record |= {"methods": summarise(iterations, times), "geode_over_raw": ratios}
    record["ratio"] = spread(ratios) | {"median": statistics.median(ratios)}
    record["views"] = 0 if views is None else sum(views)
    return record


def table(records: list[dict[str, Any]]) -> list[str]:
    rows = Table(
        (
            ("workload", 28),
            ("raw us", 10),
            ("geode us", 10),
            ("geode/raw", 11),
            ("(quartiles)", 15),
            ("views", 7),
            ("pass", 6),
        )
    )
    lines = rows.head()
    for record in records:
        methods, ratio = record["methods"], record["ratio"]
        passed = "PASS" if ratio["median"] <= TARGET_MAX else "FAIL"
        cells = (
            f"{record['workload']['name']:<28}",
            f"{methods[RAW]['median_us']:.0f}",
            f"{methods[GEODE]['median_us']:.0f}",
            f"{ratio['median']:.3f}",
            f"{ratio['q1']:.2f}-{ratio['q3']:.2f}",
            str(record["views"]),
            passed,
        )
        lines.append(rows.row(cells))
    lines.append("views: subscribers that got a read-only view of the node's shared copy")
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    launch.sizes_option(parser, "uint8 sizes of the size sweep", "1Mi,4Mi,16Mi,64Mi", "1Mi,4Mi")
    parser.add_argument(
        "--size", type=parse_size, default=16 * MiB, help="every other workload's bytes"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated words: run workloads naming one"
    )
    launch.scaled_options(parser, SCALED, "a smoke test: 1 and 4 MiB, 3 repeats, 1 MiB shapes")
    launch.json_option(parser, "fanout_shapes")
    args = launch.parse_scaled(parser, argv, SCALED)
    launch.fill_sizes(parser, args, (MiB, 4 * MiB, 16 * MiB, 64 * MiB), (MiB, 4 * MiB))
    if args.quick:
        args.size = MiB
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    MPI = launch.start_mpi("fanout_shapes.py", 2, why=" (a publisher and a subscriber)", suggest=4)
    if MPI is None:
        return 2
    world = MPI.COMM_WORLD
    geode = Geode(acks=False)
    topics: dict[str, Topic] = {}
    for name, (root, subscribers) in topic_ranks(world.Get_size()).items():
        nodes = [f"node{rank}" for rank in subscribers]
        topics[name] = geode.topic(name, publishers=[f"node{root}"], subscribers=nodes)
    comm = world.Dup()
    run = Run(comm, comm.Get_rank(), comm.Get_size(), MPI.Wtime, {GEODE: geode}, topics, 1)
    began, env, clock = reporting.started(), environment(MPI), time.perf_counter()
    budget = Budget.for_run(args.quick)
    words = [word for word in args.only.split(",") if word]
    chosen = [
        shape
        for shape in shapes(args.sizes, args.size, run.size)
        if not words or any(word in shape.name for word in words)
    ]
    if run.rank == 0:
        title = (
            f"geode_mpi {env['geode_mpi']} fan-out shapes, {reporting.ranks_on_cores(env)}; "
            f"median of {args.repeats} interleaved repeats, geode = Geode(acks=False)"
        )
        print("\n".join(reporting.header(env, title, args.quick)), flush=True)
    records = [bench_shape(run, world, shape, budget, args.repeats) for shape in chosen]
    elapsed = time.perf_counter() - clock
    stats = geode.stats().as_dict()
    geode.close()
    comm.Free()
    if run.rank != 0:
        return 0
    print("\n".join(table(records)))
    print(f"target: geode/raw <= {TARGET_MAX} (issue 17, 16 MiB to the other ranks of a node)")
    settings = {"sizes": args.sizes, "size": args.size, "repeats": args.repeats}
    settings |= {"quick": args.quick, "only": args.only}
    numbers = {"workloads": records, "publisher_stats": stats}
    reporting.finish(args.json, "fanout_shapes", (began, elapsed, settings, env), numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
