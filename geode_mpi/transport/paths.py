"""Which ranks this rank reaches over the network path rather than shared memory.

What ``--info`` prints as the transport path (`geode_mpi.runner.info`), per peer: compression's
"auto" setting compresses only towards those ranks (docs/compression.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from geode_mpi.base.launch import launch_info, mpi_family

_TRUE = ("1", "true", "yes", "on")


def open_mpi_shared_memory(environ: Mapping[str, str]) -> bool:
    """Whether Open MPI's settings leave its shared-memory component (sm, vader in 4.x) on."""
    if environ.get("OMPI_MCA_pml", "") not in ("", "ob1"):
        return True  # ucx, cm: shared memory is the other library's own business
    btl = environ.get("OMPI_MCA_btl", "")
    if not btl:
        return True
    named = {"sm", "vader"} & set(btl.lstrip("^").split(","))
    return not named if btl.startswith("^") else bool(named)


# MPICH reads its NOLOCAL setting under any of these names; when several are set, the first
# here wins (measured on MPICH 5.0: each overrides the ones after it).
NOLOCAL_NAMES = tuple(
    prefix + name
    for name in ("NOLOCAL", "NO_LOCAL")
    for prefix in ("MPIR_CVAR_", "MPIR_PARAM_", "MPICH_")
)


def nolocal_name(environ: Mapping[str, str]) -> str | None:
    """The variable that tells MPICH to send even a host's own ranks over its network module
    (``MPIR_CVAR_NOLOCAL=1`` or one of its aliases), or None when none does."""
    for name in NOLOCAL_NAMES:
        if name in environ:
            return name if environ[name].lower() in _TRUE else None
    return None


def mpich_nolocal(environ: Mapping[str, str]) -> bool:
    """Whether MPICH is told to send even a host's own ranks over its network module."""
    return nolocal_name(environ) is not None


def network_within_host(environ: Mapping[str, str]) -> bool:
    """Whether the MPI's settings send even a host's own ranks over the network path
    (MPICH's ``MPIR_CVAR_NOLOCAL=1`` or an alias, Open MPI without its shared-memory component)."""
    if mpi_family(environ) == "openmpi":
        return not open_mpi_shared_memory(environ)
    return mpich_nolocal(environ)


def network_ranks(comm: Any) -> Callable[[int], bool]:
    """Whether each rank of ``comm`` is reached over the network path, from this rank.

    Collective over ``comm`` when its ranks may span hosts (a ``Split_type``, freed at once);
    no communication when the MPI's settings send everything over the network, or when the
    launcher says every rank runs on this host (the same answer on every rank).
    """
    own, size = comm.Get_rank(), comm.Get_size()
    if network_within_host(os.environ):
        return lambda rank: rank != own
    if launch_info().local_ranks == size:
        return _nowhere
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=own)
    here, there = local.Get_group(), comm.Get_group()
    try:
        ranks = MPI.Group.Translate_ranks(here, list(range(local.Get_size())), there)
    finally:
        here.Free()
        there.Free()
        local.Free()
    same_host = frozenset(ranks)
    return lambda rank: rank not in same_host


def network_peers(transport: Any) -> Callable[[int], bool]:
    """Whether each rank is reached over the network path, from this rank: what an MPI
    transport found when it started (`network_ranks`); nothing for the in-process one."""
    found = getattr(transport, "network", None)
    return found if callable(found) else _nowhere


def _nowhere(rank: int) -> bool:
    return False
