"""A/B: one benchmark of two checkouts, run alternately, compared as paired ratios.

Run as ``python benchmarks/ab.py --a /path/to/main --b . --bench pingpong`` (``--help``).
Each checkout runs its own ``benchmarks/NAME.py`` with its own venv (``CHECKOUT/.venv``), or,
without one (an exported tree: ``git archive REV | tar -x -C DIR``), with this Python and
``PYTHONPATH=CHECKOUT``, under the ``mpiexec`` beside that Python, at the benchmark's rank
count (``RANKS``; ``--ranks`` to change it). The two alternate
(A B, then B A, ...) so that a change in the machine's load falls on both. Each pair gives
B/A for every figure; the table shows the median of each side and the median of the paired
ratios, with their range, and the best run of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Figures = Callable[[dict[str, Any]], dict[str, float]]


def pingpong(data: dict[str, Any]) -> dict[str, float]:
    """One-way latencies (us): the run's median and its best repeat (other load only ever adds
    time, so the best repeat is the steadier estimate on a busy machine), and geode's median
    over the raw pickle baseline of the same run."""
    found: dict[str, float] = {}
    for kind, record in data.get("payloads", {}).items():  # (--payloads)
        found[f"{kind} Message us"] = record["methods"]["geode Message(x)"]["median_us"]
        found.update({f"{kind} {name}": ratio for name, ratio in record["ratios"].items()})
    if "payloads" in data:
        return found
    for row in data["arrays"]:
        methods = row["methods"]
        label = f"{row['size']} B"
        found[f"geode {label} us"] = methods["geode"]["median_us"]
        found[f"geode {label} best us"] = min(methods["geode"]["repeats_us"])
        found[f"geode/pickle {label}"] = (
            methods["geode"]["median_us"] / methods["raw pickle"]["median_us"]
        )
    small = data["small_message"]["methods"]["geode Message"]
    found["geode Message us"] = small["median_us"]
    found["geode Message best us"] = min(small["repeats_us"])
    found["Message/raw dict"] = data["small_message"]["geode_over_dict_latency"]
    return found


def rate(data: dict[str, Any]) -> dict[str, float]:
    """Message rates (per s, the median repeat), and geode's over raw isend of the same run."""
    found: dict[str, float] = {}
    for method, rates in data["rates_per_s"].items():
        if method != "raw isend":
            found[f"{method} /s"] = statistics.median(rates)
            found[f"{method} best /s"] = max(rates)
    found.update(data["median_ratios"])
    payloads = data.get("payloads") or {}  # (--payloads: by kind, geode over raw isend of it)
    for kind, ratios in payloads.get("median_ratios", {}).items():
        for mine in ("geode", "geode_bulk", "geode_loop"):
            if f"{mine}_over_raw_object" in ratios:
                found[f"{kind} {mine}_over_raw_object"] = ratios[f"{mine}_over_raw_object"]
    for name, (producer, consumer) in payloads.get("cpu_us", {}).items():
        if name.split(" ", 1)[1].startswith("geode"):
            found[f"{name} CPU us producer"] = producer
            found[f"{name} CPU us consumer"] = consumer
    return found


def fanout(data: dict[str, Any]) -> dict[str, float]:
    """Time per fan-out of each array size (us): geode's (acks off) median and best repeat, and
    its paired ratio to raw Bcast of the same run; small messages per second (the median and
    the best repeat) of both geode methods."""
    found: dict[str, float] = {}
    for row in data["arrays"]:
        geode, label = row["methods"]["geode"], f"{row['size']} B"
        found[f"geode {label} us"] = geode["median_us"]
        found[f"geode {label} best us"] = min(geode["repeats_us"])
        found[f"geode/Bcast {label}"] = row["geode_over_bcast"]
    for method, rates in data["small_messages"]["rates_per_s"].items():
        if method != "raw bcast":
            found[f"{method} msgs/s"] = statistics.median(rates)
            found[f"{method} best msgs/s"] = max(rates)
    return found


def checkpoint(data: dict[str, Any]) -> dict[str, float]:
    """Seconds per checkpoint write and restore of each state size: geode's median and best
    repeat, and raw h5py's time over geode's in the same run (paired median); the pipeline's
    work lost around each checkpoint and the checkpoint call's seconds (medians)."""
    found: dict[str, float] = {}
    for label, record in data["sizes"].items():
        for step in ("write", "read"):
            times = record[step]
            found[f"{step} {label} s"] = times["median_s"]["geode"]
            found[f"{step} {label} best s"] = min(times["seconds"]["geode"])
            found[f"{step} {label} raw_over_geode"] = times["median_raw_over_geode"]
    pipeline = data["pipeline"]
    found["pipeline lost share"] = pipeline["median_lost_around_checkpoint"]
    found["checkpoint call s"] = statistics.median(pipeline["checkpoint_s"])
    return found


def hotpath(data: dict[str, Any]) -> dict[str, float]:
    """CPU microseconds per message in one process: the median and the best loop."""
    found: dict[str, float] = {}
    for method, result in data["results"].items():
        found[f"{method} us"] = result["median_us"]
        found[f"{method} best us"] = result["best_us"]
    return found


def priority(data: dict[str, Any]) -> dict[str, float]:
    """CPU microseconds per message (fill and drain) by queue length and kind, and the deep
    queue's fill time and takes per second."""
    found: dict[str, float] = {}
    for length, row in data["us_per_message"].items():
        for kind, us in row.items():
            found[f"{kind} @{length} us"] = us
    deep = data.get("deep") or {}
    if deep:
        found["deep fill us"] = deep["fill_us"]
        found["deep takes/s"] = deep["takes_per_s"]
    return found


BENCHMARKS: dict[str, Figures] = {
    "pingpong": pingpong,
    "rate": rate,
    "fanout": fanout,
    "checkpoint": checkpoint,
    "hotpath": hotpath,
    "priority": priority,
}
# Ranks per benchmark (as benchmarks/suite.py runs them); 0: one process, without mpiexec.
RANKS = {"pingpong": 2, "rate": 2, "fanout": 4, "checkpoint": 2, "hotpath": 0, "priority": 0}


def higher_is_better(name: str) -> bool:
    """Rates and raw-over-geode ratios; every other figure is a time, or geode over raw."""
    return name.endswith("/s") or "_over_" in name


def run_once(
    checkout: Path, ranks: int, args: Sequence[str], timeout: float, nice: int, script: Path
) -> dict[str, Any]:
    """Run the benchmark ``script`` with one checkout's venv once; its JSON. (Its own
    ``benchmarks/NAME.py``, except hotpath.py and priority.py: B's, whose figures A may not
    have; they run in one process, without mpiexec.)"""
    venv = checkout / ".venv" / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if not (venv / "python").exists():
        venv = Path(sys.executable).parent
        env["PYTHONPATH"] = str(checkout)  # ahead of the venv's editable install
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        command = ["nice", "-n", str(nice)] if nice else []
        if ranks:
            command += [str(venv / "mpiexec"), "-n", str(ranks)]
        command += [str(venv / "python"), str(script), *args, "--json", str(out)]
        done = subprocess.run(
            command, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
        loaded: dict[str, Any] = json.loads(out.read_text())
        return loaded


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="checkout A (the baseline)")
    parser.add_argument("--b", type=Path, required=True, help="checkout B (the change)")
    parser.add_argument("--bench", choices=sorted(BENCHMARKS), required=True)
    parser.add_argument("--pairs", type=int, default=6, help="A/B pairs to run (6)")
    parser.add_argument(
        "--ranks", type=int, default=None, help="MPI ranks (default: the benchmark's, RANKS)"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per run (600)")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the benchmark at this niceness (negative: ahead of other load; root only)",
    )
    parser.add_argument("--json", type=Path, help="write every figure of every run here")
    parser.add_argument("args", nargs="*", help="after --: the benchmark's own options")
    options = parser.parse_args(argv)
    figures = BENCHMARKS[options.bench]
    ranks = RANKS[options.bench] if options.ranks is None else options.ranks
    a, b = options.a.resolve(), options.b.resolve()
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for k in range(options.pairs):
        order = (("A", a), ("B", b)) if k % 2 == 0 else (("B", b), ("A", a))
        for side, checkout in order:
            own = checkout / "benchmarks" / f"{options.bench}.py"
            # (B's: A's may lack its figures, or an option such as pingpong's --payloads)
            shared = options.bench in ("hotpath", "priority") or "--payloads" in options.args
            script = b / "benchmarks" / f"{options.bench}.py" if shared else own
            data = run_once(checkout, ranks, options.args, options.timeout, options.nice, script)
            runs[side].append(figures(data))
        print(f"pair {k + 1}/{options.pairs} done", file=sys.stderr, flush=True)
    names = list(runs["A"][0])
    print(f"{options.bench}: A = {a}, B = {b}, {options.pairs} pairs, {' '.join(options.args)}")
    print("medians over the runs of each side; B/A paired: the median of the pairs' ratios;")
    print("best: the best run of each side (lowest time, highest rate), and their ratio")
    header = f"{'figure':30} {'A median':>10} {'B median':>10} {'B/A paired':>10}  {'range':13}"
    print(f"{header} {'A best':>10} {'B best':>10} {'B/A best':>9}")
    summary = {}
    for name in names:
        ours = [run[name] for run in runs["B"]]
        theirs = [run[name] for run in runs["A"]]
        paired = [mine / base for mine, base in zip(ours, theirs, strict=True)]
        summary[name] = statistics.median(paired)
        pick = max if higher_is_better(name) else min
        print(
            f"{name:30} {statistics.median(theirs):10.4g} {statistics.median(ours):10.4g} "
            f"{summary[name]:10.3f}  {min(paired):5.3f}-{max(paired):<7.3f} "
            f"{pick(theirs):10.4g} {pick(ours):10.4g} {pick(ours) / pick(theirs):9.3f}"
        )
    if options.json is not None:
        options.json.write_text(json.dumps({"runs": runs, "paired_medians": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
