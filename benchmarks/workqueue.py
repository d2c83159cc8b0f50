"""Load balance of a geode_mpi work queue beside raw mpi4py master/worker and static round-robin.

Run as ``mpiexec -n 4 python benchmarks/workqueue.py`` (3 ranks or more; ``--help`` for the
options). Rank 0 is the master (dispatcher and producer), every other rank a worker. A task
"works" by sleeping, so that ranks sharing a core do not distort the measurement.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import launch
import reporting
from common import environment
from launch import Scaled
from timing import barrier_then_clock, rotated

from geode_mpi import Geode, Message
from geode_mpi.core.workqueues import WorkQueue

GEODE, GEODE_AHEAD = "geode queue", "geode prefetch 2"
MASTER_WORKER, ROUND_ROBIN = "raw master/worker", "raw round-robin"
METHODS = (GEODE, GEODE_AHEAD, MASTER_WORKER, ROUND_ROBIN)
PREFETCH = {GEODE: 1, GEODE_AHEAD: 2}
# How far ahead each method's workers ask, for the model (None: no asking, all assigned up front).
AHEAD: dict[str, int | None] = {GEODE: 1, GEODE_AHEAD: 2, MASTER_WORKER: 0, ROUND_ROBIN: None}
REQUEST, TASK = 11, 12  # raw master/worker tags
MAX_RATIO = 1.15  # target: geode's makespan is within 15% of the ideal (total work / workers)
SCALED: Scaled = {
    "tasks": (100, 30, "tasks per round"),
    "repeats": (7, 3, "rounds per method; the median is shown"),
}
RUN_TIMEOUT = 60.0  # seconds a round may take beyond its ideal before geode's run() gives up

# What one worker did with one task: (round, task index, start, end), time.time() seconds.
Record = tuple[int, int, float, float]


class Task(Message):
    """A task: (round, index, seconds to work)."""


@dataclass
class Run:
    """Every rank's state: a private raw communicator, a Geode and its queue per geode method,
    the round being run and the tasks this rank finished in it."""

    comm: Any
    rank: int
    workers: int
    geodes: dict[str, Geode]
    queues: dict[str, WorkQueue]
    round: int = 0
    done: list[Record] = field(default_factory=list)
    run_ended: float = 0.0  # when this rank's last geode run() returned (time.time())


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load balance of a geode_mpi work queue: the makespan of tasks varying "
        "tenfold (they sleep) over the ideal (total work / workers), beside a raw mpi4py "
        "master/worker loop and a static round-robin split. Run with 3 ranks or more: "
        "mpiexec -n 4 python benchmarks/workqueue.py",
    )
    duration_options(parser, seed=7)
    launch.scaled_options(parser, SCALED, "a smoke test of a few seconds")
    launch.json_option(parser, "workqueue")
    args = launch.parse_scaled(parser, argv, SCALED)
    check_durations(parser, args)
    return args


def duration_options(parser: argparse.ArgumentParser, seed: int) -> None:
    """``--min-ms``, ``--max-ms`` and ``--seed``: what `draw` draws the durations from (also
    benchmarks/executor.py's)."""
    parser.add_argument("--min-ms", type=float, default=5.0, help="shortest task, ms (5)")
    parser.add_argument("--max-ms", type=float, default=50.0, help="longest task, ms (50)")
    parser.add_argument(
        "--seed", type=int, default=seed, help=f"repeat r draws with seed + r ({seed})"
    )


def check_durations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a range of durations that `draw` cannot draw from (exit status 2)."""
    if args.min_ms < 0:
        parser.error(f"--min-ms must be >= 0, got {args.min_ms:g}")
    if args.max_ms <= 0 or args.max_ms < args.min_ms:
        parser.error(f"--max-ms must be > 0 and >= --min-ms ({args.min_ms:g}), got {args.max_ms:g}")


def draw(args: argparse.Namespace, repeat: int) -> list[float]:
    """Repeat ``repeat``'s task durations in seconds (every method of a repeat gets the same)."""
    rng = random.Random(args.seed + repeat)
    return [rng.uniform(args.min_ms, args.max_ms) / 1e3 for _ in range(args.tasks)]


# -- one round of each method: a barrier, rank 0's clock starts, every task is worked once -------


def work(run: Run, task: tuple[int, int, float]) -> None:
    """Sleep through a task and record it (on a worker)."""
    round_id, k, seconds = task
    start = time.time()
    time.sleep(seconds)
    run.done.append((round_id, k, start, time.time()))


def geode_round(run: Run, method: str, durations: list[float]) -> float:
    geode, queue = run.geodes[method], run.queues[method]
    timeout = RUN_TIMEOUT + 5 * sum(durations)
    start = barrier_then_clock(run.comm, time.time)
    if run.rank == 0:
        for k, seconds in enumerate(durations):
            queue.put(Task((run.round, k, seconds)))
    summary = geode.run(timeout=timeout)
    run.run_ended = time.time()
    if summary.reason != "quiescent":
        raise RuntimeError(f"rank {run.rank}: {method} round {run.round} ended by {summary}")
    return start


def master_worker_round(run: Run, durations: list[float]) -> float:
    """The classic hand-written pattern: a worker asks, the master answers with the next task,
    or with None once none is left."""
    from mpi4py import MPI

    comm = run.comm
    start = barrier_then_clock(comm, time.time)
    if run.rank == 0:
        status = MPI.Status()
        tasks = iter(enumerate(durations))
        stopped = 0
        while stopped < run.workers:
            comm.recv(source=MPI.ANY_SOURCE, tag=REQUEST, status=status)
            k, seconds = next(tasks, (None, 0.0))
            if k is None:
                comm.send(None, dest=status.Get_source(), tag=TASK)
                stopped += 1
            else:
                comm.send((run.round, k, seconds), dest=status.Get_source(), tag=TASK)
    else:
        while True:
            comm.send(None, dest=0, tag=REQUEST)
            task = comm.recv(source=0, tag=TASK)
            if task is None:
                break
            work(run, task)
    return start


def round_robin_round(run: Run, durations: list[float]) -> float:
    """No load balancing: task k goes to worker 1 + k % workers, all of them up front."""
    comm = run.comm
    start = barrier_then_clock(comm, time.time)
    lists: list[list[tuple[int, int, float]]] | None = None
    if run.rank == 0:
        lists = [[] for _ in range(run.workers + 1)]
        for k, seconds in enumerate(durations):
            lists[1 + k % run.workers].append((run.round, k, seconds))
    for task in comm.scatter(lists, root=0):
        work(run, task)
    return start


def timed(run: Run, method: str, durations: list[float]) -> dict[str, Any] | None:
    """Run one round; on rank 0 return what it measured (after checking every task ran once),
    elsewhere None."""
    run.round += 1
    run.done.clear()
    if method in PREFETCH:
        start = geode_round(run, method, durations)
    elif method == MASTER_WORKER:
        start = master_worker_round(run, durations)
    else:
        start = round_robin_round(run, durations)
    records = run.comm.gather(list(run.done), root=0)
    if run.rank != 0:
        return None
    done = [(rank, record) for rank, found in enumerate(records) for record in found]
    counts = Counter(k for _, (_, k, _, _) in done)
    stale = [record for _, record in done if record[0] != run.round]
    if stale or counts != Counter(range(len(durations))):
        twice = sorted(k for k, n in counts.items() if n > 1)
        missing = sorted(set(range(len(durations))) - set(counts))
        raise RuntimeError(
            f"{method} round {run.round}: tasks run twice {twice}, never {missing}, "
            f"from another round {stale[:3]}"
        )
    mine = [sorted(records[w], key=lambda record: record[2]) for w in range(1, run.workers + 1)]
    gaps = [b[2] - a[3] for found in mine for a, b in pairwise(found)]
    last = max(end for _, (_, _, _, end) in done)
    return {
        "makespan_s": last - start,
        # geode: from the last task's end until run() returned on rank 0 (quiescence found)
        "run_ended_after_s": run.run_ended - last if method in PREFETCH else None,
        "first_start_s": min(begin for _, (_, _, begin, _) in done) - start,
        "mean_gap_s": statistics.fmean(gaps) if gaps else 0.0,
        "tasks": [len(found) for found in mine],
        "busy_s": [sum(end - begin for _, _, begin, end in found) for found in mine],
    }


def measure(run: Run, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Check and warm up each method once, then run the rounds, the order of the methods
    rotating from one repeat to the next; rank 0's results (empty lists elsewhere)."""
    warm = [args.min_ms / 1e3] * (2 * run.workers)
    for method in METHODS:
        timed(run, method, warm)
    rounds: dict[str, list[dict[str, Any]]] = {method: [] for method in METHODS}
    for repeat in range(args.repeats):
        durations = draw(args, repeat)
        for method in rotated(METHODS, repeat):
            result = timed(run, method, durations)
            if result is not None:
                rounds[method].append(result)
    return rounds


# -- the model: what a scheduler of each kind would get with no overhead at all ----------------


def model_makespan(durations: Sequence[float], workers: int, ahead: int | None) -> float:
    """The makespan with zero latency and exact sleeps. ``ahead`` None: task k to worker
    k % workers up front; 0: a worker asks for a task when it has finished the last one;
    p >= 1: it asks for p at the start and for one more each time it starts a task (the
    oldest request gets the next task), as a geode work queue with prefetch p."""
    if ahead is None:
        return max(sum(durations[w::workers]) for w in range(workers))
    tasks = deque(durations)
    wants = deque(w for w in range(workers) for _ in range(max(ahead, 1)))
    held: list[deque[float]] = [deque() for _ in range(workers)]
    idle = [True] * workers
    ends: list[tuple[float, int]] = []
    now = makespan = 0.0
    while True:
        changed = True
        while changed:
            changed = False
            while wants and tasks:
                held[wants.popleft()].append(tasks.popleft())
            for w in range(workers):
                if idle[w] and held[w]:
                    end = now + held[w].popleft()
                    heapq.heappush(ends, (end, w))
                    makespan = max(makespan, end)
                    idle[w] = False
                    changed = True
                    if ahead:
                        wants.append(w)
        if not ends:
            return makespan
        now, w = heapq.heappop(ends)
        idle[w] = True
        if not ahead:
            wants.append(w)


# -- reporting ---------------------------------------------------------------------------------


def paired(tops: list[float], bottoms: list[float]) -> list[float]:
    """Per-repeat ratios: the methods of one repeat run back to back on the same durations, so
    a burst of load from other processes hits both sides alike; the median of these is shown."""
    return [top / bottom for top, bottom in zip(tops, bottoms, strict=True)]


def summarise(
    args: argparse.Namespace, workers: int, rounds: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    draws = [draw(args, repeat) for repeat in range(args.repeats)]
    ideal = [sum(durations) / workers for durations in draws]
    methods: dict[str, Any] = {}
    for method in METHODS:
        makespans = [result["makespan_s"] for result in rounds[method]]
        model = [model_makespan(d, workers, AHEAD[method]) for d in draws]
        slept = [sum(result["busy_s"]) for result in rounds[method]]
        methods[method] = {
            "makespan_s": makespans,
            "over_ideal": paired(makespans, ideal),
            "model_over_ideal": paired(model, ideal),
            "slept_over_nominal": paired(slept, [sum(d) for d in draws]),
            "first_start_s": [result["first_start_s"] for result in rounds[method]],
            "mean_gap_s": [result["mean_gap_s"] for result in rounds[method]],
            "run_ended_after_s": [result["run_ended_after_s"] for result in rounds[method]],
            "tasks_per_worker": [result["tasks"] for result in rounds[method]],
            "busy_s_per_worker": [result["busy_s"] for result in rounds[method]],
        }
    raw = methods[MASTER_WORKER]["makespan_s"]
    for record in methods.values():
        record["over_master_worker"] = paired(record["makespan_s"], raw)
        for key in (
            "makespan_s",
            "over_ideal",
            "model_over_ideal",
            "over_master_worker",
            "first_start_s",
            "mean_gap_s",
        ):
            record[f"median_{key}"] = statistics.median(record[key])
    return {"ideal_s": ideal, "methods": methods}


def table(numbers: dict[str, Any]) -> list[str]:
    columns = (
        ("method", 20),
        ("makespan ms", 12),
        ("x ideal", 9),
        ("worst", 8),
        ("model", 8),
        ("x raw m/w", 11),
        ("first ms", 10),
        ("gap ms", 8),
        ("tasks/worker", 14),
    )

    def row(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{columns[0][1]}}"
        rest = zip(cells[1:], columns[1:], strict=True)
        return first + "".join(f"{cell:>{width}}" for cell, (_, width) in rest)

    rule = "-" * sum(width for _, width in columns)
    lines = [row([title for title, _ in columns]), rule]
    for method in METHODS:
        record = numbers["methods"][method]
        counts = [n for result in record["tasks_per_worker"] for n in result]
        lines.append(
            row(
                [
                    method,
                    f"{record['median_makespan_s'] * 1e3:.1f}",
                    f"{record['median_over_ideal']:.3f}",
                    f"{max(record['over_ideal']):.3f}",
                    f"{record['median_model_over_ideal']:.3f}",
                    f"{record['median_over_master_worker']:.3f}",
                    f"{record['median_first_start_s'] * 1e3:.2f}",
                    f"{record['median_mean_gap_s'] * 1e3:.2f}",
                    f"{min(counts)}-{max(counts)}",
                ]
            )
        )
    slept = [r for m in METHODS for r in numbers["methods"][m]["slept_over_nominal"]]
    quiet = [r for m in PREFETCH for r in numbers["methods"][m]["run_ended_after_s"]]
    lines += [
        rule,
        f"ideal: total work / workers, median {statistics.median(numbers['ideal_s']) * 1e3:.1f} "
        "ms; makespan: from a barrier until the last task ended (rank 0's clock)",
        "x ideal, x raw m/w: paired ratios, the median over repeats of the two in the same repeat; "
        "worst: the largest x ideal",
        "model: x ideal of the same scheduling with no overhead, exact sleeps and the first "
        "requests in worker order; tasks/worker: fewest-most in any round",
        "first ms: from the barrier until the first task started; gap ms: a worker's mean idle "
        "time between two tasks (medians over repeats)",
        f"sleeps lasted {statistics.median(slept):.3f} x their nominal time (median of all "
        "rounds): every method pays that alike",
        f"geode run() returned (quiescence) {statistics.median(quiet) * 1e3:.1f} ms after the "
        f"last task ended (median; at most {max(quiet) * 1e3:.1f} ms): not in the makespan",
    ]
    return lines


def evaluate_target(numbers: dict[str, Any]) -> list[dict[str, Any]]:
    record = numbers["methods"][GEODE]
    ratio = record["median_over_ideal"]
    return [
        {
            "target": f"geode work queue (prefetch 1) makespan <= {MAX_RATIO:.2f} x ideal",
            "ratio": ratio,
            "worst": max(record["over_ideal"]),
            "result": "PASS" if ratio <= MAX_RATIO else "FAIL",
        }
    ]


def header_lines(env: dict[str, Any], args: argparse.Namespace) -> list[str]:
    title = (
        f"geode_mpi {env['geode_mpi']} work queue, {reporting.ranks_on_cores(env)}: rank 0 "
        f"dispatches, {env['ranks'] - 1} workers; {args.tasks} tasks of "
        f"{args.min_ms:g}-{args.max_ms:g} ms (sleeps, seed {args.seed}+repeat); median of "
        f"{args.repeats} interleaved repeats"
    )
    return reporting.header(env, title, args.quick)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    MPI = launch.start_mpi("workqueue.py", 3, why=" (a master and 2 workers)", suggest=4)
    if MPI is None:
        return 2
    # collective, in this order; from here an exception on one rank aborts the job
    geodes = {method: Geode() for method in PREFETCH}
    queues = {
        method: geode.work_queue(
            "sweep", consumers=geode.nodes[1:], dispatcher="node0", prefetch=PREFETCH[method]
        )
        for method, geode in geodes.items()
    }
    comm = MPI.COMM_WORLD.Dup()
    run = Run(comm, comm.Get_rank(), comm.Get_size() - 1, geodes, queues)
    for geode in geodes.values():
        geode.on(Task)(lambda msg: work(run, msg.data))
    began = reporting.started()
    env = environment(MPI)
    if run.rank == 0:
        print("\n".join(header_lines(env, args)), flush=True)
    clock = time.perf_counter()
    rounds = measure(run, args)
    elapsed = time.perf_counter() - clock
    dispatcher = {method: geode.stats().as_dict() for method, geode in geodes.items()}
    for geode in geodes.values():
        geode.close()
    comm.Free()
    if run.rank != 0:
        return 0
    numbers = summarise(args, run.workers, rounds)
    targets = evaluate_target(numbers)
    print("\n".join(table(numbers)))
    geode_over_raw = numbers["methods"][GEODE]["median_over_master_worker"]
    print(f"geode work queue over raw master/worker makespan: {geode_over_raw:.3f} (paired median)")
    print("target:")
    for item in targets:
        print(
            f"  {item['result']}  {item['target']}: {item['ratio']:.3f} "
            f"(worst repeat {item['worst']:.3f})"
        )
    settings = {
        "tasks": args.tasks,
        "min_ms": args.min_ms,
        "max_ms": args.max_ms,
        "seed": args.seed,
        "repeats": args.repeats,
        "quick": args.quick,
        "prefetch": PREFETCH,
    }
    numbers |= {"dispatcher_stats": dispatcher, "targets": targets}
    reporting.finish(args.json, "workqueue", (began, elapsed, settings, env), numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
