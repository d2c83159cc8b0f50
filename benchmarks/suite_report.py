"""The suite's report: each benchmark's ratios and targets, summary.md, figures.md, the plots."""

from __future__ import annotations

import datetime
import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import size_label

# A benchmark's ratios, as tables: {title: {"unit": "x" | "%" | "MiB", "rows": {row: {col: v}}}}
Tables = dict[str, dict[str, Any]]
Result = dict[str, Any]


# -- ratios ------------------------------------------------------------------------------------


def table(unit: str, rows: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """A table, rows and cells without a value left out."""
    kept = {row: {c: v for c, v in cells.items() if v is not None} for row, cells in rows.items()}
    return {"unit": unit, "rows": {row: cells for row, cells in kept.items() if cells}}


def pingpong_ratios(result: Result) -> Tables:
    arrays = result.get("arrays") or []
    message = (result.get("small_message") or {}).get("geode_over_dict_latency")
    return {
        "geode over raw mpi4py, per array size (paired medians; bandwidth: above 1 geode is "
        "faster; latency: below 1 geode is faster)": table(
            "x",
            {
                size_label(r["size"]): {
                    "bandwidth / raw Send": r.get("geode_over_send_bandwidth"),
                    "kept: bandwidth / raw Send": r.get("geode_kept_over_send_bandwidth"),
                    "latency / raw pickle": r.get("geode_over_pickle_latency"),
                }
                for r in arrays
            },
        ),
        "a small Message (below 1 geode is faster)": table(
            "x", {"Message": {"latency / raw dict send/recv": message}}
        ),
    }


def large_path_ratios(result: Result) -> Tables:
    return {
        "each step's bandwidth over raw Send's (raw Send time / its time, paired medians)": table(
            "x", {size_label(r["size"]): dict(r.get("send_over") or {}) for r in result["sizes"]}
        )
    }


def rate_ratios(result: Result) -> Tables:
    medians = result.get("median_ratios") or {}
    return {
        "small-message rate over raw isend's (paired medians; above 1 geode is faster)": table(
            "x",
            {
                "geode no acks": {"rate / raw isend": medians.get("no_acks_over_raw")},
                "geode acks": {
                    "rate / raw isend": medians.get("acks_over_raw"),
                    "acked / unacked": medians.get("acks_over_no_acks"),
                },
                "geode dict data": {"rate / raw isend": medians.get("dict_data_over_raw")},
            },
        )
    }


def fanout_ratios(result: Result) -> Tables:
    arrays = result.get("arrays") or []
    rates = (result.get("small_messages") or {}).get("ratios_to_raw") or {}
    return {
        "time per fan-out over raw Bcast's (paired medians; below 1 geode is faster)": table(
            "x",
            {
                size_label(r["size"]): {
                    "geode / raw Bcast": r.get("geode_over_bcast"),
                    "geode acks / raw Bcast": r.get("geode_acks_over_bcast"),
                }
                for r in arrays
            },
        ),
        "small messages per second over raw bcast's (paired medians; above 1 geode is faster)": (
            table(
                "x",
                {
                    method: {"rate / raw bcast": median(values)}
                    for method, values in rates.items()
                    if method != "raw bcast"
                },
            )
        ),
    }


def checkpoint_ratios(result: Result) -> Tables:
    sizes = result.get("sizes") or {}
    pipeline = result.get("pipeline") or {}
    return {
        "raw h5py's time over geode's, per state size per rank (paired medians; above 1 geode "
        "is faster)": table(
            "x",
            {
                label: {
                    "write": (r.get("write") or {}).get("median_raw_over_geode"),
                    "restore": (r.get("read") or {}).get("median_raw_over_geode"),
                }
                for label, r in sizes.items()
            },
        ),
        "a pipeline's work lost to a checkpoint every interval (medians)": table(
            "%",
            {
                "pipeline": {
                    "lost around each checkpoint": pipeline.get("median_lost_around_checkpoint"),
                    "with / without": pipeline.get("median_overhead"),
                    "the call alone": pipeline.get("checkpoint_share"),
                }
            },
        ),
    }


def workqueue_ratios(result: Result) -> Tables:
    methods = result.get("methods") or {}
    return {
        "makespan over the ideal and over raw master/worker (paired medians; lower is "
        "better)": table(
            "x",
            {
                method: {
                    "makespan / ideal": r.get("median_over_ideal"),
                    "makespan / raw master-worker": r.get("median_over_master_worker"),
                }
                for method, r in methods.items()
            },
        )
    }


def backpressure_ratios(result: Result) -> Tables:
    verdicts = result.get("verdicts") or {}
    return {
        "memory growth during the run": table(
            "MiB",
            {
                side: {
                    "RSS growth": v.get("growth_mib"),
                    "in the second half": v.get("late_growth_mib"),
                    "limit": v.get("growth_limit_mib"),
                }
                for side, v in verdicts.items()
            },
        )
    }


RATIOS: dict[str, Callable[[Result], Tables]] = {
    "pingpong": pingpong_ratios,
    "large_path": large_path_ratios,
    "rate": rate_ratios,
    "fanout": fanout_ratios,
    "checkpoint": checkpoint_ratios,
    "workqueue": workqueue_ratios,
    "backpressure": backpressure_ratios,
}


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ratios_of(name: str, result: Result) -> tuple[Tables, str]:
    """A benchmark's tables, and what went wrong reading them ('' if nothing)."""
    extract = RATIOS.get(name)
    if extract is None:
        return {}, ""
    try:
        return extract(result), ""
    except (KeyError, TypeError, AttributeError) as exc:  # a JSON layout this code does not know
        return {}, f"its ratios could not be read ({type(exc).__name__}: {exc})"


def targets_of(name: str, result: Result) -> list[dict[str, Any]]:
    """A benchmark's targets in one shape: benchmark, target, measured (text), result."""
    found = []
    for item in result.get("targets") or []:
        if not isinstance(item, dict):
            continue
        worst, ratio = item.get("worst"), item.get("ratio")
        if isinstance(item.get("value"), str):
            measured = item["value"]
        elif isinstance(worst, dict) and len(item.get("ratios") or {}) == 1:
            measured = f"{worst.get('ratio', math.nan):.2f}"
        elif isinstance(worst, dict):
            measured = f"worst {worst.get('ratio', math.nan):.2f} at {worst.get('case')}"
        elif isinstance(ratio, float | int):
            measured = f"{ratio:.3f}" if name == "workqueue" else f"{ratio:.2f}"
            if isinstance(worst, float | int):
                measured += f" (worst repeat {worst:.3f})"
        else:
            measured = ""
        found.append(
            {
                "benchmark": name,
                "target": str(item.get("target", "")),
                "measured": measured,
                "result": str(item.get("result", "?")),
            }
        )
    return found


# -- the report --------------------------------------------------------------------------------


def write_report(
    out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], results: dict[str, Result]
) -> dict[str, Any]:
    """Write summary.md, figures.md and the plots into ``out``; return the suite's JSON record.

    Args:
        out: the results folder.
        meta: the suite's facts: command, quick, started, seconds, environment, load_average.
        runs: one record per benchmark launched: name, ranks, status, seconds, ...
        results: each benchmark's JSON file (by name) for those that wrote one.
    """
    targets: list[dict[str, Any]] = []
    for run in runs:
        result = results.get(run["name"])
        if result is None:
            run["ratios"], run["targets"] = {}, []
            continue
        run["ratios"], problem = ratios_of(run["name"], result)
        if problem:
            run["report_problem"] = problem
        run["targets"] = targets_of(run["name"], result)
        targets += run["targets"]
    suite = dict(meta) | {"runs": runs, "targets": targets}
    from suite_plots import plot_all  # matplotlib is imported only to draw

    suite["plots"], suite["plot_problems"] = plot_all(out, suite, results)
    (out / "summary.md").write_text(summary_markdown(suite))
    (out / "figures.md").write_text(figures_markdown(suite, out))
    return suite


def when(suite: dict[str, Any]) -> str:
    """The suite's start as '2026-11-27 at 08:12 UTC'."""
    try:
        started = datetime.datetime.fromisoformat(suite["started"])
    except (KeyError, TypeError, ValueError):
        return "an unknown date"
    utc = started.astimezone(datetime.timezone.utc)
    return utc.strftime("%Y-%m-%d at %H:%M UTC")


def machine(suite: dict[str, Any], compact: bool = False) -> str:
    """The host and the versions the figures depend on."""
    env = suite.get("environment") or {}
    library = " ".join(str(env.get("mpi_library", "MPI ?")).replace("Version:", "").split())
    parts = [library, f"mpi4py {env.get('mpi4py', '?')}", f"Python {env.get('python', '?')}"]
    if not compact:
        parts.append(f"numpy {env.get('numpy', '?')}")
    if "h5py" in env:
        parts.append(f"h5py {env['h5py']} with HDF5 {env.get('hdf5', '?')}")
    parts.append(f"geode_mpi {env.get('geode_mpi', '?')} at commit {env.get('commit', '?')}")
    return f"{env.get('host', '?')}, {env.get('cores', '?')} cores ({', '.join(parts)})"


def load_note(suite: dict[str, Any]) -> str:
    """', load average (1 min) 9.5 at the start and 5.2 at the end', or ''."""
    load = suite.get("load_average") or {}
    if not (load.get("start") and load.get("end")):
        return ""
    start, end = load["start"][0], load["end"][0]
    return f", load average (1 min) {start:.1f} at the start and {end:.1f} at the end"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def short(target: str) -> str:
    """A target without its trailing parenthesis of detail, for the compact table."""
    return re.sub(r"\s*\([^()]*\)\s*$", "", target)


def cell(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.1%}"
    if unit == "MiB":
        return f"{value:,.1f}"
    return f"{value:.2f}"


def markdown_table(heads: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(heads), "|" + "|".join("---" for _ in heads) + "|", *map(line, rows)]


def targets_table(targets: list[dict[str, Any]], compact: bool) -> list[str]:
    """Compact: without the parentheses of detail at the end of a target or a measure."""
    trim = short if compact else str
    rows = [
        [t["benchmark"], trim(t["target"]), trim(t["measured"]), result]
        for t in targets
        for result in [f"**{t['result']}**" if t["result"] == "FAIL" else t["result"]]
    ]
    return markdown_table(["benchmark", "target", "measured", "result"], rows)


def summary_markdown(suite: dict[str, Any]) -> str:
    runs = suite["runs"]
    kind = (
        "quick run (`--quick`: smoke-test sizes; too noisy to quote)"
        if suite.get("quick")
        else "full run"
    )
    lines = [
        f"# geode_mpi benchmark suite, {when(suite)}",
        "",
        f"`{suite.get('command', 'python benchmarks/suite.py')}`: {kind}, {len(runs)} "
        f"benchmarks in {duration(suite.get('seconds'))}.",
        "",
        f"Machine: {machine(suite)}{load_note(suite)}.",
        "",
        "## Targets",
        "",
        *targets_table(suite["targets"], compact=False),
        "",
        "## Runs",
        "",
    ]
    rows = []
    for number, run in enumerate(runs, start=1):
        status = run["status"] if run["status"] == "ok" else f"**{run['status'].upper()}**"
        if run.get("detail"):
            status += f": {run['detail']}"
        files = ", ".join(f"[{name}]({name})" for name in (run.get("json"), run.get("log")) if name)
        seconds = run.get("seconds")
        rows.append(
            [
                str(number),
                run["name"],
                str(run.get("ranks", "?")),
                status,
                f"{seconds:.0f}" if isinstance(seconds, float | int) else "?",
                files,
            ]
        )
    lines += markdown_table(["#", "benchmark", "ranks", "status", "seconds", "files"], rows)
    lines += ["", "## Ratios", ""]
    for run in runs:
        for title, tab in run.get("ratios", {}).items():
            columns = list(dict.fromkeys(c for cells in tab["rows"].values() for c in cells))
            if not columns:
                continue
            lines += [f"**{run['name']}**: {title}", ""]
            body = [
                [row] + [cell(cells[c], tab["unit"]) if c in cells else "" for c in columns]
                for row, cells in tab["rows"].items()
            ]
            lines += [*markdown_table(["", *columns], body), ""]
        if run.get("report_problem"):
            lines += [f"**{run['name']}**: {run['report_problem']}", ""]
    lines += ["## Plots", ""]
    for name in suite["plots"]:
        lines += [f"![{name}]({name})", ""]
    for problem in suite.get("plot_problems", []):
        lines += [f"- not drawn: {problem}"]
    return "\n".join(lines).rstrip() + "\n"


def figures_markdown(suite: dict[str, Any], out: Path) -> str:
    """The block proposed for the top-level README: date, command, the targets, compactly."""
    crashed = [run["name"] for run in suite["runs"] if run["status"] != "ok"]
    folder = out.name
    lines = [
        "## Latest figures",
        "",
        f"On {when(suite)}, on {machine(suite, compact=True)}, the whole suite",
        "",
        "```sh",
        suite.get("command", "python benchmarks/suite.py"),
        "```",
        "",
        f"took {duration(suite.get('seconds'))}{load_note(suite)}"
        + (" (a quick run: smoke-test sizes, too noisy to quote)" if suite.get("quick") else "")
        + ". Each ratio compares geode_mpi with the raw mpi4py (or h5py) code doing the same in "
        "the same run, paired repeat by repeat (see benchmarks/README.md):",
        "",
        *targets_table(suite["targets"], compact=True),
        "",
    ]
    if crashed:
        lines += [f"Crashed or timed out (no figures): {', '.join(crashed)}.", ""]
    lines.append(
        f"Plots, the summary and every number: `benchmarks/results/{folder}/` "
        "(`summary.md`, `suite.json`, " + ", ".join(f"`{name}`" for name in suite["plots"]) + ")."
    )
    return "\n".join(lines) + "\n"


def console_summary(suite: dict[str, Any]) -> str:
    """The targets as plain text, for the end of the suite's output."""
    rows = [
        (t["result"], t["benchmark"], short(t["target"]), t["measured"]) for t in suite["targets"]
    ]
    if not rows:
        return "targets: none measured"
    width = [max(len(row[k]) for row in rows) for k in range(3)]
    lines = ["targets:"]
    for row in rows:
        lines.append(
            f"  {row[0]:<{width[0]}}  {row[1]:<{width[1]}}  {row[2]:<{width[2]}}  {row[3]}"
        )
    return "\n".join(lines)
