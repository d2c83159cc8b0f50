"""Progress reports of long work, printed by rank 0 only: done, rate, time left, a summary.

Named `report_progress` / `ProgressReport` so that they are never mistaken for the transport's
`progress()` (the MPI progress engine); the old names `progress` / `Progress` still work, with a
`DeprecationWarning` the first time each is used.
"""

from __future__ import annotations

import numbers
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from geode_mpi.base.failure import rank_label
from geode_mpi.base.launch import launcher_rank
from geode_mpi.core import registry
from geode_mpi.errors import check_flag, whole

T = TypeVar("T")


def _where() -> tuple[int, int, str | None]:
    """(rank, size, node) of this process: from its first Geode, else from the launcher."""
    geode = registry.first_geode()
    if geode is not None:
        return geode.rank, geode.size, geode.node
    found = launcher_rank()
    return (found[0], found[1], None) if found is not None else (0, 1, None)


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f}/s" if per_second >= 100 else f"{per_second:.3g}/s"


def _duration(seconds: float) -> str:
    if seconds < 10:  # (short work: "0 s" said nothing, and "about 0 s left" read as done)
        return f"{seconds:.2g} s" if seconds >= 0.001 else "under 0.001 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressReport:
    """Count work done and, on rank 0 only, print a line every ``every`` seconds.

    Args:
        total: how much work there is (None: unknown; no percentage or time left).
        label: what the work is, at the start of every line.
        every: seconds between two lines (the first comes after ``every`` seconds, so short
            work prints only its summary).
        stream: where to print (default: standard error).
        quiet: print nothing (the counts are still kept).

    Raises:
        TypeError: ``total`` is not an int, ``every`` not a number, ``stream`` has no
            ``write``, ``quiet`` is not a bool.
        ValueError: ``total`` or ``every`` is negative, ``every`` is nan.
    """

    def __init__(
        self,
        total: int | None = None,
        label: str = "progress",
        every: float = 10.0,
        stream: IO[str] | None = None,
        quiet: bool = False,
    ) -> None:
        if total is not None:
            counted = whole(total)
            if counted is None:
                raise TypeError(f"total must be an int >= 0 or None, got {total!r}")
            total = counted
            if total < 0:
                raise ValueError(f"total must be >= 0 or None, got {total!r}")
        if isinstance(every, bool) or not isinstance(every, (int, float, numbers.Real)):
            raise TypeError(f"every must be a number of seconds, got {every!r}")
        if not every >= 0:  # (nan too: it would never print)
            raise ValueError(f"every must be >= 0 seconds, got {every!r}")
        every = float(every)
        if stream is not None and not callable(getattr(stream, "write", None)):
            raise TypeError(
                f"stream must be a text stream with a write() method (sys.stdout, an open "
                f"file) or None for standard error, got {stream!r}"
            )
        quiet = check_flag(quiet, "quiet")
        self.total = total
        self.label = label
        self.every = every
        self.done = 0
        self.started = time.monotonic()
        self._next = self.started + every
        self._stream = stream
        rank, size, node = _where()
        self._prefix = rank_label(rank, size, node) if size > 1 or node else "[rank 0/1]"
        self.printing = rank == 0 and not quiet

    def _print(self, text: str) -> None:
        stream = self._stream if self._stream is not None else sys.stderr
        print(f"{self._prefix} {self.label}: {text}", file=stream, flush=True)

    def line(self) -> str:
        """The progress line as it stands (without its prefix)."""
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.done}"
        if self.total:
            text += f"/{self.total} ({100 * self.done / self.total:.0f}%)"
        text += f" in {_duration(elapsed)}, {_rate(rate)}"
        if self.total and rate > 0 and self.done < self.total:
            text += f", about {_duration((self.total - self.done) / rate)} left"
        return text

    def update(self, count: int = 1) -> None:
        """Add ``count`` units of work done; print if it is time to."""
        self.done += count
        if self.printing and time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every
            self._print(self.line())

    def finish(self) -> None:
        """Print the summary line (rank 0): how much, how long, how fast."""
        if self.printing:
            elapsed = time.monotonic() - self.started
            rate = self.done / elapsed if elapsed > 0 else 0.0
            self._print(f"{self.done} done in {_duration(elapsed)} ({_rate(rate)})")
            self.printing = False


def report_progress(
    items: Iterable[T],
    label: str = "progress",
    *,
    total: int | None = None,
    every: float = 10.0,
    stream: IO[str] | None = None,
) -> Iterator[T]:
    """Yield ``items``, reporting progress on rank 0 every ``every`` seconds and at the end.

    Args:
        items: the work, one item at a time.
        label: what the work is.
        total: how many items (default: ``len(items)`` when it has one).
        every: seconds between two progress lines.
        stream: where to print (default: standard error).

    Raises:
        TypeError, ValueError: as `ProgressReport` (at the call, not at the first item).
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    return _reporting(items, ProgressReport(total, label, every, stream))


def _reporting(items: Iterable[T], work: ProgressReport) -> Iterator[T]:
    for item in items:
        yield item
        work.update()
    work.finish()


# Old name -> new name. Kept as aliases that warn, once each: jobs written before the rename
# import the old names.
_RENAMED = {"progress": "report_progress", "Progress": "ProgressReport"}
_warned: set[str] = set()


def renamed(name: str, module: str = __name__) -> Any:
    """The object behind a deprecated name, warning the first time.

    Args:
        name: ``progress`` or ``Progress``.
        module: the module whose attribute was asked for, for the AttributeError.

    Raises:
        AttributeError: ``name`` is not a deprecated name either.
    """
    new = _RENAMED.get(name)
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    if name not in _warned:
        _warned.add(name)
        warnings.warn(
            f"geode_mpi.{name} is deprecated: use geode_mpi.{new} (same arguments)",
            DeprecationWarning,
            stacklevel=3,
        )
    return globals()[new]


def __getattr__(name: str) -> Any:
    return renamed(name)
