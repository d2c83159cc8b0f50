"""Layer 2, transports: move (meta, frames) between ranks. Knows nothing of pickle.

The contract is three capability protocols, `PointToPoint`, `BroadcastStreams` and
`Collectives`; `Transport` is all three (see transport/base.py). Only this layer and the runner
import mpi4py, and only when a launcher started the job.

This module is the transport's one public surface: the core imports from here and never from a
sub-module (tests/unit/test_api.py checks it): `open_world`, the contract types and `require`,
and the services over MPI the core uses (`Rooted` collectives for checkpoints, `Notices`, the
hang `Watchdog`, `abort_world`). Pure helpers the transport shares with the layers above (the
gate, the back-off, launcher facts, rank labels, tree arithmetic) live in `geode_mpi.base`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from geode_mpi.base.backoff import Backoff, together_backoff
from geode_mpi.base.launch import (
    check_launch,
    library_line,
    prepare_mpi_environment,
    under_launcher,
)
from geode_mpi.transport.abort import abort_world, install_abort_hook
from geode_mpi.transport.base import (
    SETTINGS,
    BroadcastStreams,
    Collectives,
    PointToPoint,
    SendTicket,
    Sink,
    Transport,
    TransportBase,
    require,
)
from geode_mpi.transport.inproc import InProcHub, InProcTransport
from geode_mpi.transport.notice import StartupNotice, WaitNotice, internal, wait_notice
from geode_mpi.transport.notices import Notices
from geode_mpi.transport.paths import network_peers
from geode_mpi.transport.rooted import Rooted
from geode_mpi.transport.watchdog import Watchdog, hang_timeout, transport_state

if TYPE_CHECKING:  # importing mpi4py.MPI at run time would initialise MPI
    from collections.abc import Callable

    from mpi4py import MPI


def open_world(
    comm: MPI.Intracomm | None = None, initialised: Callable[[], None] | None = None
) -> Transport:
    """The transport for this process: MPI when launched with more than one rank, else in-process.

    Args:
        comm: an MPI communicator to use instead of COMM_WORLD (implies MPI).
        initialised: called once MPI is initialised, before the communicator is duplicated
            (Geode()'s start-up timer, `StartupNotice.begin`).

    Raises:
        WrongPMIError: srun or an MPI launcher started several ranks that MPI sees as worlds
            of one rank (a launcher of another MPI than the one mpi4py loaded).
        TypeError: ``comm`` is not an MPI communicator.
    """
    if comm is not None and not callable(getattr(comm, "Get_size", None)):
        # (told before MPI starts: a mistake, not a reason to initialise MPI)
        raise TypeError(
            f"comm must be an mpi4py intracommunicator (MPI.COMM_WORLD or one split from it), "
            f"got {comm!r}"
        )
    launched = dict(os.environ)  # before MPI starts and may add variables of its own
    if comm is None and not under_launcher():
        check_launch(launched, 1)
        return InProcHub(1).endpoint(0)
    prepare_mpi_environment()
    from mpi4py import MPI

    from geode_mpi.transport.mpi import MPITransport

    if initialised is not None:
        initialised()
    if comm is None:
        check_launch(launched, MPI.COMM_WORLD.Get_size(), library_line(MPI.Get_library_version()))
    base = MPI.COMM_WORLD if comm is None else comm
    if base.Get_size() == 1:
        return InProcHub(1).endpoint(0)
    install_abort_hook(MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size())
    return MPITransport(base)


__all__ = [
    "SETTINGS",
    "Backoff",
    "BroadcastStreams",
    "Collectives",
    "InProcHub",
    "InProcTransport",
    "Notices",
    "PointToPoint",
    "Rooted",
    "SendTicket",
    "Sink",
    "StartupNotice",
    "Transport",
    "TransportBase",
    "WaitNotice",
    "Watchdog",
    "abort_world",
    "hang_timeout",
    "internal",
    "network_peers",
    "open_world",
    "together_backoff",
    "prepare_mpi_environment",
    "require",
    "transport_state",
    "under_launcher",
    "wait_notice",
]
