"""Run every benchmark beside its raw baseline and report them together: JSON, summary, plots.

Run as ``python benchmarks/suite.py [--quick] [--out DIR]`` (not under mpiexec: it launches each
benchmark under mpiexec itself, each with a timeout; ``--mpiexec`` and ``--python`` pick another
MPI). See benchmarks/README.md, "The whole suite".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import RESULTS, revision, write_json
from suite_report import console_summary, write_report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Variables an MPI launcher sets: a benchmark launched from inside a job must not inherit them.
LAUNCH_VARIABLES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDI_", "HYDRA_", "GEODE_TRANSPORT")
# --realtime: real-time priority (root), so that other jobs on a loaded machine cannot preempt
# the ranks mid-measurement. Only for short runs of no more ranks than cores: spinning ranks at
# that priority starve everything else, their own peers included.
REALTIME = ("chrt", "-f", "1")
GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a benchmark that timed out
LOG_TAIL = 15  # lines of a failed benchmark's output printed by the suite
# What every benchmark's run shares (ranks and the CMA setting differ: see each one's JSON file).
SHARED_ENVIRONMENT = ("host", "cores", "mpi_library", "mpi4py", "thread_level", "python")
SHARED_ENVIRONMENT += ("numpy", "geode_mpi", "h5py", "hdf5")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark program: how many ranks it runs on and how long it may take.

    The program must accept ``--quick`` and ``--json PATH`` (and ``--dir DIR`` if ``scratch``),
    write its numbers to PATH on rank 0, and exit 0; exiting non-zero counts as a crash unless
    the JSON file it wrote has a failed target (it then exited to say so).
    """

    name: str
    script: Path
    ranks: int
    timeout: float  # seconds, full run
    quick_timeout: float  # seconds, with --quick
    scratch: bool = False  # takes --dir for its files, in a directory the suite deletes after
    extra: tuple[str, ...] = ()  # arguments of the command line's --args NAME=...
    prefix: tuple[str, ...] = ()  # before mpiexec: REALTIME when --realtime names it

    def command(self, mpi: MPI, result: Path, quick: bool, scratch: Path | None) -> list[str]:
        args = [*self.prefix, mpi.mpiexec, "-n", str(self.ranks), mpi.python, str(self.script)]
        args += ["--quick"] if quick else []
        args += ["--dir", str(scratch)] if scratch is not None else []
        return [*args, *self.extra, "--json", str(result)]


# The four (point-to-point, message rate, topics, checkpoints) first, then the rest.
BENCHMARKS = (
    Benchmark("pingpong", HERE / "pingpong.py", 2, timeout=300, quick_timeout=120),
    Benchmark("rate", HERE / "rate.py", 2, timeout=180, quick_timeout=120),
    Benchmark("fanout", HERE / "fanout.py", 4, timeout=300, quick_timeout=120),
    Benchmark("checkpoint", HERE / "checkpoint.py", 2, 900, 300, scratch=True),
    Benchmark("large_path", HERE / "large_path.py", 2, timeout=300, quick_timeout=120),
    Benchmark("workqueue", HERE / "workqueue.py", 4, timeout=300, quick_timeout=120),
    Benchmark("backpressure", HERE / "backpressure.py", 2, timeout=600, quick_timeout=180),
)


@dataclass(frozen=True)
class MPI:
    """The MPI the benchmarks run on: its launcher, and the Python whose mpi4py loads it."""

    mpiexec: str
    python: str


@dataclass
class Outcome:
    """What one benchmark's launch came to."""

    benchmark: Benchmark
    status: str  # "ok", "crashed" or "timed out"
    returncode: int | None
    seconds: float
    timeout: float
    command: list[str]
    result: dict[str, Any] | None  # its JSON file, if it wrote one
    detail: str = ""  # why it counts as crashed

    def record(self, out: Path) -> dict[str, Any]:
        name = self.benchmark.name
        return {
            "name": name,
            "ranks": self.benchmark.ranks,
            "status": self.status,
            "returncode": self.returncode,
            "seconds": self.seconds,
            "timeout_s": self.timeout,
            "detail": self.detail,
            "command": shlex.join(self.command),
            "json": f"{name}.json" if self.result is not None else None,
            "log": f"{name}.log" if (out / f"{name}.log").exists() else None,
        }


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None, names: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the benchmark suite (each benchmark under mpiexec at its rank count, "
        "with a timeout) and write one suite JSON, summary.md and PNG plots into a folder. "
        "Exits 1 if a benchmark crashed or timed out (a missed target is reported, not an error).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="every benchmark's --quick smoke test (a minute)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the results folder (default benchmarks/results/suite-DATE-TIME[-quick])",
    )
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated benchmarks to run, of {','.join(names)} (default: all)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds each benchmark may take, for all of them (default: each its own)",
    )
    parser.add_argument(
        "--mpiexec",
        default=None,
        help="the launcher of the MPI to measure (another MPI's: see docs/mpis.md; default the "
        "mpiexec beside this Python, else the one on PATH)",
    )
    parser.add_argument(
        "--python",
        default=None,
        help="the Python the ranks run, from a venv whose mpi4py loads that MPI (default this one)",
    )
    parser.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="more arguments for benchmark NAME (repeatable), e.g. pingpong='--sizes 8,1Mi'",
    )
    parser.add_argument(
        "--realtime",
        default=None,
        metavar="NAMES",
        help="comma-separated benchmarks to run under `chrt -f 1` (root; short runs of at most "
        "as many ranks as cores: a loaded machine then cannot preempt them)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing: redo the suite JSON, summary and plots from the JSON files in DIR",
    )
    args = parser.parse_args(argv)
    if args.only is not None:
        args.only = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in args.only if name not in names]
        if unknown or not args.only:
            parser.error(f"--only must name benchmarks of {', '.join(names)}, got {unknown}")
    args.extra = {}
    for given in args.args:
        name, _, text = given.partition("=")
        if name not in names:
            parser.error(f"--args must start with a benchmark of {', '.join(names)}, got {given!r}")
        args.extra[name] = tuple(shlex.split(text))
    args.realtime = [n.strip() for n in (args.realtime or "").split(",") if n.strip()]
    if any(name not in names for name in args.realtime):
        parser.error(f"--realtime must name benchmarks of {', '.join(names)}, got {args.realtime}")
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout:g}")
    for name in ("mpiexec", "python"):
        chosen = getattr(args, name)
        if chosen is not None and shutil.which(chosen) is None:
            parser.error(f"--{name} must name an executable, got {chosen!r}")
    if args.report is not None and not args.report.is_dir():
        parser.error(f"--report must be a folder of benchmark JSON files, got {args.report}")
    return args


# -- running -----------------------------------------------------------------------------------


def chosen_mpi(args: argparse.Namespace) -> MPI:
    """The MPI the command line chose: --mpiexec and --python, else this venv's."""
    return MPI(args.mpiexec or mpiexec(), args.python or sys.executable)


def mpiexec() -> str:
    """The mpiexec beside this Python (the venv's mpich wheel), else the one on PATH."""
    local = Path(sys.executable).parent / "mpiexec"
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("suite.py: mpiexec not found: pip install -e '.[mpich]' or an MPI")
    return found


def child_env() -> dict[str, str]:
    """This environment minus launcher variables, importing geode_mpi from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARIABLES)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def launch(command: list[str], log: Path, timeout: float) -> tuple[int | None, bool]:
    """Run ``command`` in its own process group, output to ``log``; on timeout end the group
    (SIGTERM, then SIGKILL). Returns (exit status, timed out)."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            stop(proc)
            return proc.returncode, True
        except BaseException:  # Ctrl-C: leave no ranks behind
            stop(proc)
            raise


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End the process group ``proc`` leads: SIGTERM, then SIGKILL for whatever is left of it
    after ``GRACE`` seconds (ranks that outlived mpiexec included)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=GRACE)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_one(bench: Benchmark, out: Path, mpi: MPI, quick: bool, timeout: float | None) -> Outcome:
    """Launch one benchmark and judge what it left: its exit status and its JSON file."""
    result_path, log = out / f"{bench.name}.json", out / f"{bench.name}.log"
    result_path.unlink(missing_ok=True)
    limit = timeout or (bench.quick_timeout if quick else bench.timeout)
    scratch = Path(tempfile.mkdtemp(prefix=f"geode-suite-{bench.name}-")) if bench.scratch else None
    command = bench.command(mpi, result_path, quick, scratch)
    start = time.monotonic()
    try:
        code, timed_out = launch(command, log, limit)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.monotonic() - start
    result, problem = load_result(result_path)
    outcome = Outcome(bench, "ok", code, seconds, limit, command, result)
    if timed_out:
        outcome.status, outcome.detail = "timed out", f"still running after {limit:g} s: stopped"
    elif code != 0 and not failed_targets(result):
        outcome.status = "crashed"
        outcome.detail = f"exit status {code}" + (f"; {problem}" if problem else "")
    elif result is None:
        outcome.status, outcome.detail = "crashed", f"exit status {code}, but {problem}"
    return outcome


def load_result(path: Path) -> tuple[dict[str, Any] | None, str]:
    """A benchmark's JSON file, or None and why not."""
    if not path.exists():
        return None, f"it wrote no {path.name}"
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"its {path.name} is unreadable: {exc}"
    if not isinstance(result, dict):
        return None, f"its {path.name} is not a JSON object"
    return result, ""


def failed_targets(result: dict[str, Any] | None) -> bool:
    """True if a benchmark's JSON says a target failed (so a non-zero exit meant that)."""
    targets = (result or {}).get("targets") or []
    return any(isinstance(t, dict) and t.get("result") == "FAIL" for t in targets)


def progress(outcome: Outcome) -> str:
    """The end of a progress line: seconds, then the targets or what went wrong."""
    text = f"{outcome.seconds:.0f} s"
    if outcome.status != "ok":
        return f"{text}: {outcome.status.upper()} ({outcome.detail})"
    results = [t.get("result") for t in (outcome.result or {}).get("targets") or []]
    counts = [f"{results.count(r)} {r}" for r in ("PASS", "FAIL", "n/a") if r in results]
    return text + (f", targets: {', '.join(counts)}" if counts else "")


def log_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(f"    | {line}" for line in lines[-LOG_TAIL:])


def default_out(quick: bool) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return RESULTS / (f"suite-{stamp}" + ("-quick" if quick else ""))


def environment(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The machine and versions: what the benchmarks recorded, plus the suite's own view."""
    env: dict[str, Any] = {}
    for result in results.values():
        for source in (result.get("environment") or {}, result):
            for key in SHARED_ENVIRONMENT:
                if key in source:
                    env.setdefault(key, source[key])
    env["commit"] = revision()
    import matplotlib

    env["matplotlib"] = matplotlib.__version__
    return env


def run_suite(args: argparse.Namespace, benchmarks: Sequence[Benchmark], argv: list[str]) -> int:
    chosen = [
        dataclasses.replace(
            b,
            extra=args.extra.get(b.name, ()),
            prefix=REALTIME if b.name in args.realtime else (),
        )
        for b in benchmarks
        if args.only is None or b.name in args.only
    ]
    out = (args.out or default_out(args.quick)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()
    clock = time.monotonic()
    print(
        f"geode_mpi benchmark suite{' (quick)' if args.quick else ''}: {len(chosen)} benchmarks, "
        f"results in {out}",
        flush=True,
    )
    mpi = chosen_mpi(args)
    outcomes = []
    for number, bench in enumerate(chosen, start=1):
        head = f"[{number}/{len(chosen)}] {bench.name} ({bench.ranks} ranks) ..."
        print(head, end=" ", flush=True)
        outcome = run_one(bench, out, mpi, args.quick, args.timeout)
        print(progress(outcome), flush=True)
        if outcome.status != "ok":
            log = out / f"{bench.name}.log"
            print(f"  the last lines of {log}:\n{log_tail(log)}", flush=True)
        outcomes.append(outcome)
    results = {o.benchmark.name: o.result for o in outcomes if o.result is not None}
    meta = {
        "command": shlex.join(["python", "benchmarks/suite.py", *argv]),
        "quick": args.quick,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "seconds": time.monotonic() - clock,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "mpi": {"mpiexec": mpi.mpiexec, "python": mpi.python},
        "environment": environment(results),
    }
    return finish(out, meta, [o.record(out) for o in outcomes], results)


def finish(
    out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], results: dict[str, dict[str, Any]]
) -> int:
    """Write the suite JSON, summary.md, figures.md and the plots; print the summary."""
    suite = write_report(out, meta, runs, results)
    write_json(out / "suite.json", suite, "suite")
    print()
    print(console_summary(suite))
    bad = [f"{run['name']} {run['status']}" for run in runs if run["status"] != "ok"]
    print(
        f"{meta['seconds']:.0f} s; {len(runs) - len(bad)} of {len(runs)} benchmarks ran"
        + (f" ({', '.join(bad)})" if bad else "")
        + f"; suite.json, summary.md and {len(suite['plots'])} plots in {out}"
    )
    return 1 if bad else 0


def report_only(folder: Path, benchmarks: Sequence[Benchmark], argv: list[str]) -> int:
    """Redo the report from the JSON files a run left in ``folder`` (nothing is run)."""
    folder = folder.resolve()
    previous = load_result(folder / "suite.json")[0] or {}
    runs_before = {run["name"]: run for run in previous.get("runs", [])}
    results, runs = {}, []
    for bench in benchmarks:
        result = load_result(folder / f"{bench.name}.json")[0]
        if result is not None:
            results[bench.name] = result
        if bench.name in runs_before:
            runs.append(runs_before[bench.name])
        elif result is not None:
            runs.append({"name": bench.name, "ranks": bench.ranks, "status": "ok"})
            runs[-1] |= {"seconds": result.get("seconds"), "json": f"{bench.name}.json"}
    if not runs:
        raise SystemExit(f"suite.py: no benchmark JSON files (NAME.json) in {folder}")
    meta = {key: value for key, value in previous.items() if key not in ("runs", "targets")}
    meta.setdefault("command", shlex.join(["python", "benchmarks/suite.py", *argv]))
    meta.setdefault("quick", all((r.get("settings") or {}).get("quick") for r in results.values()))
    meta.setdefault("started", min((r.get("started", "") for r in results.values()), default=""))
    meta.setdefault("seconds", sum(run.get("seconds") or 0.0 for run in runs))
    meta.setdefault("environment", environment(results))
    meta.pop("plots", None)
    return finish(folder, meta, runs, results)


def main(argv: Sequence[str] | None = None, benchmarks: Sequence[Benchmark] = BENCHMARKS) -> int:
    """Run the suite (or only redo its report); ``benchmarks`` replaces the programs run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, [b.name for b in benchmarks])
    if importlib.util.find_spec("matplotlib") is None:
        print("suite.py needs matplotlib for its plots: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if args.report is not None:
        return report_only(args.report, benchmarks, argv)
    return run_suite(args, benchmarks, argv)


if __name__ == "__main__":
    sys.exit(main())
