"""geode_mpi: a message layer for HPC jobs in Python, built on MPI."""

import typing as _typing

from geode_mpi._version import __version__
from geode_mpi.codec.compression import Compression
from geode_mpi.core import Geode, SendHandle
from geode_mpi.core import progress as _progress
from geode_mpi.core.groups import Group
from geode_mpi.core.handles_batch import BatchHandle
from geode_mpi.core.processing import RunSummary, Stop
from geode_mpi.core.progress import ProgressReport, report_progress
from geode_mpi.core.subscriptions import Subscription
from geode_mpi.core.topics import PublishHandle, Topic
from geode_mpi.core.workqueues import WorkDone, WorkQueue
from geode_mpi.delivery import DeadLetter, NodeStats, QueueConfig
from geode_mpi.delivery.cache import CacheStats, share
from geode_mpi.errors import (
    AckTimeout,
    CheckpointError,
    ClosedError,
    DecodeError,
    EncodeError,
    GeodeError,
    GeodeTimeoutError,
    HandlerError,
    NodeNotLocalError,
    NotProcessed,
    QueueFull,
    ReceiveTimeout,
    RemoteTraceback,
    SendTimeout,
    TaskError,
    Terminated,
    ThreadError,
    UnknownNodeError,
    WorldMismatchError,
    WrongPMIError,
)
from geode_mpi.message import Message, Receipt
from geode_mpi.transport import Transport

if _typing.TYPE_CHECKING:  # loaded on first use (concurrent.futures loads logging): __getattr__
    from geode_mpi.core.executor import GeodeExecutor

__all__ = [
    "AckTimeout",
    "BatchHandle",
    "CacheStats",
    "CheckpointError",
    "ClosedError",
    "Compression",
    "DeadLetter",
    "DecodeError",
    "EncodeError",
    "Geode",
    "GeodeError",
    "GeodeExecutor",
    "GeodeTimeoutError",
    "Group",
    "HandlerError",
    "Message",
    "NodeNotLocalError",
    "NodeStats",
    "NotProcessed",
    "ProgressReport",
    "PublishHandle",
    "QueueConfig",
    "QueueFull",
    "Receipt",
    "ReceiveTimeout",
    "RemoteTraceback",
    "RunSummary",
    "SendHandle",
    "SendTimeout",
    "Stop",
    "Subscription",
    "TaskError",
    "Terminated",
    "ThreadError",
    "Topic",
    "Transport",
    "UnknownNodeError",
    "WorkDone",
    "WorkQueue",
    "WorldMismatchError",
    "WrongPMIError",
    "report_progress",
    "share",
    "__version__",
]


def __getattr__(name: str) -> object:
    if name == "GeodeExecutor":
        from geode_mpi.core.executor import GeodeExecutor

        globals()[name] = GeodeExecutor  # (the next look finds it without this call)
        return GeodeExecutor
    # The old names of the progress printer (progress, Progress) warn once, then work.
    return _progress.renamed(name, __name__)
