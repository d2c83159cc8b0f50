"""How the benchmarks report: the header's MPI lines, fixed-width tables, the JSON file."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import write_json

from geode_mpi.base.launch import CMA_VARIABLE


def started() -> str:
    """Now, local time with its offset, to the second: a run's ``started`` field."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def mpi_line(env: dict[str, Any]) -> str:
    """The MPI library, mpi4py and the thread level: a run's figures depend on them."""
    return (
        f"MPI library: {env['mpi_library']} (mpi4py {env['mpi4py']}, "
        f"thread level {env['thread_level']})"
    )


def cma_line(env: dict[str, Any]) -> str:
    """MPICH's single-copy setting (it doubles large-message bandwidth): compare runs only when
    it matches."""
    cma = env[CMA_VARIABLE]
    return f"{CMA_VARIABLE}={'unset (library default)' if cma is None else cma}"


def header(env: dict[str, Any], title: str, quick: bool) -> list[str]:
    """A table's header: its title (`` (quick)`` after it with ``--quick``) and the MPI lines."""
    return [title + (" (quick)" if quick else ""), mpi_line(env), cma_line(env)]


def ranks_on_cores(env: dict[str, Any], ranks: str = "ranks") -> str:
    """``4 ranks (oversubscribed) on 2 cores``: oversubscribed when the job runs more ranks
    than the host has cores."""
    count, cores = env["ranks"], env["cores"]
    load = " (oversubscribed)" if cores is not None and count > cores else ""
    return f"{count} {ranks}{load} on {cores} cores"


class Table:
    """A table of right-aligned columns, each ``(title, width)``."""

    def __init__(self, columns: Sequence[tuple[str, int]]) -> None:
        self.columns = columns
        self.rule = "-" * sum(width for _, width in columns)

    def row(self, cells: Sequence[str]) -> str:
        return "".join(
            f"{cell:>{width}}" for cell, (_, width) in zip(cells, self.columns, strict=True)
        )

    def head(self) -> list[str]:
        """The titles and a rule under them."""
        return [self.row([title for title, _ in self.columns]), self.rule]


def finish(
    path: Path | None,
    benchmark: str,
    head: tuple[str, float, dict[str, Any], dict[str, Any]],
    numbers: dict[str, Any],
) -> None:
    """Write the JSON file (see `common.write_json`): the benchmark's name, then ``head`` (when
    it started, its seconds, its settings and the environment), then its ``numbers``; and say
    where, after the run's time."""
    began, seconds, settings, env = head
    record = {"benchmark": benchmark, "started": began, "seconds": seconds}
    record |= {"settings": settings, "environment": env} | numbers
    written = write_json(path, record, benchmark)
    print(f"{seconds:.1f} s; all numbers in {written}")
