"""Layer 5, persistence: checkpoints of the message state in per-rank HDF5 files.

Imports the layers below it (never mpi4py); the core uses it to checkpoint and restart.
"""

from geode_mpi.persistence.manifest import KEY_VARIABLE, key_from_environment
from geode_mpi.persistence.rankfile import FORMAT, CheckpointError, RankFile, write_rank_file
from geode_mpi.persistence.store import CheckpointStore, Loaded

__all__ = [
    "FORMAT",
    "KEY_VARIABLE",
    "CheckpointError",
    "CheckpointStore",
    "Loaded",
    "RankFile",
    "key_from_environment",
    "write_rank_file",
]
