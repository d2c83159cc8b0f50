"""What ``python -m geode_mpi --info`` prints: versions, MPI library, thread level, ranks."""

from __future__ import annotations

import platform

import numpy as np

from geode_mpi._version import __version__
from geode_mpi.transport.launch import CMA_VARIABLE, prepare_mpi_environment

THREAD_LEVELS = ("single", "funneled", "serialized", "multiple")


def info_lines() -> list[str]:
    """Lines describing this installation and launch (initialises MPI to ask it)."""
    launch = prepare_mpi_environment()
    lines = [
        f"geode_mpi {__version__}",
        f"python {platform.python_version()} ({platform.python_implementation()})",
        f"numpy {np.__version__}",
    ]
    try:
        import mpi4py
        from mpi4py import MPI
    except Exception as exc:
        lines.append(f"mpi4py: not usable ({type(exc).__name__}: {exc})")
        return lines
    version = MPI.Get_library_version().strip().splitlines()[0]
    major, minor = MPI.Get_version()
    level = MPI.Query_thread()
    names = {getattr(MPI, f"THREAD_{name.upper()}"): name for name in THREAD_LEVELS}
    size = MPI.COMM_WORLD.Get_size()
    lines += [
        f"mpi4py {mpi4py.__version__}",
        f"MPI library: {version}",
        f"MPI standard: {major}.{minor}",
        f"thread level: {names.get(level, level)} (requested {mpi4py.rc.thread_level})",
        f"ranks: {size}" + (" (embedded world: all nodes in this process)" if size == 1 else ""),
        f"launcher detected: {'yes' if launch.under_launcher else 'no'}",
        f"cores: {launch.cores}, ranks on this host: {launch.local_ranks or 'unknown'}",
        f"{CMA_VARIABLE}: "
        + (
            "0 (set by geode_mpi: more ranks than cores)"
            if launch.cma_disabled_by_geode
            else __import__("os").environ.get(CMA_VARIABLE, "library default")
        ),
    ]
    return lines
