"""Memory per rank of geode_mpi beside raw mpi4py, and before/after a change, in one run.

``python benchmarks/memory_compare.py --ranks 4,64 [--before DIR]`` launches each job of
benchmarks/scale_memory.py on its own (bare mpi4py; the dict job raw and with geode_mpi; the
arrays + checkpoint job raw, raw with a manifest (``durable``) and with geode_mpi), and with
``--before`` the geode jobs once more importing geode_mpi from DIR (an exported tree:
``git archive REV | tar -x -C DIR``), all in one run. Launches above 8 ranks hold the machine's
big-run lock. It prints one table: the peak RSS (MiB) of the largest rank and of the median
one, and the largest rank's resident memory after the imports and over the cycles (and MPICH's
shared memory in it); it writes every rank's figures to ``--json``.

geode_mpi is measured byte-compiled, as installed (pip writes the .pyc files of a wheel when it
installs it; mpi4py's, numpy's and the standard library's are there already): each tree's are
written first. Without them (an editable install under ``PYTHONDONTWRITEBYTECODE=1``, as on
this project's machine) every rank compiles geode_mpi's source at import, 2-3 MB more a rank
at its peak; ``--source`` measures that way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from scale import MEMORY_JOBS, big_run_lock
from suite import LAUNCH_VARIABLES, mpiexec

HERE = Path(__file__).resolve().parent
MIB = 2**20


def launch(ranks: int, job: str, method: str, cycles: int, tree: Path) -> dict[str, Any]:
    """One job in its own launch, importing geode_mpi from ``tree``: scale_memory.py's record."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARIABLES)}
    env["PYTHONPATH"] = str(tree)  # ahead of the venv's editable install
    with tempfile.TemporaryDirectory(prefix="geode-memory-") as scratch:
        command = [mpiexec(), "-n", str(ranks), sys.executable, str(HERE / "scale_memory.py")]
        command += [job, method, str(cycles), scratch]
        with big_run_lock(ranks):
            done = subprocess.run(
                command,
                cwd=scratch,
                env=env,
                capture_output=True,
                text=True,
                timeout=60 + 5 * ranks,
            )
    if done.returncode != 0:
        return {"failed": f"exit status {done.returncode}", "log": done.stderr.splitlines()[-8:]}
    record: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return record


def byte_compile(tree: Path) -> None:
    """Write the .pyc files of ``tree``'s geode_mpi beside its sources (``__pycache__``, as an
    installed package has them); py_compile writes them whatever PYTHONDONTWRITEBYTECODE says."""
    import compileall

    if not compileall.compile_dir(tree / "geode_mpi", quiet=1):
        raise SystemExit(f"cannot byte-compile {tree / 'geode_mpi'}")


def remove_byte_code(tree: Path) -> None:
    """Remove the .pyc files of ``tree``'s geode_mpi (a cache), for ``--source``."""
    import shutil

    for cache in sorted((tree / "geode_mpi").rglob("__pycache__")):
        shutil.rmtree(cache)


def row(name: str, record: dict[str, Any]) -> str:
    if "failed" in record:
        return f"{name:28s} FAILED {record['failed']}"
    cycles = [max(values) / MIB for values in zip(*record["cycles"], strict=True)]
    shared = [max(values) / MIB for values in zip(*record["shared"], strict=True)]
    numpy = "numpy" if any(record.get("numpy", [])) else "-"
    peaks = sorted(record["peak"])
    line = f"{name:28s} {peaks[-1] / MIB:7.1f} {peaks[len(peaks) // 2] / MIB:7.1f}"
    line += f" {max(record['start']) / MIB:7.1f}"
    if cycles:
        line += (
            f"  {cycles[0]:6.1f} -> {cycles[-1]:6.1f}  shm {shared[0]:5.1f} -> {shared[-1]:5.1f}"
        )
    return f"{line}  {numpy}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="4", help="comma-separated rank counts (4)")
    parser.add_argument("--cycles", type=int, default=6, help="open/close cycles per job (6)")
    parser.add_argument("--before", type=Path, help="a tree of geode_mpi to compare with")
    parser.add_argument("--json", type=Path, help="write every rank's figures here")
    parser.add_argument(
        "--source", action="store_true", help="remove geode_mpi's .pyc files first (see above)"
    )
    args = parser.parse_args()
    trees = {"after": HERE.parent} | ({"before": args.before.resolve()} if args.before else {})
    for tree in trees.values():
        (remove_byte_code if args.source else byte_compile)(tree)
    print("geode_mpi " + ("compiled from source at import" if args.source else "byte-compiled"))
    results: dict[str, Any] = {}
    for ranks in [int(part) for part in args.ranks.split(",")]:
        load = os.getloadavg()[0]
        print(f"P = {ranks} (load {load:.1f}): peak (largest, median rank), start, cycles")
        for job, method in [*MEMORY_JOBS, ("arrays", "durable")]:
            for label, tree in trees.items() if method == "geode" else [("", HERE.parent)]:
                name = f"{job} {method} {label}".strip()
                record = launch(ranks, job, method, args.cycles, tree)
                results[f"{ranks} {name}"] = record
                print(row(name, record), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
