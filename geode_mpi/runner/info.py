"""What ``python -m geode_mpi --info`` prints: versions, MPI library, thread level, ranks."""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING

from geode_mpi._version import __version__
from geode_mpi.base.launch import CMA_VARIABLE, prepare_mpi_environment
from geode_mpi.base.ondemand import on_first_use
from geode_mpi.errors import GeodeError

if TYPE_CHECKING:
    import numpy as np
else:  # imported when the information is asked for
    np = on_first_use("numpy", globals(), "np")

THREAD_LEVELS = ("single", "funneled", "serialized", "multiple")
FIX = (
    "install the bundled MPI runtime with `pip install geode_mpi[mpich]` (from a checkout: "
    "pip install -e '.[mpich]'), or on a cluster build mpi4py on the site's MPI: "
    "`MPICC=mpicc pip install --no-binary=mpi4py --force-reinstall mpi4py` (see "
    "docs/index.md#install)"
)


class MPIUnusable(GeodeError, RuntimeError):
    """mpi4py cannot be imported, or cannot load an MPI library."""


def mpi_usable() -> None:
    """Load mpi4py and its MPI library (which initialises MPI).

    Raises:
        MPIUnusable: either fails; the message names the cause and the fix.
    """
    prepare_mpi_environment()
    try:
        from mpi4py import MPI  # noqa: F401
    except Exception as exc:
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
        raise MPIUnusable(f"no usable MPI library ({cause}): {FIX}") from exc


def info_lines(mpi: bool = True) -> list[str]:
    """Lines describing this installation and launch (with ``mpi``: initialises MPI to ask
    it; without: only what needs no MPI)."""
    launch = prepare_mpi_environment()
    lines = [
        f"geode_mpi {__version__}",
        f"python {platform.python_version()} ({platform.python_implementation()})",
        f"numpy {np.__version__}",
    ]
    if not mpi:
        return [*lines, "MPI library: none could be loaded"]
    import mpi4py
    from mpi4py import MPI

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
