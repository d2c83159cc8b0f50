"""Where geode_mpi stands: the same workloads on raw mpi4py, geode_mpi, mpi4py.futures,
multiprocessing, pyzmq, Ray and Dask, every figure a ratio to raw mpi4py in the same run.

Run as ``python benchmarks/peers.py [--quick] [--peers zmq,ray,...]`` (not under mpiexec: it
launches every peer itself, each launch with a timeout). See benchmarks/README.md, "Where
geode_mpi stands"; ``pip install -e '.[peers]'`` for pyzmq, Ray and Dask.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import suite
from common import revision, write_json
from peers_common import GROUP, PAIR, SCALE, STARTUP_WORKERS, WORKLOADS
from timing import rotated

HERE = Path(__file__).resolve().parent
RAW, GEODE, FUTURES = "mpi4py", "geode", "mpi4py.futures"
MPI_PEERS = (RAW, GEODE, FUTURES)
PEERS = (*MPI_PEERS, "multiprocessing", "pyzmq", "ray", "dask")
ALIASES = {"zmq": "pyzmq", "futures": FUTURES, "mp": "multiprocessing", "raw": RAW}
# the module that must be importable for a peer to run (the test points one elsewhere)
MODULE = {RAW: "mpi4py", GEODE: "geode_mpi", FUTURES: "mpi4py.futures"}
MODULE |= {
    "multiprocessing": "multiprocessing",
    "pyzmq": "zmq",
    "ray": "ray",
    "dask": "distributed",
}
GROUPS = {"pingpong": [w for w in PAIR if w.startswith("pingpong")]}
RANKS = {"pair": 2, "group": 1 + 3, "startup": 1 + STARTUP_WORKERS}
# suite.launch's seconds from SIGTERM to SIGKILL at a timeout: Ray and Dask shut down first
suite.GRACE = 30.0
SCALED = {  # option -> (full run, --quick, help)
    "rounds": (3, 1, "launches of every peer, each beside one of raw mpi4py (ratios paired)"),
    "repeats": (5, 2, "timed loops per workload in each launch (median)"),
    "seconds": (0.3, 0.05, "seconds a timed loop lasts"),
    "tasks": (400, 40, "tasks per sweep of the task farm (1-10 ms each)"),
    "timeout": (300.0, 120.0, "seconds one launch may take before it is stopped"),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The same workloads on geode_mpi and its peers (mpi4py.futures, "
        "multiprocessing, pyzmq, Ray, Dask), each figure a ratio to raw mpi4py in the same run. "
        "Exits 1 if a launch crashed or timed out (a peer that is not installed is reported).",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS[1:]),
        help=f"comma-separated, of {', '.join(PEERS[1:])} (raw mpi4py always runs; default all)",
    )
    parser.add_argument(
        "--workloads",
        default="pingpong,rate,fanout,farm,startup",
        help=f"comma-separated, of pingpong (all three), {', '.join(WORKLOADS)} (default all)",
    )
    for name, (full, fast, text) in SCALED.items():
        parser.add_argument(
            f"--{name}", type=type(full), default=None, help=f"{text} ({full:g}, quick {fast:g})"
        )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: one round, arrays 16 times smaller"
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write all numbers")
    parser.add_argument("--plot", type=Path, default=None, help="draw the ratios into this PNG")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table in Markdown (for a README)"
    )
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSON",
        help="run nothing: print the table (and --plot) from these JSON files, later ones "
        "replacing the workloads of earlier ones",
    )
    args = parser.parse_args(argv)
    for name, (full, fast, _) in SCALED.items():
        if getattr(args, name) is None:
            setattr(args, name, fast if args.quick else full)
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0, got {getattr(args, name)}")
    peers = [ALIASES.get(p.strip(), p.strip()) for p in args.peers.split(",") if p.strip()]
    if unknown := [p for p in peers if p not in PEERS]:
        parser.error(f"--peers must name peers of {', '.join(PEERS[1:])}, got {unknown}")
    args.peers = [RAW, *(p for p in PEERS[1:] if p in peers)]
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if unknown := [w for w in chosen if w not in WORKLOADS and w not in GROUPS]:
        parser.error(f"--workloads must name workloads of {', '.join(WORKLOADS)}, got {unknown}")
    expanded = {x for w in chosen for x in GROUPS.get(w, [w])}
    args.workloads = [w for w in WORKLOADS if w in expanded]
    if not args.workloads:
        parser.error("--workloads must name at least one workload")
    return args


# -- launching ----------------------------------------------------------------------------------


def installed(peer: str) -> bool:
    try:
        return importlib.util.find_spec(MODULE[peer]) is not None
    except ImportError:
        return False


def launches(peer: str, workloads: list[str]) -> list[tuple[int | None, list[str]]]:
    """(MPI ranks, or None for a local peer; workloads) of each launch one round makes."""
    pair = [w for w in workloads if w in PAIR]
    group = [w for w in workloads if w in GROUP]
    startup = [w for w in workloads if w == "startup"]
    if peer not in MPI_PEERS:
        found = [(None, pair + group), (None, startup)]
    else:
        found = [(RANKS["pair"], pair), (RANKS["group"], group), (RANKS["startup"], startup)]
    return [(ranks, chosen) for ranks, chosen in found if chosen]


def command(peer: str, ranks: int | None, chosen: list[str], args: argparse.Namespace) -> list[str]:
    options = ["--peer", peer, "--workloads", ",".join(chosen), "--repeats", str(args.repeats)]
    options += ["--seconds", str(args.seconds), "--tasks", str(args.tasks)]
    options += ["--small"] if args.quick else []
    if ranks is None:
        return [sys.executable, str(HERE / "peers_local.py"), *options]
    futures = ["-m", "mpi4py.futures"] if peer == FUTURES else []
    script = [sys.executable, *futures, str(HERE / "peers_mpi.py"), *options]
    return [suite.mpiexec(), "-n", str(ranks), *script]


def launch_env(ranks: int | None) -> list[str]:
    """``env NAME=VALUE ...`` before a launch's command: the benchmarks importable
    (mpi4py.futures' workers unpickle their functions), and MPICH's single-copy path off when
    the ranks outnumber the cores, as geode_mpi turns it off (so every MPI peer runs alike)."""
    from geode_mpi.base.launch import CMA_VARIABLE, usable_cores

    path = os.pathsep.join([str(HERE), suite.child_env()["PYTHONPATH"]])
    names = ["env", f"PYTHONPATH={path}"]
    if ranks is not None and ranks > usable_cores() and CMA_VARIABLE not in os.environ:
        names.append(f"{CMA_VARIABLE}=0")
    return names


def one_launch(
    peer: str, ranks: int | None, chosen: list[str], args: argparse.Namespace, scratch: Path
) -> tuple[dict[str, Any], str | None]:
    """Launch a peer for some workloads: its figures (startup: seconds from the launch to the
    first round trip) and None, or {} and what went wrong (with the end of its output)."""
    result, log = scratch / f"{peer}-{chosen[0]}.json", scratch / f"{peer}-{chosen[0]}.log"
    result.unlink(missing_ok=True)
    command_line = [*launch_env(ranks), *command(peer, ranks, chosen, args), "--json", str(result)]
    began = time.time()
    code, timed_out = suite.launch(command_line, log, args.timeout)
    found = json.loads(result.read_text())["workloads"] if result.exists() else None
    if timed_out or code != 0 or found is None:
        what = f"timed out after {args.timeout:g} s" if timed_out else f"exit status {code}"
        print(f"  {peer} {','.join(chosen)}: {what}\n{suite.log_tail(log)}", flush=True)
        return {}, what
    if "startup" in found:
        found["startup"] = {"median": found["startup"]["first_round_trip"] - began}
    return found, None


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every round, every installed peer (in an order that rotates), each beside a launch of
    raw mpi4py right before or after it (alternately), so that a ratio pairs two launches a
    few seconds apart: the load of a busy machine changes by the minute."""
    status = {p: "ok" if installed(p) else "not installed" for p in args.peers}
    runnable = [p for p in args.peers if status[p] == "ok"]
    others = [p for p in runnable if p != RAW]
    found: dict[str, Any] = {
        key: {w: {p: [] for p in runnable} for w in args.workloads}
        for key in ("rounds", "launches")
    }
    found["raw_beside"] = {w: {p: [] for p in others} for w in args.workloads}
    with tempfile.TemporaryDirectory(prefix="geode-peers-") as scratch:
        for number in range(args.rounds):
            for k, peer in enumerate(rotated(others, number) if others else [RAW]):
                pair = [RAW, peer] if (number + k) % 2 == 0 else [peer, RAW]
                for who in dict.fromkeys(p for p in pair if p in runnable):
                    for workload, record in run_peer(who, number, args, Path(scratch), status):
                        found["rounds"][workload][who].append(record.get("median"))
                        found["launches"][workload][who].append(record)
                for workload in args.workloads if peer != RAW and RAW in runnable else ():
                    found["raw_beside"][workload][peer].append(found["rounds"][workload][RAW][-1])
    return found | {"status": status}


def run_peer(
    peer: str, number: int, args: argparse.Namespace, scratch: Path, status: dict[str, str]
) -> list[tuple[str, dict[str, Any]]]:
    """A peer's launches for one round: (workload, its record) for each workload, the record
    empty where the launch failed (``status`` then says how)."""
    records = []
    for ranks, chosen in launches(peer, args.workloads):
        clock = time.monotonic()
        found, problem = one_launch(peer, ranks, chosen, args, scratch)
        where = f"{ranks} ranks" if ranks else "local"
        print(
            f"[round {number + 1}/{args.rounds}] {peer} ({where}) {','.join(chosen)}: "
            f"{problem or 'ok'}, {time.monotonic() - clock:.0f} s",
            flush=True,
        )
        if problem is not None:
            status[peer] = problem
        records += [(workload, found.get(workload) or {}) for workload in chosen]
    return records


# -- ratios and the report ----------------------------------------------------------------------


def speed(workload: str, peer_value: float, raw_value: float) -> float:
    """The peer's speed relative to raw mpi4py: raw time / peer time, or peer rate / raw rate."""
    better = WORKLOADS[workload][2]
    return raw_value / peer_value if better == "lower" else peer_value / raw_value


def summarise(measured: dict[str, Any]) -> dict[str, Any]:
    """Per workload and peer: the figure of each round, their median, and each round's ratio
    to the raw mpi4py launch beside it (their median is the headline)."""
    workloads: dict[str, Any] = {}
    for workload, per_peer in measured["rounds"].items():
        what, unit, better = WORKLOADS[workload]
        peers = {}
        for peer, values in per_peer.items():
            beside = measured["raw_beside"][workload].get(peer, values)
            ratios = [
                speed(workload, value, base)
                for value, base in zip(values, beside, strict=True)
                if value is not None and base is not None
            ]
            present = [v for v in values if v is not None]
            entry = {"rounds": values, "median": statistics.median(present) if present else None}
            entry |= {"speed_vs_raw": ratios, "median_speed_vs_raw": median(ratios)}
            extras = [r.get("over_ideal") for r in measured["launches"][workload][peer]]
            if workload == "farm":
                entry["makespan_over_ideal"] = median([x for x in extras if x is not None])
            peers[peer] = entry
        workloads[workload] = {"what": what, "unit": unit, "better": better, "peers": peers}
    return workloads


def figure(value: float | None, unit: str) -> str:
    """``147 us``, ``3.83 ms``, ``301,234 msg/s``: a raw figure in its workload's unit."""
    if value is None:
        return "-"
    scaled = value * SCALE[unit]
    return f"{scaled:,.0f} {unit}" if scaled >= 100 else f"{scaled:.3g} {unit}"


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def table(workloads: dict[str, Any], status: dict[str, str]) -> list[str]:
    """One row per workload: raw mpi4py's figure, then each peer's speed relative to it."""
    peers = list(status)
    widths = [16, 13, *(max(9, len(p) + 2) for p in peers[1:])]
    heads = ["workload", f"{RAW} (raw)", *peers[1:]]
    lines = [
        "".join(
            f"{h:>{w}}" if i else f"{h:<{w}}"
            for i, (h, w) in enumerate(zip(heads, widths, strict=True))
        )
    ]
    lines.append("-" * sum(widths))
    for workload, record in workloads.items():
        unit = record["unit"]
        raw = record["peers"].get(RAW, {}).get("median")
        cells = [figure(raw, unit)]
        for peer in peers[1:]:
            entry = record["peers"].get(peer)
            ratio = entry and entry["median_speed_vs_raw"]
            cells.append(f"{ratio:.3g}" if ratio else "n/a")
        row = f"{workload:<16}" + "".join(
            f"{c:>{w}}" for c, w in zip(cells, widths[1:], strict=True)
        )
        lines.append(row)
    lines.append(
        "cells: the peer's speed relative to raw mpi4py (raw time / peer time; for rate, peer "
        "msg/s / raw msg/s), the median of paired per-round ratios: 1 = as fast as raw, "
        "0.5 = half as fast"
    )
    farm = workloads.get("farm", {}).get("peers", {})
    if farm:
        over = ", ".join(
            f"{p} {e['makespan_over_ideal']:.2f}"
            for p, e in farm.items()
            if e.get("makespan_over_ideal")
        )
        lines.append(f"farm makespan / ideal (measured work / {3} workers): {over}")
    for peer, state in status.items():
        if state != "ok":
            lines.append(f"{peer}: {state}")
    return lines


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, Any] = {"host": platform.node(), "cores": os.cpu_count()}
    found |= {"python": platform.python_version(), "commit": revision()}
    for dist in ("geode_mpi", "mpi4py", "mpich", "numpy", "pyzmq", "ray", "dask", "distributed"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


def plot(path: Path, workloads: dict[str, Any], status: dict[str, str]) -> None:
    """Bars per workload, one per peer: its speed relative to raw mpi4py (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [p for p in status if p != RAW]
    names = list(workloads)
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.8 / max(1, len(peers))
    for k, peer in enumerate(peers):
        values = [
            (workloads[w]["peers"].get(peer) or {}).get("median_speed_vs_raw") or 0 for w in names
        ]
        xs = [i + (k - (len(peers) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [v or float("nan") for v in values], width, label=peer)
    ax.axhline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names])
    ax.set_ylabel("speed relative to raw mpi4py (1 = as fast)")
    ax.set_title("geode_mpi and its peers: speed relative to raw mpi4py (higher is better)")
    ax.legend(ncol=min(6, len(peers)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(workloads: dict[str, Any], status: dict[str, str]) -> list[str]:
    """The table for benchmarks/README.md: raw's figure, each peer's cells as the median and
    the range of its paired ratios."""
    peers = [p for p in status if p != RAW]
    lines = [f"| workload | {RAW} (raw) | {' | '.join(peers)} |", "|---" * (len(peers) + 2) + "|"]
    for name, record in workloads.items():
        cells = [figure(record["peers"].get(RAW, {}).get("median"), record["unit"])]
        for peer in peers:
            ratios = (record["peers"].get(peer) or {}).get("speed_vs_raw") or []
            low, mid, high = (min(ratios), median(ratios), max(ratios)) if ratios else (0, 0, 0)
            cells.append(f"**{mid:.2g}** ({low:.2g}-{high:.2g})" if ratios else status[peer])
        lines.append(f"| `{name}` | {' | '.join(cells)} |")
    return lines


def report(args: argparse.Namespace, record: dict[str, Any]) -> None:
    print("\n".join(table(record["workloads"], record["status"])), flush=True)
    if args.markdown:
        print("\n".join(markdown(record["workloads"], record["status"])))
    if args.plot is not None:
        plot(args.plot, record["workloads"], record["status"])
        print(f"plot in {args.plot}")


def merged(paths: Sequence[Path]) -> dict[str, Any]:
    """The JSON files of several runs as one: later files replace earlier workloads."""
    record: dict[str, Any] = {"workloads": {}, "status": {}, "runs": []}
    for path in paths:
        found = json.loads(path.read_text())
        record["workloads"] |= found["workloads"]
        for peer, state in found["status"].items():
            if record["status"].get(peer, "ok") == "ok":
                record["status"][peer] = state
        record["runs"].append({"file": str(path), "started": found.get("started")})
    return record


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        report(args, merged(args.report))
        return 0
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load = os.getloadavg()
    print(
        f"geode_mpi beside its peers{' (quick)' if args.quick else ''}: {', '.join(args.peers)}; "
        f"{args.rounds} rounds of {', '.join(args.workloads)}; load average {load[0]:.1f}",
        flush=True,
    )
    clock = time.monotonic()
    measured = measure(args)
    record = {"benchmark": "peers", "started": started, "seconds": time.monotonic() - clock}
    record["settings"] = {name: getattr(args, name) for name in (*SCALED, "quick", "peers")}
    record["settings"]["workloads"] = args.workloads
    record["environment"] = environment() | {"load_start": load, "load_end": os.getloadavg()}
    record |= {"status": measured["status"], "workloads": summarise(measured)}
    record |= {"launches": measured["launches"], "raw_beside": measured["raw_beside"]}
    report(args, record)
    written = write_json(args.json, record, "peers")
    print(f"{record['seconds']:.0f} s; all numbers in {written}")
    failed = [p for p, s in record["status"].items() if s not in ("ok", "not installed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
