"""How this process was launched, and the MPI settings that must be made before MPI starts."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass

# Set by MPI launchers (MPICH hydra, Open MPI, PMIx, SLURM's PMI plugins) in every rank.
LAUNCHER_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMI_FD",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "HYDI_CONTROL_FD",
)
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_SIZE", "SLURM_NTASKS")
CMA_VARIABLE = "MPIR_CVAR_CH4_CMA_ENABLE"
MODE_VARIABLE = "GEODE_TRANSPORT"  # "mpi" or "inproc" forces a choice; unset means detect


@dataclass(frozen=True)
class LaunchInfo:
    """What the environment says about this launch."""

    under_launcher: bool
    local_ranks: int | None
    cores: int
    cma_disabled_by_geode: bool


_info: LaunchInfo | None = None


def _local_ranks(environ: MutableMapping[str, str]) -> int | None:
    for name in LOCAL_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: taskset, cpusets, SLURM's cgroups)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def under_launcher(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when an MPI launcher started this process (or GEODE_TRANSPORT=mpi forces MPI)."""
    env = os.environ if environ is None else environ
    mode = env.get(MODE_VARIABLE, "").strip().lower()
    if mode in ("mpi", "inproc"):
        return mode == "mpi"
    if mode:
        raise ValueError(f"{MODE_VARIABLE} must be 'mpi' or 'inproc', got {mode!r}")
    return any(name in env for name in LAUNCHER_VARIABLES)


def prepare_mpi_environment(environ: MutableMapping[str, str] | None = None) -> LaunchInfo:
    """Make settings that MPI reads at initialisation; call before importing mpi4py.MPI.

    When more ranks share this machine than it has cores, MPICH's single-copy (CMA) path can
    hang (docs/debugging.md), so it is turned off unless the user chose a setting.
    """
    global _info
    if environ is None and _info is not None:
        return _info
    env = os.environ if environ is None else environ
    local = _local_ranks(env)
    cores = usable_cores()
    disable = CMA_VARIABLE not in env and local is not None and local > cores
    if disable:
        env[CMA_VARIABLE] = "0"
    info = LaunchInfo(under_launcher(env), local, cores, disable)
    if environ is None:
        _info = info
    return info


def launch_info() -> LaunchInfo:
    """The LaunchInfo recorded when geode_mpi prepared MPI (or a fresh reading)."""
    return _info if _info is not None else prepare_mpi_environment({**os.environ})
