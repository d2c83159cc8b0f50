"""How a benchmark starts: its common options, MPI with geode_mpi's launch settings, rank checks.

A benchmark runs as ``mpiexec -n N python benchmarks/NAME.py``; this module holds what every one
of them does before it measures, so that each script is only its own measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import parse_sizes


@dataclasses.dataclass
class Ranks:
    """The ranks a benchmark runs on: its private raw communicator and the MPI clock."""

    comm: Any
    rank: int
    size: int
    wtime: Callable[[], float]


def json_option(parser: argparse.ArgumentParser, benchmark: str) -> None:
    """``--json PATH``: where the numbers go (by default a dated file in benchmarks/results)."""
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help=f"where to write all numbers (default benchmarks/results/{benchmark}-DATE-TIME.json)",
    )


# Options whose default depends on --quick: name -> (the full run's default, --quick's, help).
Scaled = dict[str, tuple[float, float, str]]


def scaled_options(parser: argparse.ArgumentParser, scaled: Scaled, quick: str) -> None:
    """The ``scaled`` options (an int or a float, as their defaults), then ``--quick`` (help
    ``quick``); `parse_scaled` fills their defaults in."""
    for name, (full, fast, text) in scaled.items():
        parser.add_argument(
            f"--{name}", type=type(full), default=None, help=f"{text} ({full:g}, quick {fast:g})"
        )
    parser.add_argument("--quick", action="store_true", help=quick)


def parse_scaled(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, scaled: Scaled
) -> argparse.Namespace:
    """Parse ``argv``; each ``scaled`` option not given takes its full or --quick default, and
    the integer ones must be >= 1."""
    args = parser.parse_args(argv)
    for name, (full, fast, _) in scaled.items():
        if getattr(args, name) is None:
            setattr(args, name, fast if args.quick else full)
    at_least_one(parser, args, [name for name, (full, _, _) in scaled.items() if type(full) is int])
    return args


def sizes_option(parser: argparse.ArgumentParser, what: str, full: str, quick: str) -> None:
    """``--sizes``: comma-separated sizes of ``what``, with binary units; `fill_sizes` fills the
    default in."""
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help=f"comma-separated {what}, units Ki/Mi allowed (default {full}; quick {quick})",
    )


def fill_sizes(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    full: Sequence[int],
    quick: Sequence[int],
) -> None:
    """``--sizes`` not given: the full run's or --quick's; given, at least one."""
    if args.sizes is None:
        args.sizes = list(quick if args.quick else full)
    if not args.sizes:
        parser.error("--sizes must name at least one size")


def at_least_one(
    parser: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]
) -> None:
    """Refuse (argparse's exit status 2) any of these integer options below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")


def start_mpi(
    script: str, least: int = 2, *, exactly: bool = False, why: str = "", suggest: int = 2
) -> Any | None:
    """MPI, started with geode_mpi's launch settings, so raw and geode run alike (the settings,
    such as turning MPICH's single-copy path off when ranks outnumber cores, apply before MPI
    initialises, to every method measured); None (having said why on rank 0) unless the job
    has the ranks ``script`` needs (see `ranks_refused`)."""
    from geode_mpi.transport import prepare_mpi_environment

    prepare_mpi_environment()
    from mpi4py import MPI

    refused = ranks_refused(
        MPI.COMM_WORLD, script, least, exactly=exactly, why=why, suggest=suggest
    )
    return None if refused else MPI


def ranks_refused(
    world: Any, script: str, least: int, *, exactly: bool = False, why: str = "", suggest: int = 2
) -> bool:
    """True (having said so on rank 0) unless the job has the ranks ``script`` needs: ``least``
    or more, or exactly ``least``. ``why`` names the roles (" (a master and 2 workers)")."""
    count = world.Get_size()
    if count == least or (count > least and not exactly):
        return False
    if world.Get_rank() == 0:
        print(
            f"{script} needs {'exactly' if exactly else 'at least'} {least} MPI ranks{why}, got "
            f"{count}: run it as `mpiexec -n {suggest} python benchmarks/{script}`",
            file=sys.stderr,
        )
    return True
