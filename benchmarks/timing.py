"""How the benchmarks time: MPI.Wtime after a barrier, methods interleaved, ratios paired.

Every benchmark measures geode_mpi beside a raw mpi4py baseline in the same run, on the same
ranks. The methods take turns in an order that rotates from repeat to repeat, and a ratio of
two methods is taken within each repeat (paired), so that a burst of load from other processes
falls on both sides of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def barrier_then_clock(comm: Any, wtime: Callable[[], float]) -> float:
    """Leave a barrier with every rank, then read the clock: the start of a timed loop."""
    comm.Barrier()
    return wtime()


def slowest(comm: Any, seconds: float) -> float:
    """The slowest rank's time: what a collective step costs the job."""
    from mpi4py import MPI  # here: benchmarks that run without MPI import timing.py too

    return float(comm.allreduce(seconds, op=MPI.MAX))


def report_beside_raw(
    ranks: int,
    repeat: int,
    names: tuple[str, str],
    times: tuple[list[float], list[float]],
    json_path: Path | None,
) -> None:
    """Print one row (medians, ms, and the paired median ratio) of a geode_mpi step beside its
    raw step, and write every repeat's figures to ``json_path`` if given.

    ``names``: the two steps' labels, ``"run()"`` and ``"allreduce"`` say: the column headers
    are "run() ms" and "allreduce ms", the JSON keys "run_ms" and "allreduce_ms".
    """
    geode, raw = times
    geode_ms, raw_ms = statistics.median(geode) * 1e3, statistics.median(raw) * 1e3
    ratio = paired_median(geode, raw)
    heads = [f"{name} ms" for name in names]
    widths = [len(head) + 1 for head in heads]
    print(f"{'ranks':>5} {heads[0]:>{widths[0]}} {heads[1]:>{widths[1]}} {'ratio':>7}  (medians)")
    print(f"{ranks:>5} {geode_ms:>{widths[0]}.3f} {raw_ms:>{widths[1]}.3f} {ratio:>7.1f}")
    if json_path is None:
        return
    keys = [name.rstrip("()").lower() for name in names]
    figures = {
        "ranks": ranks,
        "repeat": repeat,
        f"{keys[0]}_ms": [t * 1e3 for t in geode],
        f"{keys[1]}_ms": [t * 1e3 for t in raw],
        f"median_{keys[0]}_ms": geode_ms,
        f"median_{keys[1]}_ms": raw_ms,
        "median_ratio": ratio,
    }
    json_path.write_text(json.dumps(figures, indent=1))


def rotated(names: Sequence[T], turn: int) -> list[T]:
    """``names`` starting at ``turn`` (modulo their count): the order of one repeat's methods."""
    shift = turn % len(names)
    return [*names[shift:], *names[:shift]]


def paired(tops: Sequence[float], bottoms: Sequence[float]) -> list[float]:
    """Per-repeat ratios: the methods of one repeat run back to back, so a burst of load from
    other processes hits both sides of each ratio alike; the median of these is reported."""
    return [top / bottom for top, bottom in zip(tops, bottoms, strict=True)]


def paired_median(tops: Sequence[float], bottoms: Sequence[float]) -> float:
    """The median of the paired ratios (where a ratio of two medians would mix a quiet repeat
    of one method with a loaded repeat of the other)."""
    return float(statistics.median(paired(tops, bottoms)))


def spread(values: list[float]) -> dict[str, float]:
    """The least, the quartiles and the largest of some repeats' values."""
    if len(values) < 2:
        return dict.fromkeys(("min", "q1", "q3", "max"), values[0])
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"min": min(values), "q1": q1, "q3": q3, "max": max(values)}


def summarise(
    iterations: dict[str, list[int]], times: dict[str, list[float]]
) -> dict[str, dict[str, Any]]:
    """Each method's JSON record: its iterations, and its times (s) in microseconds, every
    repeat's and their median."""
    return {
        name: {
            "iterations": iterations[name],
            "median_us": statistics.median(values) * 1e6,
            "repeats_us": [value * 1e6 for value in values],
        }
        for name, values in times.items()
    }


def check_array(rank: int, expected: np.ndarray[Any, Any], name: str, got: Any) -> None:
    """Raise unless ``got`` is exactly the array that was sent (so garbage is never timed)."""
    if not (
        isinstance(got, np.ndarray)
        and got.dtype == expected.dtype
        and got.shape == expected.shape
        and np.array_equal(got, expected)
    ):
        what = f"{type(got).__name__} {getattr(got, 'dtype', '')} {getattr(got, 'shape', '')}"
        raise RuntimeError(
            f"rank {rank}: {name} of {expected.nbytes} bytes received the wrong data ({what})"
        )


def forms_parser(doc: str, iters: int) -> argparse.ArgumentParser:
    """The options of a benchmark that times forms of one round trip in turn (`run_forms`):
    ``--iters`` (round trips per loop, default ``iters``) and ``--repeats``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=iters, help="round trips per loop")
    parser.add_argument("--repeats", type=int, default=7, help="loops per form (median)")
    return parser


def run_forms(
    forms: Sequence[str], loop: Callable[[str], float], iters: int, repeats: int, show: bool
) -> dict[str, list[float]]:
    """Each form's ``loop(form)`` (one way, us): one loop of each to warm up (lanes made,
    classes known), then ``repeats`` rounds of every form in turn; printed if ``show``, each
    form's median and its ratio to the first form's (raw)."""
    times: dict[str, list[float]] = {form: [] for form in forms}
    for form in forms:
        loop(form)
    for _ in range(repeats):
        for form in forms:
            times[form].append(loop(form))
    if show:
        raw = statistics.median(times[forms[0]])
        width = max(map(len, forms)) + 1
        print(f"one way, us (median of {repeats} loops of {iters} round trips)")
        for form in forms:
            found = statistics.median(times[form])
            print(f"  {form:{width}} {found:7.2f}  {found / raw:5.2f}x raw")
    return times
