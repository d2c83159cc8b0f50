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


def network_within_host(environ: Mapping[str, str]) -> bool:
    """Whether the MPI's settings send even a host's own ranks over the network path
    (MPICH's ``MPIR_CVAR_NOLOCAL=1``, Open MPI without its shared-memory component)."""
    if mpi_family(environ) == "openmpi":
        return not open_mpi_shared_memory(environ)
    return environ.get("MPIR_CVAR_NOLOCAL", "").lower() in _TRUE


def network_peers(transport: Any) -> Callable[[int], bool]:
    """Whether each rank is reached over the network path, from this rank.

    Collective over an MPI transport's ranks when they may span hosts (a ``Split_type`` of
    its communicator, freed at once); no communication when the launcher says every rank
    runs on this host. The in-process transport reaches nothing over a network.
    """
    comm = getattr(transport, "comm", None)
    if comm is None or not hasattr(comm, "Split_type"):
        return _nowhere
    own, size = transport.rank, transport.size
    if network_within_host(os.environ):
        return lambda rank: rank != own
    if launch_info().local_ranks == size:  # the same value on every rank: all on this host
        return _nowhere
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=own)
    try:
        ranks = MPI.Group.Translate_ranks(
            local.Get_group(), list(range(local.Get_size())), comm.Get_group()
        )
    finally:
        local.Free()
    same_host = frozenset(ranks)
    return lambda rank: rank not in same_host


def _nowhere(rank: int) -> bool:
    return False
