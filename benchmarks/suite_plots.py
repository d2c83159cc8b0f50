"""The suite's plots (matplotlib, Agg): geode_mpi and its raw baseline on the same axes."""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import MiB, size_label
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

Result = dict[str, Any]
GEODE, GEODE_2ND = "tab:blue", "tab:cyan"  # geode_mpi: the headline, a variant
RAW, RAW_2ND = "tab:orange", "tab:gray"  # the raw baseline, a second raw method
TARGET = "tab:red"


def subtitle(result: Result) -> str:
    env = result.get("environment") or {}
    try:
        started = datetime.datetime.fromisoformat(result["started"])
        date = started.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (KeyError, TypeError, ValueError):
        date = "date unknown"
    ranks, cores = env.get("ranks", "?"), env.get("cores", "?")
    quick = (result.get("settings") or {}).get("quick")
    return f"{date}, {ranks} ranks on {cores} cores" + (" (quick run)" if quick else "")


def size_axis(ax: Axes, sizes: list[int], label: str) -> None:
    """Log2 x axis with a tick at each measured size, labelled 8 B, 1 KiB, ..."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([size_label(s) for s in sizes], rotation=40, ha="right", fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label)


def target_line(ax: Axes, value: float, sizes: list[int], text: str) -> None:
    """The target over the sizes it applies to (a little beyond the end points)."""
    if sizes:
        low, high = min(sizes) / 1.3, max(sizes) * 1.3
        ax.hlines(value, low, high, colors=TARGET, linestyles="--", linewidth=1.2, label=text)


def figure(width: float, height: float) -> Figure:
    """A figure drawn by Agg into files (no pyplot: no window, no global state)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def two_panels(title: str) -> tuple[Figure, Axes, Axes]:
    """The measurements above, their ratios below, sharing the size axis."""
    fig = figure(8, 7)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    fig.suptitle(title)
    return fig, top, bottom


# A line of a plot: what to plot (a method, or a key of a result), its label, colour and style.
Line = tuple[str, str, str, str]


def plot_lines(
    ax: Axes, sizes: list[int], lines: tuple[Line, ...], values: Callable[[str], list[float]]
) -> None:
    """One line per entry of ``lines``, its y values from ``values`` of the line's key."""
    for key, label, color, style in lines:
        ax.plot(sizes, values(key), style, marker="o", color=color, label=label)


def finish(fig: Figure, path: Path) -> None:
    for ax in fig.axes:
        if ax.get_yscale() == "log":  # plain numbers: 1, 2, 5 per decade unless many decades
            low, high = ax.get_ylim()
            subs = (1.0,) if high > 1e3 * low else (1.0, 2.0, 5.0)
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- pingpong ----------------------------------------------------------------------------------


PINGPONG_LINES: tuple[Line, ...] = (
    ("raw Send", "raw mpi4py Send/Recv", RAW, "-"),
    ("raw pickle", "raw mpi4py send/recv (pickle)", RAW_2ND, ":"),
    ("geode", "geode_mpi send/receive", GEODE, "-"),
    ("geode kept", "geode_mpi, previous array kept", GEODE_2ND, "--"),
)


def measured_panel(
    ax: Axes,
    arrays: list[dict[str, Any]],
    lines: tuple[Line, ...],
    value: Callable[[dict[str, Any], str], float],
    ylabel: str,
) -> None:
    """The upper panel of an array benchmark: each method's ``value`` of each record (``lines``
    name the methods) against the array size, on a log scale."""
    sizes = [r["size"] for r in arrays]
    plot_lines(ax, sizes, lines, lambda method: [value(r, method) for r in arrays])
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)


def ratio_panel(
    ax: Axes,
    arrays: list[dict[str, Any]],
    lines: tuple[Line, ...],
    target: tuple[float, Callable[[int], bool], str],
    ylabel: str,
) -> None:
    """The lower panel of an array benchmark: each record's paired ratios (``lines`` name
    their keys) against the array size, with the target drawn over the sizes it covers."""
    sizes = [r["size"] for r in arrays]
    plot_lines(ax, sizes, lines, lambda key: [r[key] for r in arrays])
    value, covered, text = target
    target_line(ax, value, [s for s in sizes if covered(s)], text)
    ax.set_ylabel(ylabel)
    size_axis(ax, sizes, "array size")


def pingpong_latency(result: Result, path: Path, quick: bool) -> None:
    arrays = result["arrays"]
    fig, top, bottom = two_panels(
        f"pingpong: one-way latency against array size\n{subtitle(result)}"
    )
    measured_panel(
        top,
        arrays,
        PINGPONG_LINES,
        lambda r, method: float(r["methods"][method]["median_us"]),
        "one-way latency, us (median)",
    )
    ratios = [
        {"pickle": r["geode_over_pickle_latency"], "Send": 1 / r["geode_over_send_bandwidth"]}
        | {"size": r["size"]}
        for r in arrays
    ]
    ratio_panel(
        bottom,
        ratios,
        (("pickle", "geode / raw pickle", GEODE, "-"), ("Send", "geode / raw Send", RAW, "-")),
        (1.0, lambda size: size <= 1024, "target: <= 1.0 x raw pickle"),
        "latency ratio\n(paired, lower is better)",
    )
    finish(fig, path)


def pingpong_bandwidth(result: Result, path: Path, quick: bool) -> None:
    arrays = result["arrays"]
    fig, top, bottom = two_panels(f"pingpong: bandwidth against array size\n{subtitle(result)}")
    measured_panel(
        top,
        arrays,
        PINGPONG_LINES,
        lambda r, method: float(r["bandwidth_GBps"][method]),
        "bandwidth, GB/s (array bytes / one-way latency)",
    )
    ratio_lines = (
        ("geode_over_send_bandwidth", "geode / raw Send", GEODE, "-"),
        ("geode_kept_over_send_bandwidth", "geode kept / raw Send", GEODE_2ND, "--"),
    )
    target = (0.9, lambda size: size >= MiB, "target: >= 0.90 x raw Send")
    ratio_panel(bottom, arrays, ratio_lines, target, "bandwidth ratio\n(paired, higher is better)")
    finish(fig, path)


# -- fanout ------------------------------------------------------------------------------------


def fanout(result: Result, path: Path, quick: bool) -> None:
    arrays = result["arrays"]
    fig, top, bottom = two_panels(
        f"fanout: one array from rank 0 to every other rank\n{subtitle(result)}"
    )
    lines: tuple[Line, ...] = (
        ("raw Bcast", "raw mpi4py Bcast", RAW, "-"),
        ("geode", "geode_mpi topic, acks off", GEODE, "-"),
        ("geode acks", "geode_mpi topic, acks on", GEODE_2ND, "--"),
    )
    measured_panel(
        top,
        arrays,
        lines,
        lambda r, method: float(r["methods"][method]["median_us"]),
        "time per fan-out + barrier, us (median)",
    )
    barrier = (result.get("barrier") or {}).get("median_us")
    if barrier:
        top.axhline(barrier, color=RAW_2ND, linestyle=":", label="a barrier alone")
    ratio_lines = (
        ("geode_over_bcast", "geode / raw Bcast", GEODE, "-"),
        ("geode_acks_over_bcast", "geode acks / raw Bcast", GEODE_2ND, "--"),
    )
    target = (1.25, lambda size: size >= MiB, "target: <= 1.25 x raw Bcast")
    ratio_panel(bottom, arrays, ratio_lines, target, "time ratio\n(paired, lower is better)")
    finish(fig, path)


# -- checkpoint --------------------------------------------------------------------------------


def checkpoint(result: Result, path: Path, quick: bool) -> None:
    records = sorted(result["sizes"].values(), key=lambda r: r["bytes_per_rank"])
    sizes = [r["bytes_per_rank"] for r in records]
    fig = figure(11, 7)
    axes = fig.subplots(2, 2, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    fig.suptitle(f"checkpoint: write and restore against state size per rank\n{subtitle(result)}")
    lines: tuple[Line, ...] = (
        ("geode", "geode_mpi checkpoint / restart", GEODE, "-"),
        ("raw h5py", "raw h5py, same durability", RAW, "-"),
        ("plain h5py", "plain h5py (no fsync, no checksums)", RAW_2ND, ":"),
    )
    for column, (phase, name) in enumerate((("write", "write"), ("read", "restore"))):
        top, bottom = axes[0][column], axes[1][column]
        plot_lines(
            top,
            sizes,
            lines,
            lambda method, phase=phase: [r[phase]["median_s"][method] for r in records],
        )
        top.set_yscale("log")
        top.set_title(name)
        top.set_ylabel(f"{name} time, s (median, slowest rank)")
        plot_lines(
            bottom,
            sizes,
            (("median_raw_over_geode", "raw h5py time / geode time", GEODE, "-"),),
            lambda key, phase=phase: [r[phase][key] for r in records],
        )
        target_line(bottom, 0.8, sizes, "target: >= 0.8")
        bottom.set_ylabel("ratio\n(paired, higher is better)")
        size_axis(bottom, sizes, "state per rank")
    finish(fig, path)


# -- rates -------------------------------------------------------------------------------------


def rates(results: dict[str, Result], path: Path, quick: bool) -> None:
    """Bars: each rate ratio's median, whiskers from its lowest to its highest repeat."""
    bars: list[tuple[str, list[float], float | None]] = []  # label, per-repeat ratios, target
    if "rate" in results:
        ratios = results["rate"]["ratios"]
        bars += [
            ("rate: geode no acks / raw isend", ratios["no_acks_over_raw"], 0.5),
            ("rate: geode acks / raw isend", ratios["acks_over_raw"], None),
            ("rate: geode acks / geode no acks", ratios["acks_over_no_acks"], 0.5),
            ("rate: geode dict data / raw isend", ratios["dict_data_over_raw"], None),
        ]
    if "fanout" in results:
        ratios = results["fanout"]["small_messages"]["ratios_to_raw"]
        ranks = (results["fanout"].get("environment") or {}).get("ranks", "?")
        bars += [
            (f"fanout, {ranks} ranks: geode topic / raw bcast", ratios["geode"], None),
            (f"fanout, {ranks} ranks: geode topic, acks / raw bcast", ratios["geode acks"], None),
        ]
    if not bars:
        raise KeyError("neither rate nor fanout ran")
    fig = figure(9, 1.6 + 0.55 * len(bars))
    ax = fig.subplots()
    any_result = results.get("rate") or results["fanout"]
    fig.suptitle(f"small-message rates, geode_mpi over raw mpi4py\n{subtitle(any_result)}")
    for row, (label, values, target) in enumerate(bars):
        ordered = sorted(values)
        middle = statistics.median(ordered)
        color = GEODE if label.startswith("rate") else GEODE_2ND
        ax.barh(row, middle, color=color, height=0.6)
        ax.errorbar(
            middle,
            row,
            xerr=[[middle - ordered[0]], [ordered[-1] - middle]],
            color="black",
            capsize=3,
            linewidth=1,
        )
        ax.text(ordered[-1] + 0.02, row, f"{middle:.2f}", va="center", fontsize=8)
        if target is not None:
            ax.vlines(
                target,
                row - 0.4,
                row + 0.4,
                colors=TARGET,
                linestyles="--",
                label="target: >= 0.5" if row == 0 else None,
            )
    ax.axvline(1.0, color=RAW, linewidth=1, label="as fast as raw (1.0)")
    ax.set_yticks(range(len(bars)))
    ax.set_yticklabels([label for label, _, _ in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("rate ratio (paired median; whiskers: lowest and highest repeat)")
    ax.set_xlim(0, max(1.15, max(max(v) for _, v, _ in bars) + 0.15))
    finish(fig, path)


# -- all of them -------------------------------------------------------------------------------

PLOTS: tuple[tuple[str, str, Callable[[Result, Path, bool], None]], ...] = (
    ("pingpong-latency.png", "pingpong", pingpong_latency),
    ("pingpong-bandwidth.png", "pingpong", pingpong_bandwidth),
    ("fanout.png", "fanout", fanout),
    ("checkpoint.png", "checkpoint", checkpoint),
)


def plot_all(
    out: Path, suite: dict[str, Any], results: dict[str, Result]
) -> tuple[list[str], list[str]]:
    """Draw every plot whose benchmark has a result; return the files drawn and, for the
    others, why not."""
    quick = bool(suite.get("quick"))
    drawn, problems = [], []
    for name, benchmark, draw in PLOTS:
        if benchmark not in results:
            problems.append(f"{name}: {benchmark} has no result")
            continue
        try:
            draw(results[benchmark], out / name, quick)
            drawn.append(name)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            problems.append(f"{name}: {benchmark}'s JSON lacks what it needs ({exc!r})")
    if "rate" in results or "fanout" in results:
        try:
            rates(results, out / "rate-ratios.png", quick)
            drawn.append("rate-ratios.png")
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"rate-ratios.png: a JSON lacks what it needs ({exc!r})")
    else:
        problems.append("rate-ratios.png: neither rate nor fanout has a result")
    return drawn, problems
