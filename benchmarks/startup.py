"""Start-up: a whole geode_mpi job's launch beside a bare mpi4py one (issue 17: within 2x).

Run as ``python benchmarks/startup.py`` (plain python, not under mpiexec): it launches, in turn
and for ``--repeats`` rounds, ``mpiexec -n 4 python -c "from mpi4py import MPI;
MPI.COMM_WORLD.Barrier()"`` (bare), the same after ``import geode_mpi`` (import), a job that
sends one message through the runner (``python -m geode_mpi benchmarks/startup_job.py``:
runner) and without it (``python benchmarks/startup_job.py``: plain), and from 3 ranks
``python -m geode_mpi jobs/hello.py`` (hello), each timed from the launch to the launcher's
exit, with a timeout. The order rotates from round to round; the ratios are the
medians of each round's paired ratios. geode_mpi's modules are byte-compiled first, as
``pip install`` leaves them (with ``PYTHONDONTWRITEBYTECODE`` set, an editable install never
caches them and every rank compiles every module at every start; ``--no-compile`` measures that).
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import launch
import reporting
from common import write_json
from suite import child_env, mpiexec
from timing import paired, rotated, spread

ROOT = Path(__file__).resolve().parent.parent
BARE = "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"
JOB = "benchmarks/startup_job.py"  # one message, at any rank count
METHODS = {
    "bare": ["-c", BARE],
    "import": ["-c", f"import geode_mpi; {BARE}"],
    "runner": ["-m", "geode_mpi", JOB],
    "plain": [JOB],
    "hello": ["-m", "geode_mpi", "jobs/hello.py"],  # from 3 ranks: it sends node1 to node2
}
JOBS = ("runner", "plain", "hello")  # what the target applies to
TARGET = 2.0  # a job / bare (issue 17)


def methods(ranks: int) -> dict[str, list[str]]:
    """The methods this rank count can run (hello needs node2)."""
    return {name: argv for name, argv in METHODS.items() if name != "hello" or ranks >= 3}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time a 4-rank geode_mpi hello job's launch beside a bare mpi4py start "
        "(alternating, many rounds, medians of paired ratios).",
    )
    parser.add_argument("--ranks", type=int, default=4, help="MPI ranks (4)")
    parser.add_argument("--mpiexec", default=None, help="the launcher (default: this venv's)")
    parser.add_argument("--python", default=sys.executable, help="the ranks' Python")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per launch (120)")
    parser.add_argument(
        "--no-compile", action="store_true", help="leave geode_mpi's bytecode as it is"
    )
    launch.json_option(parser, "startup")
    launch.scaled_options(
        parser, {"repeats": (15, 3, "rounds, each launching every method once")}, "3 rounds"
    )
    args = launch.parse_scaled(parser, argv, {"repeats": (15, 3, "")})
    launch.at_least_one(parser, args, ["ranks"])
    return args


def bytecode_cached() -> bool:
    """Whether every geode_mpi module has bytecode beside it that Python will use."""
    for path in (ROOT / "geode_mpi").rglob("*.py"):
        cached = Path(importlib.util.cache_from_source(str(path)))
        if not cached.exists() or cached.stat().st_mtime < path.stat().st_mtime:
            return False
    return True


def time_launch(command: list[str], timeout: float) -> float:
    """Seconds from starting ``command`` to its exit.

    Raises:
        RuntimeError: it failed or timed out (its output said).
    """
    began = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout
    )
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    """Each method's seconds per round."""
    launcher = [args.mpiexec or mpiexec(), "-n", str(args.ranks), args.python]
    chosen = methods(args.ranks)
    times: dict[str, list[float]] = {name: [] for name in chosen}
    time_launch(launcher + METHODS["runner"], args.timeout)  # warm the file cache
    for turn in range(args.repeats):
        for name in rotated(list(chosen), turn):
            times[name].append(time_launch(launcher + chosen[name], args.timeout))
    return times


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.no_compile:
        compileall.compile_dir(ROOT / "geode_mpi", quiet=1)
    cached = bytecode_cached()
    began = time.time()
    times = measure(args)
    ratios = {name: paired(times[name], times["bare"]) for name in times if name != "bare"}
    report: dict[str, Any] = {
        "benchmark": "startup",
        "started": reporting.started(),
        "seconds": time.time() - began,
        "settings": {**vars(args), "json": str(args.json), "bytecode_cached": cached},
        "load_average": os.getloadavg(),
        "times": times,
        "medians": {name: statistics.median(values) for name, values in times.items()},
        "ratios": {name: statistics.median(values) for name, values in ratios.items()},
        "ratio_spread": {name: spread(values) for name, values in ratios.items()},
    }
    table = reporting.Table([("method", 8), ("median s", 10), ("min s", 8), ("/ bare", 8)])
    lines = [f"{args.ranks} ranks, {args.repeats} rounds, geode_mpi bytecode cached: {cached}"]
    lines += table.head()
    for name, values in times.items():
        ratio = f"{report['ratios'][name]:.2f}" if name in ratios else "1"
        median, least = statistics.median(values), min(values)
        lines.append(table.row([name, f"{median:.3f}", f"{least:.3f}", ratio]))
    for name in (name for name in JOBS if name in ratios):
        ratio, q = report["ratios"][name], report["ratio_spread"][name]
        verdict = "PASS" if ratio <= TARGET else "FAIL"
        lines.append(
            f"target: {verdict}  {name} within {TARGET:g}x a bare mpi4py start: {ratio:.2f} "
            f"(quartiles {q['q1']:.2f}-{q['q3']:.2f})"
        )
    lines.append("load average " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print("\n".join(lines))
    print(f"all numbers in {write_json(args.json, report, 'startup')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
