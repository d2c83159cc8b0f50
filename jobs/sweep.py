"""A parameter sweep: node0 puts tasks on a work queue, the other nodes run them, node0 checks.

The sweep maps the chaos of the logistic map x -> r x (1 - x): each task is one growth rate r
in [2.8, 4.0], and its result is the map's Lyapunov exponent there (negative: the orbit
settles; positive: chaos). Each task stands in for a simulation run whose cost varies tenfold:
it sleeps a seeded 5 to 50 ms, then computes the exponent with numpy.

node0 puts every task on the work queue ``sweep`` (which hands each one to exactly one worker,
by load) and collects the results from the topic ``results``, which every worker publishes
on. It checks that every task came back exactly once with the value it computes itself, writes
an HDF5 summary to ``--out`` and prints one line. The file holds the datasets ``task``, ``r``,
``cost_ms`` (the planned sleep), ``lyapunov``, ``worker`` (the node that ran it) and
``seconds`` (how long it took there), one row per result, in task order, and the attributes
``tasks``, ``seed``, ``workers`` (worker nodes), ``worker_ranks`` (the ranks they run on, which
is what works in parallel), ``makespan`` (seconds from the first put to the last result),
``ideal_makespan`` (total task seconds / worker_ranks) and ``balance`` (makespan / ideal).

Runs on 2 ranks or more (node0 is the master, nodes 1.. the workers) and in one process (the
three workers then take turns, so the makespan is the total work)::

    python jobs/sweep.py --out sweep.h5                      # one process: node0..node3
    mpiexec -n 2 python -m geode_mpi jobs/sweep.py           # 1 worker
    mpiexec -n 4 python -m geode_mpi jobs/sweep.py --tasks 60 --seed 3 --out sweep.h5

It prints, for example, ``sweep OK: 40 tasks, 3 workers on 3 ranks, makespan 0.41 s, ideal
0.36 s, balance 1.15, wrote sweep.h5``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from typing import Any

import h5py
import numpy as np

from geode_mpi import Geode, Message

TIMEOUT = 60.0  # seconds any one get or receive may wait
R_RANGE = (2.8, 4.0)
COST_MS = (5.0, 50.0)


class Task(Message):
    """One point of the sweep: data is (task index, r, cost in ms)."""


class Result(Message):
    """A worker's answer to one task: data is a dict (task, lyapunov, worker, seconds)."""


def plan(tasks: int, seed: int) -> list[tuple[int, float, float]]:
    """The sweep's tasks: evenly spaced r, each with a seeded cost."""
    rng = random.Random(seed)
    return [
        (k, float(r), rng.uniform(*COST_MS)) for k, r in enumerate(np.linspace(*R_RANGE, tasks))
    ]


def lyapunov(r: float, iterations: int = 300, orbits: int = 64) -> float:
    """The logistic map's Lyapunov exponent at ``r``: the mean of log|r (1 - 2x)| along
    ``orbits`` orbits, after a transient of 100 steps."""
    x = np.linspace(0.1, 0.9, orbits)
    for _ in range(100):
        x = r * x * (1.0 - x)
    total = np.zeros(orbits)
    for _ in range(iterations):
        x = r * x * (1.0 - x)
        total += np.log(np.abs(r * (1.0 - 2.0 * x)) + 1e-300)
    return float(total.mean() / iterations)


def run_task(task: Task, node: str) -> Result:
    start = time.perf_counter()
    index, r, cost_ms = task.data
    time.sleep(cost_ms / 1000.0)  # the simulation this point of the sweep stands for
    value = lyapunov(r)
    seconds = time.perf_counter() - start
    return Result({"task": index, "lyapunov": value, "worker": node, "seconds": seconds})


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40, help="points in the sweep, default 40")
    parser.add_argument("--out", default="sweep.h5", help="the HDF5 summary, default sweep.h5")
    parser.add_argument("--seed", type=int, default=1, help="seeds the task costs, default 1")
    args = parser.parse_args()
    if args.tasks < 1:
        parser.error(f"--tasks must be >= 1, got {args.tasks}")
    return args


def main() -> None:
    args = parse_args()
    tasks = plan(args.tasks, args.seed)
    with Geode() as geode:
        if len(geode.nodes) < 2:
            raise SystemExit("the sweep needs 2 nodes or more: node0 and at least one worker")
        collected, summary = sweep(geode, tasks)
    if geode.rank == 0:  # node0's rank
        check(tasks, collected)
        print(write(args, tasks, collected, summary), flush=True)


def sweep(
    geode: Geode, tasks: list[tuple[int, float, float]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the sweep on every rank; node0's rank gets the results and the timings."""
    master, workers = geode.nodes[0], geode.nodes[1:]
    queue = geode.work_queue("sweep", consumers=workers, dispatcher=master, producers=[master])
    results = geode.topic("results", publishers=workers, subscribers=[master])
    start = time.perf_counter()
    if geode.hosts(master):
        for task in tasks:
            queue.put(Task(task), source=master, timeout=TIMEOUT)
        queue.finish(source=master)
    # This rank's workers (all three in one process) take turns until the queue runs dry.
    mine = [node for node in geode.local_nodes if node in workers]
    while mine:
        for node in list(mine):
            task = queue.get(node, timeout=TIMEOUT)
            if task is None:
                mine.remove(node)
            else:
                results.publish(run_task(task, node), source=node)
    collected: list[dict[str, Any]] = []
    makespan = 0.0
    if geode.hosts(master):
        for _ in tasks:
            collected.append(geode.receive(master, topic=results, timeout=TIMEOUT).data)
        makespan = time.perf_counter() - start
    queue.serve(timeout=TIMEOUT)  # on node0's rank: until every worker was told "no more"
    geode.close(timeout=TIMEOUT)
    if geode.hosts(master):
        # close() delivered everything in flight, so a duplicate result would be queued now.
        while (extra := geode.try_receive(master, topic=results)) is not None:
            collected.append(extra.data)
    worker_ranks = len({geode.rank_of(node) for node in workers})
    summary = {"workers": len(workers), "worker_ranks": worker_ranks, "makespan": makespan}
    return collected, summary


def check(tasks: list[tuple[int, float, float]], collected: list[dict[str, Any]]) -> None:
    """Every task exactly once, with the value node0 computes itself; exit 1 otherwise."""
    counts: dict[int, int] = {}
    for result in collected:
        counts[result["task"]] = counts.get(result["task"], 0) + 1
    missing = [k for k, _, _ in tasks if k not in counts]
    twice = sorted(k for k, count in counts.items() if count > 1)
    unknown = sorted(k for k in counts if not 0 <= k < len(tasks))
    if missing or twice or unknown:
        raise SystemExit(
            f"sweep FAILED: tasks missing {missing}, returned more than once {twice}, "
            f"unknown {unknown} ({len(collected)} results for {len(tasks)} tasks)"
        )
    for result in collected:
        k = result["task"]
        want = lyapunov(tasks[k][1])
        if not math.isclose(result["lyapunov"], want, rel_tol=1e-12, abs_tol=1e-12):
            raise SystemExit(
                f"sweep FAILED: task {k} (r = {tasks[k][1]}) came back from {result['worker']} "
                f"with {result['lyapunov']!r}, node0 computes {want!r}"
            )


def write(
    args: argparse.Namespace,
    tasks: list[tuple[int, float, float]],
    collected: list[dict[str, Any]],
    summary: dict[str, Any],
) -> str:
    """Write the HDF5 summary; return the line to print."""
    by_task = sorted(collected, key=lambda result: result["task"])
    seconds = np.array([result["seconds"] for result in by_task])
    ideal = float(seconds.sum()) / summary["worker_ranks"]
    balance = summary["makespan"] / ideal
    with h5py.File(args.out, "w") as f:
        f["task"] = np.array([result["task"] for result in by_task])
        f["r"] = np.array([tasks[result["task"]][1] for result in by_task])
        f["cost_ms"] = np.array([tasks[result["task"]][2] for result in by_task])
        f["lyapunov"] = np.array([result["lyapunov"] for result in by_task])
        f.create_dataset(
            "worker", data=[result["worker"] for result in by_task], dtype=h5py.string_dtype()
        )
        f["seconds"] = seconds
        f.attrs.update(
            tasks=len(tasks),
            seed=args.seed,
            workers=summary["workers"],
            worker_ranks=summary["worker_ranks"],
            makespan=summary["makespan"],
            ideal_makespan=ideal,
            balance=balance,
        )
    workers, ranks = summary["workers"], summary["worker_ranks"]
    return (
        f"sweep OK: {plural(len(tasks), 'task')}, {plural(workers, 'worker')} on "
        f"{plural(ranks, 'rank')}, makespan {summary['makespan']:.2f} s, ideal {ideal:.2f} s, "
        f"balance {balance:.2f}, wrote {args.out}"
    )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


if __name__ == "__main__":
    main()
