"""What the benchmark scripts share: the environment record, the JSON file, the rank check."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from geode_mpi import __version__
from geode_mpi.transport.launch import CMA_VARIABLE

RESULTS = Path(__file__).resolve().parent / "results"


def environment(mpi: Any) -> dict[str, Any]:
    """What a run's figures depend on: MPI library and thread level, versions, host, cores."""
    import mpi4py

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


def write_json(path: Path | None, report: dict[str, Any], benchmark: str) -> Path:
    """Write ``report`` to ``path`` (default: results/BENCHMARK-DATE-TIME.json); return it."""
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS / f"{benchmark}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def wrong_rank_count(world: Any, script: str) -> bool:
    """True (having said so on rank 0) unless the job has exactly the 2 ranks benchmarks need."""
    if world.Get_size() == 2:
        return False
    if world.Get_rank() == 0:
        print(
            f"{script} needs exactly 2 MPI ranks, got {world.Get_size()}: "
            f"run it as `mpiexec -n 2 python benchmarks/{script}`",
            file=sys.stderr,
        )
    return True
