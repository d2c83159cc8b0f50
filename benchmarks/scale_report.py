"""scale.py's report: medians and paired ratios per rank count, growth fits, tables, the plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import reporting
from common import MiB
from timing import paired_median

OPS = ("open", "topic", "quiescence", "checkpoint", "close", "restart")
METHODS = ("geode", "raw")
# Each step of geode_mpi and the raw mpi4py/h5py code it is timed beside.
RAW_OF = {
    "open": "Dup + allgather of the settings",
    "topic": "a world-wide Split per topic",
    "quiescence": "a ring message + 2 allreduces",
    "checkpoint": "h5py write of the same bytes + fsync + Barrier",
    "close": "Barrier",
    "restart": "h5py read + Barrier",
}
GEODE_OF = {
    "open": "Geode()",
    "topic": "topic() (per topic)",
    "quiescence": "send + run() until quiescent",
    "checkpoint": "checkpoint(state)",
    "close": "close()",
    "restart": "Geode(restart=True)",
}
MODELS = ("log2 P", "P")  # t = a + b * x: what the time grows with
# Baselines timed beside some ops besides "raw": the checkpoint's durable one, raw h5py doing
# the same durable work as geode_mpi (issue 15 words its target against the plain one).
EXTRA = {"checkpoint": ("durable",)}
EXTRA_OF = {
    "durable": "the same bytes as durably by hand: fletcher32, fsync, sha256, rank 0's "
    "manifest (directory fsync, temporary name, fsync, rename, fsync), a broadcast",
}
CHECKPOINT_TARGET = 2.0  # issue 15: checkpoint within 2x of raw h5py + a barrier at 64 ranks


def progress(ranks: int, record: dict[str, Any]) -> str:
    """The line printed as a rank count ends."""
    if "failed" in record:
        return f"P={ranks}: FAILED ({record['failed']})"
    cycles = record["cycles"]
    cells = [f"{op} x{paired_median(*pairs(cycles, op)):.2f}" for op in OPS]
    return f"P={ranks}: geode/raw " + ", ".join(cells)


def pairs(cycles: list[dict[str, dict[str, float]]], op: str) -> tuple[list[float], list[float]]:
    """Every cycle's geode and raw seconds of ``op``."""
    return [c[op]["geode"] for c in cycles], [c[op]["raw"] for c in cycles]


def fit(ranks: list[int], seconds: list[float]) -> dict[str, Any]:
    """``t = a + b * x`` for x = log2 P and x = P, by least squares of the relative error (so
    small P counts as much as large); ``best`` is the model with the smaller error (None with
    fewer than 3 rank counts: two points fit any line)."""
    if len(ranks) < 3:
        return {"best": None, "models": {}}
    times = np.asarray(seconds, dtype=float)
    models = {}
    for name, x in zip(MODELS, (np.log2(ranks), np.asarray(ranks, dtype=float)), strict=True):
        design = np.column_stack([np.ones_like(x), x]) / times[:, None]
        (a, b), *_ = np.linalg.lstsq(design, np.ones_like(times), rcond=None)
        error = float(np.sqrt(np.mean(((a + b * x) / times - 1) ** 2)))
        models[name] = {"a_s": float(a), "b_s": float(b), "rel_rms": error}
    return {"best": min(models, key=lambda name: models[name]["rel_rms"]), "models": models}


def mib(values: list[int]) -> dict[str, float]:
    """Per-rank bytes as MiB: the largest rank's and the median."""
    return {"max": max(values) / MiB, "median": statistics.median(values) / MiB}


def memory_row(ranks: int, record: dict[str, Any]) -> dict[str, Any]:
    """Per memory job (scale_memory.py): the largest rank's peak, start and resident memory
    after each cycle, MiB (None where its launch failed)."""
    row: dict[str, Any] = {"ranks": ranks}
    for name, result in record.get("memory_jobs", {}).items():
        if not isinstance(result, dict) or "peak" not in result:
            row[name] = None
            continue
        cycles = [max(values) / MiB for values in zip(*result["cycles"], strict=True)]
        shared = [max(values) / MiB for values in zip(*result.get("shared", []), strict=True)]
        row[name] = {"peak": mib(result["peak"]), "start": mib(result["start"]), "cycles": cycles}
        row[name]["shared"] = shared
    return row


def summarise(records: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per op: the median seconds of each method and their paired ratio at each rank count,
    and the growth fits; the memory per rank count; restarts elsewhere; what failed."""
    done = {p: r for p, r in sorted(records.items()) if "failed" not in r}
    ops: dict[str, Any] = {}
    for op in OPS:
        rows: list[dict[str, Any]] = []
        for ranks, record in done.items():
            geode, raw = pairs(record["cycles"], op)
            rows.append(
                {
                    "ranks": ranks,
                    "geode_s": statistics.median(geode),
                    "raw_s": statistics.median(raw),
                    "ratio": paired_median(geode, raw),
                }
            )
            for extra in EXTRA.get(op, ()):
                if all(extra in cycle[op] for cycle in record["cycles"]):
                    times = [cycle[op][extra] for cycle in record["cycles"]]
                    rows[-1][f"{extra}_s"] = statistics.median(times)
                    rows[-1][f"{extra}_ratio"] = paired_median(geode, times)
        fits = {m: fit([r["ranks"] for r in rows], [r[f"{m}_s"] for r in rows]) for m in METHODS}
        ops[op] = {"geode": GEODE_OF[op], "raw": RAW_OF[op], "rows": rows, "fits": fits}
    restarts = {p: r["other_restart"] for p, r in done.items() if "other_restart" in r}
    env: dict[str, Any] = next((r["environment"] for r in done.values() if "environment" in r), {})
    return {
        "ops": ops,
        "memory": [memory_row(p, r) for p, r in done.items()],
        "other_restarts": {str(p): r for p, r in restarts.items()},
        "failed": {str(p): r["failed"] for p, r in records.items() if "failed" in r},
        "environment": env | {"ranks": max(done, default=0)},
    }


# -- tables ------------------------------------------------------------------------------------


def time_table(summary: dict[str, Any], key: str, title: str) -> list[str]:
    """One row per rank count, one column per op: ``key``'s seconds as ms, with the ratio."""
    table = reporting.Table([("P", 5), *((op, 17) for op in OPS)])
    lines = [title, *table.head()]
    by_ranks: dict[int, list[str]] = {}
    for op in OPS:
        for row in summary["ops"][op]["rows"]:
            cell = f"{row[key] * 1e3:.2f}"
            cell += f" x{row['ratio']:.2f}" if key == "geode_s" else ""
            by_ranks.setdefault(row["ranks"], []).append(cell)
    return lines + [table.row([str(p), *cells]) for p, cells in by_ranks.items()]


def baseline_lines(summary: dict[str, Any]) -> list[str]:
    """Each op timed beside more than one baseline: geode_mpi's time against each, and
    whether the checkpoint meets its target against each."""
    lines = []
    for op, extras in EXTRA.items():
        for extra in extras:
            lines += [
                "",
                f"{op}: geode_mpi beside raw ({RAW_OF[op]}) and {extra} ({EXTRA_OF[extra]})",
            ]
            for row in summary["ops"][op]["rows"]:
                if f"{extra}_s" not in row:
                    continue
                plain, durable = row["ratio"], row[f"{extra}_ratio"]
                met = [
                    name
                    for name, ratio in (("raw", plain), (extra, durable))
                    if ratio <= CHECKPOINT_TARGET
                ]
                verdict = f"within {CHECKPOINT_TARGET:g}x of: {', '.join(met) or 'neither'}"
                lines.append(
                    f"  P={row['ranks']}: geode {row['geode_s'] * 1e3:.1f} ms, raw "
                    f"{row['raw_s'] * 1e3:.1f} ms (x{plain:.2f}), {extra} "
                    f"{row[f'{extra}_s'] * 1e3:.1f} ms (x{durable:.2f}); {verdict}"
                )
    return lines


def fit_table(summary: dict[str, Any]) -> list[str]:
    columns = [("op", 12), ("method", 7), ("grows with", 11), ("a + b x", 24)]
    table = reporting.Table([*columns, ("err log2 P", 12), ("err P", 9)])
    lines = ["Growth fits: t = a + b x, least squares of the relative error", *table.head()]
    for op in OPS:
        for method, result in summary["ops"][op]["fits"].items():
            best = result["best"]
            if best is None:
                continue
            model = result["models"][best]
            formula = f"{model['a_s'] * 1e3:.2f} + {model['b_s'] * 1e3:.3f} x ms"
            errors = [f"{result['models'][m]['rel_rms']:.0%}" for m in MODELS]
            lines.append(table.row([op, method, best, formula, *errors]))
    return lines if len(lines) > 3 else [*lines, "(a fit needs 3 or more rank counts)"]


MEMORY_COLUMNS = ("objects bare", "objects raw", "objects geode", "arrays raw", "arrays geode")


def memory_table(summary: dict[str, Any]) -> list[str]:
    """Peaks per job, geode over its raw job and over bare mpi4py, then each cycle's memory."""
    columns = [("P", 5), *((name, 14) for name in MEMORY_COLUMNS)]
    table = reporting.Table([*columns, ("geode-raw", 14), ("geode-bare", 11)])
    lines = [
        "Peak RSS per rank, MiB (the largest rank's; each job its own launch, scale_memory.py):",
        "objects: a dict around the ring; arrays: numpy + h5py imported, 1 MiB around the ring",
        "and checkpointed. geode-raw: each job's (objects / arrays); geode-bare: objects",
        *table.head(),
    ]
    cycles = [
        "Resident after each open/close cycle, MiB (the largest rank's), and in brackets the",
        "MPI shared memory in it (RssShmem: MPICH's segment, as far as the rank touched it)",
    ]
    for row in summary["memory"]:
        peaks = {name: peak_of(row.get(name)) for name in MEMORY_COLUMNS}
        over_raw = [difference(peaks[f"{job} geode"], peaks[f"{job} raw"]) for job in JOBS]
        over_bare = difference(peaks["objects geode"], peaks["objects bare"])
        cells = [cell(peaks[name]) for name in MEMORY_COLUMNS]
        cells += [" / ".join(map(cell, over_raw)), cell(over_bare)]
        lines.append(table.row([str(row["ranks"]), *cells]))
        for name in MEMORY_COLUMNS[1:]:
            result = row.get(name)
            if result is not None:
                trail = " -> ".join(f"{value:.1f}" for value in result["cycles"])
                if result["shared"]:
                    trail += f" ({' -> '.join(f'{value:.1f}' for value in result['shared'])})"
                cycles.append(f"  P={row['ranks']:<3} {name:<13} {trail}")
    return [*lines, "", *cycles]


JOBS = ("objects", "arrays")


def peak_of(result: dict[str, Any] | None) -> float | None:
    return None if result is None else float(result["peak"]["max"])


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def cell(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def restart_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for ranks, result in summary["other_restarts"].items():
        where = f"restart of a {ranks}-rank checkpoint on {result.get('ranks', '?')} ranks: "
        if result.get("supported"):
            lines.append(where + f"{result['seconds'] * 1e3:.1f} ms")
        else:
            why = str(result.get("error") or result.get("failed"))
            lines.append(where + f"not supported ({why[:150]}{'...' if len(why) > 150 else ''})")
    return lines


def tables(summary: dict[str, Any], quick: bool) -> list[str]:
    """Everything the run prints: the header, the times, the fits, memory, failures."""
    env = summary["environment"]
    lines = reporting.header(env, "scale.py: geode_mpi beside raw mpi4py/h5py", quick)
    if env.get("cores"):
        lines.append(f"up to {env['ranks']} ranks on {env['cores']} cores (oversubscribed)")
    if "load_average" in summary:
        load = summary["load_average"]
        lines.append(f"load average {load['start']:.1f} at the start, {load['end']:.1f} at the end")
    for op in OPS:
        lines.append(f"  {op:<11} {GEODE_OF[op]:<30} beside {RAW_OF[op]}")
    lines += ["", *time_table(summary, "geode_s", "geode_mpi, ms (slowest rank) x geode/raw")]
    lines += ["", *time_table(summary, "raw_s", "raw mpi4py/h5py, ms (slowest rank)")]
    lines += baseline_lines(summary)
    lines += ["", *fit_table(summary), "", *memory_table(summary)]
    lines += restart_lines(summary)
    lines += [f"P={p}: FAILED ({why})" for p, why in summary["failed"].items()]
    return lines


# -- the plot ----------------------------------------------------------------------------------


def plot(summary: dict[str, Any], path: Path, quick: bool) -> str:
    """Draw the plot; say where, or how to get it without matplotlib."""
    try:
        import suite_plots
    except ImportError:
        return (
            "no plot: matplotlib is missing (pip install -e '.[bench]'), then redraw with "
            f"python benchmarks/scale.py --report {path.with_suffix('.json')}"
        )
    fig = suite_plots.figure(16, 8)
    axes = fig.subplots(2, 4).flatten()
    fig.suptitle("geode_mpi beside raw mpi4py/h5py" + (" (quick run)" if quick else ""))
    for ax, op in zip(axes, OPS, strict=False):
        ops = summary["ops"][op]
        ranks = [row["ranks"] for row in ops["rows"]]
        for method, color in (("geode", suite_plots.GEODE), ("raw", suite_plots.RAW)):
            label = ops[method] if method == "raw" else f"geode_mpi {ops[method]}"
            values = [row[f"{method}_s"] * 1e3 for row in ops["rows"]]
            ax.plot(ranks, values, "-", marker="o", color=color, label=label)
            best = ops["fits"][method]["best"]
            if best is not None:
                model = ops["fits"][method]["models"][best]
                x = np.log2(ranks) if best == "log2 P" else np.asarray(ranks, dtype=float)
                curve = (model["a_s"] + model["b_s"] * x) * 1e3
                ax.plot(ranks, curve, ":", color=color, label=f"fit: a + b {best}")
        ranks_axis(ax, ranks, op, "ms (slowest rank)")
    memory = summary["memory"]
    ranks = [row["ranks"] for row in memory]
    for name, style in zip(MEMORY_COLUMNS, (":o", "--o", "--s", "-o", "-s"), strict=True):
        color = suite_plots.GEODE if name.endswith("geode") else suite_plots.RAW
        peaks = [peak_of(row.get(name)) for row in memory]
        values = [np.nan if value is None else value for value in peaks]
        axes[6].plot(ranks, values, style, color=color, label=f"{name}, peak")
    ranks_axis(axes[6], ranks, "peak RSS per rank (largest)", "MiB", log=False)
    for op in OPS:
        rows = summary["ops"][op]["rows"]
        axes[7].plot([r["ranks"] for r in rows], [r["ratio"] for r in rows], "-o", label=op)
    ranks_axis(axes[7], ranks, "geode / raw (paired)", "ratio")
    suite_plots.finish(fig, path)
    return f"plot: {path}"


def ranks_axis(ax: Any, ranks: list[int], title: str, ylabel: str, log: bool = True) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks)
    ax.set_xticklabels([str(p) for p in ranks])
    ax.set_xlabel("ranks P")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
