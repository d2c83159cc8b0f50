"""What the benchmark scripts share: sizes, the environment record, the JSON file.

The rest is in small modules beside it: launch.py (options, starting MPI, rank checks),
timing.py (the clock and paired ratios), baseline.py (the raw mpi4py message and arrays),
reporting.py (the header's MPI lines, tables, what the JSON file holds).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
_UNITS = {"": 1, "b": 1, "k": KiB, "ki": KiB, "kib": KiB, "m": MiB, "mi": MiB, "mib": MiB}
_SIZE = re.compile(r"(\d+)\s*([a-z]*)")


def parse_size(text: str, least: int = 1) -> int:
    """A byte count such as ``64``, ``4Ki``, ``1MiB`` or ``16M`` (binary units), >= ``least``."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None or match.group(2) not in _UNITS:
        raise argparse.ArgumentTypeError(
            f"size must be a number of bytes with an optional unit (Ki, Mi), got {text!r}"
        )
    size = int(match.group(1)) * _UNITS[match.group(2)]
    if size < least:
        raise argparse.ArgumentTypeError(f"size must be >= {least} bytes, got {text!r}")
    return size


def parse_sizes(text: str) -> list[int]:
    """A comma-separated list of sizes."""
    return [parse_size(part) for part in text.split(",") if part.strip()]


def size_label(size: int) -> str:
    """``8 B``, ``64 KiB``, ``16 MiB``: the largest binary unit that divides ``size``."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def environment(mpi: Any) -> dict[str, Any]:
    """What a run's figures depend on: MPI library and thread level, versions, host, cores."""
    import mpi4py

    from geode_mpi import __version__
    from geode_mpi.base.launch import CMA_VARIABLE

    levels = {
        getattr(mpi, f"THREAD_{name}"): name.lower()
        for name in ("SINGLE", "FUNNELED", "SERIALIZED", "MULTIPLE")
    }
    return {
        "mpi_library": mpi.Get_library_version().strip().splitlines()[0].strip(),
        "mpi4py": mpi4py.__version__,
        "thread_level": levels.get(mpi.Query_thread(), str(mpi.Query_thread())),
        CMA_VARIABLE: os.environ.get(CMA_VARIABLE),
        "geode_mpi": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cores": os.cpu_count(),
        "ranks": mpi.COMM_WORLD.Get_size(),
    }


def revision() -> str:
    """The geode_mpi commit measured, and whether geode_mpi/ had uncommitted changes."""
    tree = Path(__file__).resolve().parent.parent
    try:
        commit, dirty = (
            subprocess.run(
                ["git", "-C", str(tree), *command], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            for command in (
                ["rev-parse", "--short", "HEAD"],
                ["status", "--porcelain", "geode_mpi"],
            )
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + (" with uncommitted changes in geode_mpi/" if dirty else "")


def write_json(path: Path | None, report: dict[str, Any], benchmark: str) -> Path:
    """Write ``report`` to ``path`` (default: results/BENCHMARK-DATE-TIME.json); return it."""
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS / f"{benchmark}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
