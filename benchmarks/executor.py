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

``--small``: what a task costs, trivial tasks by ``map`` with chunksize 1 and 100, beside
ThreadPoolExecutor (one rank, the embedded world) or mpi4py.futures and a hand-written mpi4py
loop (2 ranks or more), in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    "calls": (2000, 400, "trivial tasks per round with --small"),
}
CHUNK = 100  # --small's grouped map: chunksize=CHUNK
WARM_MS = 1.0  # the warm-up's tasks


def sweep_task(seconds: float) -> float:
    """One point of the sweep: its simulation stands for a sleep."""
    time.sleep(seconds)
    return seconds


def echo(value: float) -> float:
    """--small's task: nothing but its cost as a task."""
    return value


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
    small = f"trivial tasks, not the sweep: us a task, chunksize 1 and {CHUNK} (1 rank or more)"
    parser.add_argument("--small", action="store_true", help=small)
    launch.scaled_options(parser, SCALED, "a smoke test of a few seconds")
    launch.json_option(parser, "executor")
    args = launch.parse_scaled(parser, argv, SCALED)
    check_durations(parser, args)
    if args.prefetch < 1:
        parser.error(f"--prefetch must be >= 1, got {args.prefetch}")
    return args


# -- one round: the same script on every rank, the executor's idiom -----------------------------


def one_round(
    comm: Any,
    open_block: Callable[[], Any],
    durations: list[float],
    workers: int,
    task: Callable[[float], float] = sweep_task,
    chunksize: int = 1,
) -> tuple[float, float] | None:
    """Enter an executor block on every rank; on the client, a warm-up map, then the sweep
    (``task`` over ``durations``). Rank 0 returns (makespan, block) in seconds, the others
    None."""
    makespan = 0.0
    start = barrier_then_clock(comm, time.perf_counter)
    with open_block() as ex:
        if ex is not None:
            list(ex.map(task, [WARM_MS / 1e3] * workers))
            began = time.perf_counter()
            results = list(ex.map(task, durations, chunksize=chunksize))
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


# -- --small: what one task costs --------------------------------------------------------------


def mpi_loop(comm: Any, inputs: list[float]) -> tuple[float, float] | None:
    """The hand-written baseline: rank 0 sends each worker a task, then the next one as each
    result comes back (mpi4py's pickled send and recv). Rank 0 returns (makespan, makespan)."""
    from mpi4py import MPI

    start = barrier_then_clock(comm, time.perf_counter)
    if comm.Get_rank() != 0:
        while (task := comm.recv(source=0)) is not None:
            comm.send((task[0], echo(task[1])), dest=0)
        return None
    results, status, sent = [0.0] * len(inputs), MPI.Status(), 0
    for worker in range(1, min(comm.Get_size(), len(inputs) + 1)):
        comm.send((sent, inputs[sent]), dest=worker)
        sent += 1
    for _ in inputs:
        index, value = comm.recv(source=MPI.ANY_SOURCE, status=status)
        results[index] = value
        if sent < len(inputs):
            comm.send((sent, inputs[sent]), dest=status.Get_source())
            sent += 1
    for worker in range(1, comm.Get_size()):
        comm.send(None, dest=worker)
    makespan = time.perf_counter() - start
    if results != inputs:
        raise RuntimeError("the mpi4py loop's results are wrong")
    return makespan, makespan


def small_methods(
    comm: Any, geode: Geode, args: argparse.Namespace
) -> dict[str, Callable[[], tuple[float, float] | None]]:
    """--small's methods, by name: geode's executor with chunksize 1 and `CHUNK`, then the
    baselines of this rank count."""
    from mpi4py.futures import MPICommExecutor

    inputs = [float(k) for k in range(args.calls)]
    workers = max(comm.Get_size() - 1, 1)

    def rounds(open_block: Callable[[], Any], chunksize: int) -> Callable[[], Any]:
        return lambda: one_round(comm, open_block, inputs, workers, echo, chunksize)

    def ours() -> Any:
        return geode.executor(prefetch=args.prefetch)

    def futures() -> Any:
        return MPICommExecutor(comm, root=0)

    methods = {
        "geode, chunksize=1": rounds(ours, 1),
        f"geode, chunksize={CHUNK}": rounds(ours, CHUNK),
    }
    if comm.Get_size() == 1:
        methods["ThreadPoolExecutor(1)"] = rounds(lambda: ThreadPoolExecutor(1), 1)
        return methods
    methods["mpi4py.futures, chunksize=1"] = rounds(futures, 1)
    methods[f"mpi4py.futures, chunksize={CHUNK}"] = rounds(futures, CHUNK)
    methods["mpi4py loop"] = lambda: mpi_loop(comm, inputs)
    return methods


def measure_small(comm: Any, geode: Geode, args: argparse.Namespace) -> dict[str, Any]:
    """A warm-up round of each method, then the repeats, methods rotating: rank 0's us a task
    of each, their paired ratios (geode's over each other method's), and the medians."""
    methods = small_methods(comm, geode, args)
    for run in methods.values():
        run()
    us: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        for name in rotated(list(methods), repeat):
            found = methods[name]()
            if found is not None:
                us[name].append(found[0] / args.calls * 1e6)
    numbers: dict[str, Any] = {"methods": {}, "ratios": {}}
    if comm.Get_rank() != 0:
        return numbers
    for name, values in us.items():
        numbers["methods"][name] = {"us_per_task": values, "median_us": statistics.median(values)}
    grouped = f"chunksize={CHUNK}"
    pairs = [(f"geode, {grouped}", f"mpi4py.futures, {grouped}")]
    pairs += [("geode, chunksize=1", name) for name in us if not name.endswith(grouped)]
    pairs.append(("geode, chunksize=1", f"geode, {grouped}"))
    for top, bottom in pairs:
        if top != bottom and bottom in us:
            ratios = paired(us[top], us[bottom])
            numbers["ratios"][f"{top} / {bottom}"] = {
                "ratios": ratios,
                "median": statistics.median(ratios),
                **spread(ratios),
            }
    return numbers


def small_table(numbers: dict[str, Any]) -> list[str]:
    grid = reporting.Table((("method", 34), ("us a task", 11), ("range", 16)))
    lines = grid.head()
    for name, record in numbers["methods"].items():
        low, high = min(record["us_per_task"]), max(record["us_per_task"])
        lines.append(grid.row([name, f"{record['median_us']:.1f}", f"{low:.1f}-{high:.1f}"]))
    lines.append(grid.rule)
    for name, found in numbers["ratios"].items():
        lines.append(
            f"{name}: {found['median']:.2f} (paired median; range "
            f"{found['min']:.2f}-{found['max']:.2f})"
        )
    return [*lines, "us a task: map() to its last result, warm, over the calls it made"]


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


def main_small(MPI: Any, args: argparse.Namespace) -> int:
    """--small: trivial tasks, us a task, beside the baselines of this rank count."""
    # One rank: the embedded world (node1 runs the tasks in the executor's thread).
    geode = Geode(["node0", "node1"]) if MPI.COMM_WORLD.Get_size() == 1 else Geode()
    comm = MPI.COMM_WORLD.Dup()
    began = reporting.started()
    env = environment(MPI)
    if comm.Get_rank() == 0:
        title = (
            f"geode_mpi {env['geode_mpi']} executor, trivial tasks, {reporting.ranks_on_cores(env)}"
            f": {args.calls} tasks a round, {args.repeats} interleaved repeats, prefetch "
            f"{args.prefetch}"
        )
        print("\n".join(reporting.header(env, title, args.quick)), flush=True)
    clock = time.perf_counter()
    numbers = measure_small(comm, geode, args) | {"chunksize": CHUNK}
    elapsed = time.perf_counter() - clock
    geode.close()
    if comm.Get_rank() == 0:
        print("\n".join(small_table(numbers)))
        settings = {key: getattr(args, key) for key in ("calls", "repeats", "prefetch", "quick")}
        reporting.finish(args.json, "executor-small", (began, elapsed, settings, env), numbers)
    comm.Free()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    least = 1 if args.small else 2
    MPI = launch.start_mpi("executor.py", least, why=" (a client and a worker)", suggest=4)
    if MPI is None:
        return 2
    if args.small:
        return main_small(MPI, args)
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
