"""What ``python -m geode_mpi --info`` prints: versions, the MPI, its transport path, ranks."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import TYPE_CHECKING

from geode_mpi._version import __version__
from geode_mpi.base.launch import (
    CMA_VARIABLE,
    MPICH_FAMILY,
    OSC_CHOICE,
    OSC_VARIABLE,
    WrongPMIError,
    check_launch,
    library_line,
    prepare_mpi_environment,
)
from geode_mpi.base.ondemand import on_first_use
from geode_mpi.errors import GeodeError
from geode_mpi.transport.paths import nolocal_name, open_mpi_shared_memory

if TYPE_CHECKING:
    import numpy as np
    from mpi4py import MPI
else:  # imported when the information is asked for
    np = on_first_use("numpy", globals(), "np")

THREAD_LEVELS = ("single", "funneled", "serialized", "multiple")
MCA_NAMES = ("pml", "btl", "mtl")  # Open MPI's transport choices (OMPI_MCA_<name>)
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
    it, collectively: every rank must call it; without: only what needs no MPI)."""
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

    library = library_line(MPI.Get_library_version())
    major, minor = MPI.Get_version()
    level = MPI.Query_thread()
    names = {getattr(MPI, f"THREAD_{name.upper()}"): name for name in THREAD_LEVELS}
    size = MPI.COMM_WORLD.Get_size()
    host_count, on_first_host = hosts(MPI.COMM_WORLD)
    path = transport_path(library, host_count, os.environ)
    lines += [
        f"mpi4py {mpi4py.__version__}",
        f"MPI library: {library}",
        f"MPI standard: {major}.{minor}",
        f"thread level: {names.get(level, level)} (requested {mpi4py.rc.thread_level})",
        ranks_line(size, library),
        shared_groups(path, host_count, on_first_host, size),
        f"transport path: {path}",
        f"launcher detected: {'yes' if launch.under_launcher else 'no'}",
        f"cores: {launch.cores}, ranks on this host: {launch.local_ranks or 'unknown'}",
    ]
    if any(name in library for name in MPICH_FAMILY):  # (an MPICH setting: no other reads it)
        lines.append(
            f"{CMA_VARIABLE}: "
            + (
                "0 (set by geode_mpi: more ranks than cores)"
                if launch.cma_disabled_by_geode
                else os.environ.get(CMA_VARIABLE, "library default")
            )
        )
    lines += [
        "workarounds: "
        + workarounds(library, launch.cma_disabled_by_geode, launch.osc_chosen_by_geode),
    ]
    warning = signal_warning(os.environ)
    if warning is not None:
        lines.append(warning)
    return lines


def ranks_line(size: int, library: str) -> str:
    """The ``ranks`` line; for a world of one, the launch error if the launcher started more
    (`check_launch`), else that it is the embedded world."""
    if size != 1:
        return f"ranks: {size}"
    try:
        check_launch(os.environ, size, library)
    except WrongPMIError as exc:
        return f"ranks: {size} (geode_mpi: error: {exc})"
    return f"ranks: {size} (embedded world: all nodes in this process)"


def shared_groups(path: str, host_count: int, on_first_host: int, size: int) -> str:
    """The ``shared-memory groups`` line: the groups of ranks whose messages go by shared
    memory. On the network path within a host every rank is its own (MPICH's
    ``MPIR_CVAR_NOLOCAL=1`` shows it in its shared communicator; Open MPI without its ``sm``
    component still groups the host's ranks there, but sends between them by the network)."""
    if path.startswith("network within a host"):
        host_count, on_first_host = size, 1
    return f"shared-memory groups: {host_count} (ranks in rank 0's: {on_first_host})"


def signal_warning(environ: Mapping[str, str]) -> str | None:
    """A warning when the launcher kills the ranks too soon after a SIGTERM for a last
    checkpoint: Open MPI 5's mpirun (PRRTE, which sets PRTE_LAUNCHED) sends SIGTERM on, then
    SIGKILL 0.25 s later, a delay no setting changes (docs/mpis.md)."""
    if environ.get("PRTE_LAUNCHED") != "1":
        return None
    return (
        "SIGTERM: Open MPI's mpirun passes a SIGTERM or Ctrl-C on to the ranks, then kills them "
        "0.25 s later (fixed in PRRTE): no last checkpoint. Under SLURM launch with "
        "srun --mpi=pmix, or checkpoint often (docs/mpis.md#sigterm-under-open-mpi)"
    )


def hosts(comm: MPI.Intracomm) -> tuple[int, int]:
    """(hosts the ranks of ``comm`` run on, ranks on rank 0's host): collective."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        count = comm.allreduce(1 if local.Get_rank() == 0 else 0)
        return int(count), int(comm.bcast(local.Get_size(), root=0))
    finally:
        local.Free()


def transport_path(library: str, host_count: int, environ: Mapping[str, str]) -> str:
    """How messages travel, from the library's name and the settings it reads at start."""
    between = ", network between hosts" if host_count > 1 else ""
    if library.startswith("Open MPI"):
        mca = [f"{n}={environ[f'OMPI_MCA_{n}']}" for n in MCA_NAMES if f"OMPI_MCA_{n}" in environ]
        said = f"MCA {', '.join(mca)}" if mca else "Open MPI's default components"
        if not open_mpi_shared_memory(environ):
            return f"network within a host too ({said}){between}"
        return f"shared memory within a host ({said}){between}"
    if any(name in library for name in MPICH_FAMILY):
        net = f"netmod {environ.get('MPIR_CVAR_CH4_NETMOD', 'default')}"
        if "FI_PROVIDER" in environ:
            net += f", FI_PROVIDER={environ['FI_PROVIDER']}"
        nolocal = nolocal_name(environ)
        if nolocal is not None:
            return f"network within a host too ({nolocal}={environ[nolocal]}, {net})"
        return "shared memory within a host" + (
            f", network between hosts ({net})" * (host_count > 1)
        )
    return f"not known for this library{between}"


def workarounds(library: str, cma_disabled: bool, osc_chosen: bool = False) -> str:
    """What geode_mpi changed in the MPI's settings for this launch."""
    made = []
    if cma_disabled:
        effect = "" if any(name in library for name in MPICH_FAMILY) else " (no effect: not MPICH)"
        made.append(f"{CMA_VARIABLE}=0, MPICH's single copy off (ranks outnumber cores){effect}")
    if osc_chosen:
        effect = "" if library.startswith("Open MPI") else " (no effect: not Open MPI)"
        made.append(
            f"{OSC_VARIABLE}={OSC_CHOICE}, Open MPI's UCX one-sided component left out (its "
            f"error line at the shared segment){effect}"
        )
    return "; ".join(made) or "none"
