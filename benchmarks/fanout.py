"""Topic fan-out of geode_mpi beside raw mpi4py Bcast and bcast, interleaved in one run.

Run as ``mpiexec -n 4 python benchmarks/fanout.py`` (2 ranks or more; ``--help`` for the
options). Rank 0 publishes, every other rank subscribes.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import launch
import numpy as np
import reporting
from baseline import arrays, message_fields
from common import KiB, MiB, environment, size_label
from launch import Ranks, Scaled
from reporting import Table
from timing import barrier_then_clock, check_array, paired, rotated, spread, summarise

from geode_mpi import Geode, Message, SendHandle

if TYPE_CHECKING:
    from geode_mpi.core.topics import Topic
DEFAULT_SIZES = (8, KiB, 64 * KiB, MiB, 4 * MiB, 16 * MiB)
QUICK_SIZES = (8, KiB, 64 * KiB, MiB)
SCALED: Scaled = {
    "messages": (10000, 500, "small messages per timed loop of the rate part"),
    "repeats": (
        11,
        3,
        "repeats per size, each interleaving the methods in rounds; the median over repeats is "
        "reported, and of paired ratios for the ratios",
    ),
}

RAW_BCAST = "raw Bcast"
GEODE = "geode"  # Geode(acks=False): the headline, used by the target
GEODE_ACKS = "geode acks"  # Geode() with its default acks=True: every publish tracked
RAW_DICT = "raw bcast"  # lowercase, pickled bcast of a dict with a Message's fields
METHODS = (RAW_BCAST, GEODE, GEODE_ACKS)
MESSAGE_METHODS = (RAW_DICT, GEODE, GEODE_ACKS)

TOPIC = "fan"
PUBLISHER = "node0"
DATA = "hello world"

# The issues' targets: (large-from, at most this multiple of raw Bcast's time).
LARGE_FROM = MiB  # arrays this large or larger ...
LARGE_MAX = 1.25  # ... reach every subscriber in at most this multiple of raw Bcast's time
# Issue 17: subscribers on the publisher's node share one copy (transport/shared.py), and
# 16 MiB reaches them in at most half of raw Bcast's time.
SHARED_FROM = 16 * MiB
SHARED_MAX = 0.5

# One timed fan-out loop: given an iteration count, the time per iteration in seconds and the
# array this rank received last (to check it).
Loop = Callable[[int], tuple[float, Any]]


@dataclasses.dataclass
class Run(Ranks):
    """Every rank's state: a private raw communicator, and a Geode with its topic per method."""

    geodes: dict[str, Geode]
    topics: dict[str, Topic]
    window: int
    # The seq of each method's next message: a topic numbers everything published on it.
    next_seq: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(MESSAGE_METHODS, 0)
    )
    # Per method, this rank's time from leaving the barrier before a fan-out until it held
    # the array (a subscriber), or until its publish was complete (rank 0), every fan-out's
    # (s): which rank a slow fan-out waits for (`per_rank`).
    holding: dict[str, list[float]] = dataclasses.field(
        default_factory=lambda: {method: [] for method in METHODS}
    )


@dataclasses.dataclass(frozen=True)
class Budget:
    """How many fan-outs a method makes per repeat: what fits in ``seconds`` at the speed
    measured while warming up, between ``least`` and ``most`` (so a method that turns out slow
    cannot stretch the run). A repeat is cut into at most ``rounds`` rounds; each round runs
    every method once for a block of its fan-outs, in an order that rotates."""

    most: int
    least: int
    seconds: float
    rounds: int

    @classmethod
    def for_run(cls, quick: bool) -> Budget:
        if quick:
            return cls(most=100, least=2, seconds=0.01, rounds=4)
        return cls(most=1000, least=5, seconds=0.12, rounds=12)

    def fitted(self, per_iteration: float) -> int:
        return max(self.least, min(self.most, int(self.seconds / per_iteration)))


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Topic fan-out of geode_mpi (rank 0 publishes, every other rank "
        "subscribes) beside raw mpi4py: the time until every subscriber holds a numpy array, "
        "against comm.Bcast; and small messages per second, against pickled comm.bcast. "
        "Run with 2 ranks or more: mpiexec -n 4 python benchmarks/fanout.py",
    )
    launch.sizes_option(parser, "array sizes in bytes", "8,1Ki,64Ki,1Mi,4Mi,16Mi", "8,1Ki,64Ki,1Mi")
    parser.add_argument("--window", type=int, default=64, help="publishes outstanding at most (64)")
    launch.scaled_options(
        parser,
        SCALED,
        "a smoke test: fewer sizes, iterations, messages and repeats (a few seconds)",
    )
    launch.json_option(parser, "fanout")
    args = launch.parse_scaled(parser, argv, SCALED)
    launch.fill_sizes(parser, args, DEFAULT_SIZES, QUICK_SIZES)
    launch.at_least_one(parser, args, ("window",))
    return args


# -- part 1: fan-out of one array --------------------------------------------------------------
# Every iteration is one fan-out followed by a barrier of all ranks on the raw communicator, for
# every method alike: the barrier ends once every subscriber holds the array. Rank 0 times the
# loop from the barrier before it; its time per iteration is reported.


def raw_bcast(
    run: Run, data: np.ndarray[Any, Any], out: np.ndarray[Any, Any], iters: int
) -> tuple[float, Any]:
    from mpi4py import MPI

    comm, wtime, holding = run.comm, run.wtime, run.holding[RAW_BCAST]
    buffer = [data if run.rank == 0 else out, MPI.BYTE]
    start = barrier_then_clock(comm, wtime)
    left = start
    for _ in range(iters):
        comm.Bcast(buffer, root=0)
        holding.append(wtime() - left)
        comm.Barrier()
        left = wtime()
    return (left - start) / iters, out


def geode_fanout(
    run: Run, method: str, data: np.ndarray[Any, Any], iters: int
) -> tuple[float, Any]:
    """Publish ``data`` on the method's topic; each subscriber releases the array it received
    before the next receive, so the receive-buffer pool reuses one buffer, as raw ``Bcast``
    reuses one preallocated buffer."""
    geode, topic, comm = run.geodes[method], run.topics[method], run.comm
    wtime, holding = run.wtime, run.holding[method]
    got: Any = None
    start = barrier_then_clock(comm, wtime)
    left = start
    if run.rank == 0:
        for _ in range(iters):
            handle = topic.publish(data, source=PUBLISHER)
            assert handle is not None
            handle.wait()
            holding.append(wtime() - left)
            comm.Barrier()
            left = wtime()
    else:
        for _ in range(iters):
            got = None
            got = geode.receive(topic=TOPIC).data
            holding.append(wtime() - left)
            comm.Barrier()
            left = wtime()
    elapsed = left - start
    run.next_seq[method] += iters
    return elapsed / iters, got


def barrier_only(run: Run, iters: int) -> tuple[float, Any]:
    """The barrier alone: what every method's time per iteration includes."""
    comm = run.comm
    start = barrier_then_clock(comm, run.wtime)
    for _ in range(iters):
        comm.Barrier()
    return (run.wtime() - start) / iters, None


def check_subscriber(run: Run, expected: np.ndarray[Any, Any], name: str, got: Any) -> None:
    """Raise on a subscriber unless ``got`` is exactly the array published (so garbage is never
    timed)."""
    if run.rank != 0:
        check_array(run.rank, expected, name, got)


def measure(
    run: Run, loops: dict[str, Loop], budget: Budget, repeats: int, check: Callable[..., None]
) -> tuple[dict[str, list[int]], dict[str, list[float]], int]:
    """Check each method once and warm it up, then time the methods interleaved.

    Each repeat is cut into rounds (`Budget.rounds`, fewer if a method makes fewer fan-outs
    per repeat); each round runs every method for a block of its fan-outs, in an order that
    rotates from round to round. A method's time in a repeat is its blocks' total time over
    their fan-outs, so the two sides of a paired ratio sample the same stretch of time in
    alternating slices (about 10 ms each in a full run): a burst of load from other processes
    lasting a few tens of ms lands on both, instead of on whichever method's loop it hit.

    Returns:
        For each method, the iterations and the time per iteration (s) of every repeat, in
        repeat order; and the rounds per repeat.
    """
    counts: dict[str, int] = {}
    for name, loop in loops.items():
        per_iteration, got = loop(1)
        check(name, got)
        del got  # released, so that the receive-buffer pool reuses its buffer
        # Warm up twice for about a fifth of a repeat each, at the speed last measured
        # (rank 0's: every rank must loop equally often); the first fan-outs of a size are slow
        # (fresh pages), so the second warm-up is the one that sets the count.
        for _ in range(2):
            warm = run.comm.bcast(max(1, budget.fitted(per_iteration) // 5), root=0)
            per_iteration = loop(warm)[0]
        counts[name] = budget.fitted(per_iteration)
    counts = run.comm.bcast(counts, root=0)  # every rank must loop equally often
    names = list(loops)
    rounds = min(budget.rounds, *counts.values())
    times: dict[str, list[float]] = {name: [] for name in names}
    iterations: dict[str, list[int]] = {name: [] for name in names}
    turn = 0
    for _ in range(repeats):
        blocks = {name: max(1, round(counts[name] / rounds)) for name in names}
        spent = dict.fromkeys(names, 0.0)
        for _ in range(rounds):
            for name in rotated(names, turn):
                spent[name] += loops[name](blocks[name])[0] * blocks[name]
            turn += 1
        for name in names:
            done = blocks[name] * rounds
            per_iteration = spent[name] / done
            times[name].append(per_iteration)
            iterations[name].append(done)
            # A method that slowed down since warming up gets fewer iterations from now on.
            counts[name] = min(counts[name], budget.fitted(per_iteration))
        counts = run.comm.bcast(counts, root=0)
    return iterations, times, rounds


def bench_array(run: Run, size: int, budget: Budget, repeats: int) -> dict[str, Any]:
    """Time one array size with every method; return its JSON record."""
    data, out = arrays(size)
    loops: dict[str, Loop] = {
        RAW_BCAST: partial(raw_bcast, run, data, out),
        GEODE: partial(geode_fanout, run, GEODE, data),
        GEODE_ACKS: partial(geode_fanout, run, GEODE_ACKS, data),
    }
    for holding in run.holding.values():
        holding.clear()
    iterations, times, rounds = measure(
        run, loops, budget, repeats, partial(check_subscriber, run, data)
    )
    record = {"size": size, "rounds": rounds, "methods": summarise(iterations, times)}
    record["per_rank_us"] = per_rank(run)
    return record


def per_rank(run: Run) -> dict[str, list[float]]:
    """Each method's median time per rank (us, by rank) from leaving the barrier to holding
    the array (rank 0: to its publish being complete), over every fan-out of the size (the
    warm-up's too); the same on every rank."""
    mine = {
        method: statistics.median(times) * 1e6 if times else 0.0
        for method, times in run.holding.items()
    }
    ranks = run.comm.allgather(mine)
    return {method: [rank[method] for rank in ranks] for method in METHODS}


def bench_barrier(run: Run, budget: Budget, repeats: int) -> dict[str, Any]:
    loops: dict[str, Loop] = {"barrier": partial(barrier_only, run)}
    iterations, times, _ = measure(run, loops, budget, repeats, lambda name, got: None)
    return summarise(iterations, times)["barrier"]


# -- part 2: small messages per second ---------------------------------------------------------
# Every rank leaves a barrier; each subscriber's clock runs from there until it holds all n
# messages, and the slowest subscriber's time sets the rate.


def raw_messages(run: Run, n: int) -> tuple[float, str | None]:
    comm, first = run.comm, run.next_seq[RAW_DICT]
    bad = None
    start = barrier_then_clock(comm, run.wtime)
    if run.rank == 0:
        for seq in range(first, first + n):
            comm.bcast(message_fields(seq, PUBLISHER, TOPIC, DATA), root=0)
    else:
        for seq in range(first, first + n):
            got = comm.bcast(None, root=0)
            if bad is None and (got["seq"] != seq or got["data"] != DATA):
                bad = f"expected seq {seq}, got {got!r}"
    return run.wtime() - start, bad


def geode_messages(run: Run, method: str, n: int) -> tuple[float, str | None]:
    geode, topic, first = run.geodes[method], run.topics[method], run.next_seq[method]
    bad = None
    start = barrier_then_clock(run.comm, run.wtime)
    if run.rank == 0:
        handles: deque[SendHandle] = deque()
        for _ in range(n):
            handle = topic.publish(Message(DATA), source=PUBLISHER)
            assert handle is not None
            handles.append(handle)
            while handles and handles[0].done():
                handles.popleft()
            if len(handles) >= run.window:
                handles.popleft().wait()
        for handle in handles:
            handle.wait()
    else:
        for seq in range(first, first + n):
            got = geode.receive(topic=TOPIC)
            if bad is None and (
                got.seq != seq or got.data != DATA or got.source != PUBLISHER or got.topic != TOPIC
            ):
                bad = f"expected seq {seq} from {PUBLISHER} on {TOPIC!r}, got {got!r}"
    return run.wtime() - start, bad


def timed_messages(run: Run, method: str, n: int) -> float:
    """Run one loop; return the slowest subscriber's messages per second (on every rank)."""
    if method == RAW_DICT:
        seconds, bad = raw_messages(run, n)
    else:
        seconds, bad = geode_messages(run, method, n)
    run.next_seq[method] += n
    results = run.comm.allgather((seconds, bad))[1:]  # the subscribers'
    for rank, (_, wrong) in enumerate(results, start=1):
        if wrong is not None:
            raise RuntimeError(f"rank {rank}: {method} delivered a wrong message: {wrong}")
    return float(n / max(seconds for seconds, _ in results))


def bench_messages(run: Run, n: int, repeats: int) -> dict[str, list[float]]:
    for method in MESSAGE_METHODS:  # warm up and check each method once
        timed_messages(run, method, min(n, 1000))
    rates: dict[str, list[float]] = {method: [] for method in MESSAGE_METHODS}
    for repeat in range(repeats):
        for method in rotated(MESSAGE_METHODS, repeat):
            rates[method].append(timed_messages(run, method, n))
    return rates


# -- reporting ---------------------------------------------------------------------------------


def add_ratios(record: dict[str, Any]) -> None:
    """Paired ratios of each geode method's time per fan-out over raw Bcast's: every repeat's,
    their median (the figure reported) and their spread."""
    methods = record["methods"]
    raw = methods[RAW_BCAST]["repeats_us"]
    for key, method in (("geode_over_bcast", GEODE), ("geode_acks_over_bcast", GEODE_ACKS)):
        ratios = paired(methods[method]["repeats_us"], raw)
        record[f"{key}_repeats"] = ratios
        record[key] = statistics.median(ratios)
        record[f"{key}_spread"] = spread(ratios)


def array_table(arrays: list[dict[str, Any]], barrier: dict[str, Any]) -> list[str]:
    table = Table(
        (
            ("size", 9),
            ("geode n", 8),
            ("Bcast us", 11),
            ("geode us", 11),
            ("acks us", 11),
            ("Bcast GB/s", 11),
            ("geode GB/s", 11),
            ("geode/Bcast", 12),
            ("(quartiles)", 12),
            ("acks/Bcast", 11),
        )
    )
    lines = table.head()
    for rec in arrays:
        methods = rec["methods"]
        raw_us, geode_us = methods[RAW_BCAST]["median_us"], methods[GEODE]["median_us"]
        lines.append(
            table.row(
                [
                    size_label(rec["size"]),
                    str(min(methods[GEODE]["iterations"])),
                    f"{raw_us:.1f}",
                    f"{geode_us:.1f}",
                    f"{methods[GEODE_ACKS]['median_us']:.1f}",
                    f"{rec['size'] / raw_us / 1e3:.3f}",
                    f"{rec['size'] / geode_us / 1e3:.3f}",
                    f"{rec['geode_over_bcast']:.2f}",
                    "{q1:.2f}-{q3:.2f}".format(**rec["geode_over_bcast_spread"]),
                    f"{rec['geode_acks_over_bcast']:.2f}",
                ]
            )
        )
    lines.append(table.rule)
    for rec in arrays:
        lines += [
            f"{size_label(rec['size']):>9} {method} by rank, us from the barrier to holding the "
            "array (rank 0: its publish done): "
            + " ".join(f"{us:.0f}" for us in rec["per_rank_us"][method])
            for method in (RAW_BCAST, GEODE)
        ]
    lines += [
        "us: time per fan-out, from a barrier until every subscriber holds the array, plus the "
        f"barrier that ends it (a barrier alone: {barrier['median_us']:.1f} us)",
        "geode: Geode(acks=False); acks: Geode() (acks on). Each subscriber releases an array "
        "before receiving the next.",
        "GB/s: array bytes over that time (1e9 bytes/s); ratios are paired: the median over "
        "repeats of the two times in the same repeat (quartiles: of geode/Bcast's repeats)",
        "each repeat interleaves the methods in up to "
        f"{max((rec['rounds'] for rec in arrays), default=0)} rounds: a block of fan-outs per "
        "method per round, in an order that rotates",
    ]
    return lines


def message_table(rates: dict[str, list[float]], args: argparse.Namespace) -> list[str]:
    ratios = {
        method: statistics.median(paired(rates[method], rates[RAW_DICT]))
        for method in MESSAGE_METHODS
    }
    lines = [f"{'method':<16}{'msgs/s':>12}{'ratio to raw':>14}", "-" * 42]
    for method in MESSAGE_METHODS:
        lines.append(
            f"{method:<16}{statistics.median(rates[method]):>12,.0f}{ratios[method]:>14.2f}"
        )
    lines += [
        "-" * 42,
        f"msgs/s: {args.messages} messages over the time until the slowest subscriber held them "
        "all (median of the repeats)",
        f"raw bcast: comm.bcast of a dict with a Message's fields; geode: topic.publish("
        f"Message('{DATA}')), window {args.window}",
    ]
    return lines


def evaluate_target(
    arrays: list[dict[str, Any]], large_from: int = LARGE_FROM, limit: float = LARGE_MAX
) -> dict[str, Any]:
    """An issue's target, with PASS/FAIL, the worst case and every value checked."""
    name = (
        f"arrays >= {size_label(large_from)} reach every subscriber in <= {limit:.2f}x the "
        "time of raw Bcast (geode, acks off)"
    )
    large = [r for r in arrays if r["size"] >= large_from]
    if not large:
        return {"target": name, "result": "n/a", "ratios": {}}
    ratios = {size_label(r["size"]): r["geode_over_bcast"] for r in large}
    spreads = {size_label(r["size"]): r["geode_over_bcast_spread"] for r in large}
    acks = {size_label(r["size"]): r["geode_acks_over_bcast"] for r in large}
    worst = max(ratios, key=lambda label: ratios[label])
    return {
        "target": name,
        "result": "PASS" if all(ratio <= limit for ratio in ratios.values()) else "FAIL",
        "worst": {"case": worst, "ratio": ratios[worst], "spread": spreads[worst]},
        "ratios": ratios,
        "spreads": spreads,
        "acks_variant": {
            "note": "for comparison only; the target uses Geode(acks=False)",
            "would_pass": all(ratio <= limit for ratio in acks.values()),
            "ratios": acks,
        },
    }


def target_lines(item: dict[str, Any]) -> list[str]:
    if item["result"] == "n/a":
        return ["target:", f"  n/a   {item['target']} (no such size measured)"]
    detail = ", ".join(f"{label} {ratio:.2f}" for label, ratio in item["ratios"].items())
    acks = item["acks_variant"]
    acks_detail = ", ".join(f"{label} {ratio:.2f}" for label, ratio in acks["ratios"].items())
    verdict = "would pass" if acks["would_pass"] else "would fail"
    worst = item["worst"]
    return [
        "target:",
        f"  {item['result']}  {item['target']}",
        f"        worst {worst['ratio']:.2f} at {worst['case']} (repeats "
        "{min:.2f} to {max:.2f}, quartiles {q1:.2f}-{q3:.2f}); all: ".format(**worst["spread"])
        + detail,
        f"        not the target: geode acks {verdict}: {acks_detail}",
    ]


def header_lines(env: dict[str, Any], args: argparse.Namespace) -> list[str]:
    title = (
        f"geode_mpi {env['geode_mpi']} topic fan-out, {reporting.ranks_on_cores(env)}: rank 0 "
        f"publishes, {env['ranks'] - 1} subscribe; median of {args.repeats} interleaved repeats"
    )
    return reporting.header(env, title, args.quick)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    MPI = launch.start_mpi("fanout.py", 2, why=" (a publisher and a subscriber)", suggest=4)
    if MPI is None:
        return 2
    # collective, in this order; from here an exception on one rank aborts the job
    geodes = {GEODE: Geode(acks=False), GEODE_ACKS: Geode(acks=True)}
    topics = {
        method: geode.topic(TOPIC, publishers=[PUBLISHER], subscribers=geode.nodes[1:])
        for method, geode in geodes.items()
    }
    comm = MPI.COMM_WORLD.Dup()
    run = Run(comm, comm.Get_rank(), comm.Get_size(), MPI.Wtime, geodes, topics, args.window)
    began = reporting.started()
    env = environment(MPI)
    if run.rank == 0:
        print("\n".join(header_lines(env, args)), flush=True)
    clock = time.perf_counter()
    budget = Budget.for_run(args.quick)
    barrier = bench_barrier(run, budget, args.repeats)
    arrays = [bench_array(run, size, budget, args.repeats) for size in args.sizes]
    rates = bench_messages(run, args.messages, args.repeats)
    elapsed = time.perf_counter() - clock
    publisher = {method: geode.stats().as_dict() for method, geode in geodes.items()}
    for geode in geodes.values():
        geode.close()
    comm.Free()
    if run.rank != 0:
        return 0
    for record in arrays:
        add_ratios(record)
    targets = [evaluate_target(arrays), evaluate_target(arrays, SHARED_FROM, SHARED_MAX)]
    print("\n".join(array_table(arrays, barrier)))
    for target in targets:
        print("\n".join(target_lines(target)))
    print()
    print("\n".join(message_table(rates, args)))
    messages = {
        "messages": args.messages,
        "window": args.window,
        "rates_per_s": rates,
        "ratios_to_raw": {method: paired(rates[method], rates[RAW_DICT]) for method in rates},
    }
    settings = {"sizes": args.sizes, "messages": args.messages, "window": args.window}
    settings |= {"repeats": args.repeats, "quick": args.quick}
    settings["budget"] = dataclasses.asdict(budget)
    numbers = {"barrier": barrier, "arrays": arrays, "small_messages": messages}
    numbers |= {"publisher_stats": publisher, "targets": targets}
    reporting.finish(args.json, "fanout", (began, elapsed, settings, env), numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
