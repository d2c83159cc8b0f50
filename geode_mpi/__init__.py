"""geode_mpi: a message layer for HPC jobs in Python, built on MPI."""

from geode_mpi._version import __version__
from geode_mpi.core import Geode, SendHandle
from geode_mpi.errors import (
    ClosedError,
    DecodeError,
    EncodeError,
    GeodeError,
    GeodeTimeoutError,
    NodeNotLocalError,
    ReceiveTimeout,
    SendTimeout,
    UnknownNodeError,
    WorldMismatchError,
)
from geode_mpi.message import Message

__all__ = [
    "ClosedError",
    "DecodeError",
    "EncodeError",
    "Geode",
    "GeodeError",
    "GeodeTimeoutError",
    "Message",
    "NodeNotLocalError",
    "ReceiveTimeout",
    "SendHandle",
    "SendTimeout",
    "UnknownNodeError",
    "WorldMismatchError",
    "__version__",
]
