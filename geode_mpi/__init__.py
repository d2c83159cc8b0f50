"""geode_mpi: a message layer for HPC jobs in Python, built on MPI."""

from geode_mpi._version import __version__
from geode_mpi.core import Geode, SendHandle
from geode_mpi.core.progress import Progress, progress
from geode_mpi.core.topics import PublishHandle, Topic
from geode_mpi.core.workqueues import WorkDone, WorkQueue
from geode_mpi.delivery import DeadLetter, NodeStats, QueueConfig
from geode_mpi.errors import (
    AckTimeout,
    ClosedError,
    DecodeError,
    EncodeError,
    GeodeError,
    GeodeTimeoutError,
    NodeNotLocalError,
    QueueFull,
    ReceiveTimeout,
    SendTimeout,
    Terminated,
    ThreadError,
    UnknownNodeError,
    WorldMismatchError,
)
from geode_mpi.message import Message
from geode_mpi.transport.launch import WrongPMIError

__all__ = [
    "AckTimeout",
    "ClosedError",
    "DeadLetter",
    "DecodeError",
    "EncodeError",
    "Geode",
    "GeodeError",
    "GeodeTimeoutError",
    "Message",
    "NodeNotLocalError",
    "NodeStats",
    "Progress",
    "PublishHandle",
    "QueueConfig",
    "QueueFull",
    "ReceiveTimeout",
    "SendHandle",
    "SendTimeout",
    "Terminated",
    "ThreadError",
    "Topic",
    "UnknownNodeError",
    "WorkDone",
    "WorkQueue",
    "WorldMismatchError",
    "WrongPMIError",
    "progress",
    "__version__",
]
