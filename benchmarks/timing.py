"""How the benchmarks time: MPI.Wtime after a barrier, methods interleaved, ratios paired.

Every benchmark measures geode_mpi beside a raw mpi4py baseline in the same run, on the same
ranks. The methods take turns in an order that rotates from repeat to repeat, and a ratio of
two methods is taken within each repeat (paired), so that a burst of load from other processes
falls on both sides of it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def barrier_then_clock(comm: Any, wtime: Callable[[], float]) -> float:
    """Leave a barrier with every rank, then read the clock: the start of a timed loop."""
    comm.Barrier()
    return wtime()


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
