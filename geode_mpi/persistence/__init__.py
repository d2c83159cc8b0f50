"""Layer 6, persistence: checkpoints of the message state in per-rank HDF5 files.

Imports the layers below it (never mpi4py); the core uses it to checkpoint and restart.
"""

from geode_mpi.persistence.store import (
    FORMAT,
    CheckpointError,
    CheckpointStore,
    Loaded,
    RankFile,
    write_rank_file,
)

__all__ = [
    "FORMAT",
    "CheckpointError",
    "CheckpointStore",
    "Loaded",
    "RankFile",
    "write_rank_file",
]
