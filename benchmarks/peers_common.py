"""What peers.py's launches share: the workloads, their payloads, the child's options and file.

Every peer runs the same workloads (see benchmarks/README.md, "Where geode_mpi stands"); a
launch of one peer (``peers_mpi.py`` under mpiexec, ``peers_local.py`` as a local process) runs
some of them and writes one JSON file of figures, which peers.py turns into ratios to raw mpi4py.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

MiB = 1 << 20
ARRAYS = {"pingpong_1MiB": MiB, "pingpong_16MiB": 16 * MiB}
FANOUT_BYTES = 16 * MiB
RECEIVERS = 3  # fan-out receivers, task-farm workers
STARTUP_WORKERS = 4
# name -> (what it measures, unit, "lower" or "higher" is better)
WORKLOADS: dict[str, tuple[str, str, str]] = {
    "pingpong_dict": ("round trip of a small dict", "us", "lower"),
    "pingpong_1MiB": ("round trip of a 1 MiB float64 array", "us", "lower"),
    "pingpong_16MiB": ("round trip of a 16 MiB float64 array", "ms", "lower"),
    "rate": ("small dicts streamed, 64 in flight", "msg/s", "higher"),
    "fanout": (f"a 16 MiB array to {RECEIVERS} receivers, acknowledged", "ms", "lower"),
    "farm": (f"makespan of a task sweep on {RECEIVERS} workers", "s", "lower"),
    "startup": (f"launch to a first round trip with {STARTUP_WORKERS} workers", "s", "lower"),
}
SCALE = {"us": 1e6, "ms": 1e3, "s": 1.0, "msg/s": 1.0}
PAIR = ("pingpong_dict", "pingpong_1MiB", "pingpong_16MiB", "rate")  # 2 processes
GROUP = ("fanout", "farm")  # a root and RECEIVERS others
TIMEOUT = 120.0  # seconds any one wait inside a workload may take
BUDGET = 20  # a workload's timed loops take at most about this many times --seconds

T = TypeVar("T")


def payload_bytes(workload: str, args: argparse.Namespace) -> int:
    """The array a workload sends (0: none); ``--small`` (peers.py's ``--quick``) divides it
    by 16, so that a smoke run of the slowest peer takes seconds."""
    nbytes = FANOUT_BYTES if workload == "fanout" else ARRAYS.get(workload, 0)
    return nbytes // 16 if args.small else nbytes


def small_dict(step: int) -> dict[str, Any]:
    """The small message every peer sends (pickled by all but geode's own codec)."""
    return {"step": step, "value": 0.5, "label": "hello world"}


def array(nbytes: int) -> np.ndarray[Any, Any]:
    """A float64 array of ``nbytes`` whose values say which one it is."""
    return np.arange(nbytes // 8, dtype=np.float64)


def check_array(got: Any, nbytes: int, who: str) -> None:
    """Raise unless ``got`` is the array `array` makes (so garbage is never timed)."""
    if not (isinstance(got, np.ndarray) and got.nbytes == nbytes and got[-1] == nbytes // 8 - 1):
        raise RuntimeError(f"{who}: expected a float64 array of {nbytes} bytes, got {got!r:.80}")


def durations(tasks: int, seed: int, low_ms: float = 1.0, high_ms: float = 10.0) -> list[float]:
    """A sweep's task durations (s): varying tenfold, the same for every peer of a seed."""
    rng = random.Random(seed)
    return [rng.uniform(low_ms, high_ms) / 1e3 for _ in range(tasks)]


def sleep_task(seconds: float) -> tuple[float, float]:
    """A task: work by sleeping (ranks sharing a core do not distort it); its start and end."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def identity(obj: T) -> T:
    return obj


def take(obj: Any) -> None:
    """A receiver that only holds what it got (the rate and fan-out workloads' remote call)."""
    del obj


def windowed(submit: Callable[[int], T], wait: Callable[[T], Any], n: int, window: int) -> None:
    """Start ``n`` sends, at most ``window`` unfinished: the oldest is waited for first."""
    pending: deque[T] = deque()
    for step in range(n):
        pending.append(submit(step))
        if len(pending) >= window:
            wait(pending.popleft())
    for handle in pending:
        wait(handle)


def count_for(per_op: float, target_s: float, least: int = 1, most: int = 100_000) -> int:
    """How many operations fill about ``target_s`` at ``per_op`` seconds each."""
    return max(least, min(most, int(target_s / max(per_op, 1e-9))))


def farm_figures(start: float, spans: Iterable[tuple[float, float]], workers: int) -> list[float]:
    """[makespan, ideal]: the last task's end after ``start``, and the measured work (the tasks'
    own spans) spread evenly over the workers."""
    spans = list(spans)
    work = sum(end - begin for begin, end in spans)
    return [max(end for _, end in spans) - start, work / workers]


def timed_loops(
    loop: Callable[[int], float],
    args: argparse.Namespace,
    agree: Callable[[int], int] = lambda count: count,
    rate: bool = False,
    least: int = 3,
) -> dict[str, Any]:
    """Warm up (and check) with ``least`` operations, then time ``args.repeats`` loops of as
    many as fill ``args.seconds``; ``loop(n)`` returns the seconds n operations took. The
    figure is seconds per operation, or operations per second with ``rate``. ``agree`` makes
    every rank of an MPI job take rank 0's count."""
    per_op = loop(least) / least
    count = agree(count_for(per_op, args.seconds, least))
    # a peer that takes far longer than the others gets fewer repeats (at least one)
    repeats = agree(max(1, min(args.repeats, int(BUDGET * args.seconds / (per_op * count)))))
    values = []
    for _ in range(repeats):
        elapsed = loop(count)
        values.append(count / elapsed if rate else elapsed / count)
    return summary(values, {"count": count})


def farm_rounds(
    round_: Callable[[list[float]], list[float] | None], args: argparse.Namespace
) -> dict[str, Any] | None:
    """A warm-up round, then ``args.repeats`` sweeps of ``args.tasks`` tasks (repeat r draws
    with seed + r, as every peer does); ``round_`` returns [makespan, ideal] on the root and
    None elsewhere. The figure is the makespan."""
    round_([0.001] * 2 * RECEIVERS)
    found = [round_(durations(args.tasks, args.seed + r)) for r in range(args.repeats)]
    if any(f is None for f in found):
        return None
    spans = [f for f in found if f is not None]
    ideal = [f[1] for f in spans]
    extra = {"ideal": ideal, "over_ideal": statistics.median(f[0] / f[1] for f in spans)}
    return summary([f[0] for f in spans], extra | {"tasks": args.tasks})


# -- the child's command line and file ----------------------------------------------------------


def child_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--workloads", required=True, help="comma-separated, of WORKLOADS")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="per timed loop")
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--small", action="store_true", help="arrays 16 times smaller")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"--workloads must name workloads of {', '.join(WORKLOADS)}, got {unknown}")
    return args


def summary(values: Sequence[float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One workload's record: every repeat's figure and their median (seconds or msg/s)."""
    return {"median": statistics.median(values), "repeats": list(values)} | (extra or {})


def write_figures(
    args: argparse.Namespace, figures: dict[str, Any], versions: dict[str, str]
) -> None:
    record = {"peer": args.peer, "workloads": figures, "versions": versions}
    args.json.write_text(json.dumps(record, indent=1) + "\n")
