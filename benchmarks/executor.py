"""The sweep through geode's executor beside mpi4py.futures' MPICommExecutor, in the same run.

Run as ``mpiexec -n 4 python benchmarks/executor.py`` (2 ranks or more; ``--help`` for the
options). Rank 0 is the client of both executors, every other rank a worker. Each task sleeps a
seeded 5 to 50 ms, as in jobs/sweep.py (so ranks sharing a core do not distort it), and returns
its input. Each repeat runs the same tasks through ``geode.executor().map`` and through
``MPICommExecutor(comm, root=0).map``, in an order that rotates from repeat to repeat, and the
ratio of their makespans is taken within the repeat (paired).

Two figures per round, both on rank 0's clock:
- **makespan**: from ``map()`` until its last result, inside a block that already ran a warm-up
  map of one short task per worker (the executor's own start-up left out);
- **block**: from a barrier of every rank until the client left its ``with`` block: start-up,
  the warm-up, the sweep and shutdown, what a script pays for one executor block.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import launch
import reporting
from common import environment
from launch import Scaled
from timing import barrier_then_clock, paired, rotated, spread
from workqueue import check_durations, draw, duration_options, model_makespan

from geode_mpi import Geode

GEODE, FUTURES = "geode executor", "mpi4py.futures"
METHODS = (GEODE, FUTURES)
MAX_RATIO = 1.05  # target: geode's makespan within 5% of mpi4py.futures' (or better)
SCALED: Scaled = {
    "tasks": (100, 30, "tasks per round"),
    "repeats": (7, 3, "rounds per method; medians and paired ratios over them"),
}
WARM_MS = 1.0  # the warm-up's tasks


def sweep_task(seconds: float) -> float:
    """One point of the sweep: its simulation stands for a sleep."""
    time.sleep(seconds)
    return seconds


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The sweep workload (tasks sleeping 5-50 ms, seeded) through geode's "
        "executor and mpi4py.futures' MPICommExecutor in the same run, alternating: makespans "
        "and their paired ratio. Run with 2 ranks or more: mpiexec -n 4 python "
        "benchmarks/executor.py",
    )
    duration_options(parser, seed=1)
    parser.add_argument("--prefetch", type=int, default=1, help="geode's prefetch (1)")
    launch.scaled_options(parser, SCALED, "a smoke test of a few seconds")
    launch.json_option(parser, "executor")
    args = launch.parse_scaled(parser, argv, SCALED)
    check_durations(parser, args)
    if args.prefetch < 1:
        parser.error(f"--prefetch must be >= 1, got {args.prefetch}")
    return args


# -- one round: the same script on every rank, the executor's idiom -----------------------------


def one_round(
    comm: Any, open_block: Callable[[], Any], durations: list[float], workers: int
) -> tuple[float, float] | None:
    """Enter an executor block on every rank; on the client, a warm-up map, then the sweep.
    Rank 0 returns (makespan, block) in seconds, the others None."""
    makespan = 0.0
    start = barrier_then_clock(comm, time.perf_counter)
    with open_block() as ex:
        if ex is not None:
            list(ex.map(sweep_task, [WARM_MS / 1e3] * workers))
            began = time.perf_counter()
            results = list(ex.map(sweep_task, durations))
            makespan = time.perf_counter() - began
            if results != durations:
                raise RuntimeError(f"{len(results)} results out of order or wrong")
    block = time.perf_counter() - start
    return (makespan, block) if comm.Get_rank() == 0 else None


def measure(comm: Any, geode: Geode, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """A warm-up round of each method, then the repeats, methods rotating; rank 0's figures."""
    from mpi4py.futures import MPICommExecutor

    workers = comm.Get_size() - 1
    blocks: dict[str, Callable[[], Any]] = {
        GEODE: lambda: geode.executor(prefetch=args.prefetch),
        FUTURES: lambda: MPICommExecutor(comm, root=0),
    }
    for method in METHODS:
        one_round(comm, blocks[method], [args.min_ms / 1e3] * (2 * workers), workers)
    figures: dict[str, dict[str, list[float]]] = {
        method: {"makespan_s": [], "block_s": []} for method in METHODS
    }
    for repeat in range(args.repeats):
        durations = draw(args, repeat)
        for method in rotated(METHODS, repeat):
            found = one_round(comm, blocks[method], durations, workers)
            if found is not None:
                figures[method]["makespan_s"].append(found[0])
                figures[method]["block_s"].append(found[1])
    return figures


# -- reporting ---------------------------------------------------------------------------------


def summarise(
    args: argparse.Namespace, workers: int, figures: dict[str, dict[str, list[float]]]
) -> dict[str, Any]:
    draws = [draw(args, repeat) for repeat in range(args.repeats)]
    ideal = [sum(durations) / workers for durations in draws]
    numbers: dict[str, Any] = {"ideal_s": ideal, "methods": {}}
    for method in METHODS:
        record: dict[str, Any] = dict(figures[method])
        record["over_ideal"] = paired(record["makespan_s"], ideal)
        for key in ("makespan_s", "block_s", "over_ideal"):
            record[f"median_{key}"] = statistics.median(record[key])
        numbers["methods"][method] = record
    ours, theirs = numbers["methods"][GEODE], numbers["methods"][FUTURES]
    for key in ("makespan_s", "block_s"):
        ratios = paired(ours[key], theirs[key])
        numbers[f"geode_over_futures_{key.removesuffix('_s')}"] = {
            "ratios": ratios,
            "median": statistics.median(ratios),
            **spread(ratios),
        }
    numbers["model_over_ideal"] = {
        "prefetch": statistics.median(
            paired([model_makespan(d, workers, args.prefetch) for d in draws], ideal)
        ),
        "ask_when_done": statistics.median(
            paired([model_makespan(d, workers, 0) for d in draws], ideal)
        ),
    }
    return numbers


def table(numbers: dict[str, Any]) -> list[str]:
    grid = reporting.Table(
        (("method", 18), ("makespan ms", 13), ("x ideal", 9), ("block ms", 10), ("model", 8))
    )
    models = numbers["model_over_ideal"]
    lines = grid.head()
    for method, model in ((GEODE, models["prefetch"]), (FUTURES, models["ask_when_done"])):
        record = numbers["methods"][method]
        lines.append(
            grid.row(
                [
                    method,
                    f"{record['median_makespan_s'] * 1e3:.1f}",
                    f"{record['median_over_ideal']:.3f}",
                    f"{record['median_block_s'] * 1e3:.1f}",
                    f"{model:.3f}",
                ]
            )
        )
    lines.append(grid.rule)
    for key, what in (("makespan", "makespan"), ("block", "whole block")):
        found = numbers[f"geode_over_futures_{key}"]
        lines.append(
            f"geode / mpi4py.futures, {what}: {found['median']:.3f} (paired median; "
            f"range {found['min']:.3f}-{found['max']:.3f})"
        )
    lines += [
        f"ideal: total work / workers, median {statistics.median(numbers['ideal_s']) * 1e3:.1f} ms;"
        " makespan: map() to its last result, warm; block: barrier to the client's block exit",
        "model: x ideal of each method's scheduling with no overhead and exact sleeps (geode "
        "hands out prefetch tasks ahead; mpi4py.futures sends a task when one finishes)",
    ]
    return lines


def evaluate_target(numbers: dict[str, Any]) -> list[dict[str, Any]]:
    found = numbers["geode_over_futures_makespan"]
    return [
        {
            "target": f"geode executor makespan <= {MAX_RATIO:.2f} x mpi4py.futures'",
            "ratio": found["median"],
            "worst": found["max"],
            "result": "PASS" if found["median"] <= MAX_RATIO else "FAIL",
        }
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    MPI = launch.start_mpi("executor.py", 2, why=" (a client and a worker)", suggest=4)
    if MPI is None:
        return 2
    geode = Geode()  # collective; from here an exception on one rank aborts the job
    comm = MPI.COMM_WORLD.Dup()
    rank, workers = comm.Get_rank(), comm.Get_size() - 1
    began = reporting.started()
    env = environment(MPI)
    if rank == 0:
        title = (
            f"geode_mpi {env['geode_mpi']} executor beside mpi4py.futures' MPICommExecutor, "
            f"{reporting.ranks_on_cores(env)}: rank 0 the client, {workers} worker(s); "
            f"{args.tasks} tasks of {args.min_ms:g}-{args.max_ms:g} ms (sleeps, seed "
            f"{args.seed}+repeat); {args.repeats} interleaved repeats, prefetch {args.prefetch}"
        )
        print("\n".join(reporting.header(env, title, args.quick)), flush=True)
    clock = time.perf_counter()
    figures = measure(comm, geode, args)
    elapsed = time.perf_counter() - clock
    geode.close()
    comm.Free()
    if rank != 0:
        return 0
    numbers = summarise(args, workers, figures)
    targets = evaluate_target(numbers)
    print("\n".join(table(numbers)))
    print("target:")
    for item in targets:
        print(
            f"  {item['result']}  {item['target']}: {item['ratio']:.3f} "
            f"(worst repeat {item['worst']:.3f})"
        )
    settings = {key: getattr(args, key) for key in ("tasks", "min_ms", "max_ms", "seed")}
    settings |= {"repeats": args.repeats, "prefetch": args.prefetch, "quick": args.quick}
    numbers["targets"] = targets
    reporting.finish(args.json, "executor", (began, elapsed, settings, env), numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
