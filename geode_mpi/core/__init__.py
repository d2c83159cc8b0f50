"""Layer 6, the core: the user API (Geode, topics, work queues, groups, checkpoints) on delivery.

It takes from the transport only its package, `geode_mpi.transport` (open_world, the contract
and the services over MPI), never a sub-module; shared pure helpers come from `geode_mpi.base`.
"""

from geode_mpi.core.geode import Geode
from geode_mpi.core.handles import SendHandle
from geode_mpi.core.placement import EMBEDDED_NODES, Placement, node_names
from geode_mpi.core.registry import close_all

__all__ = ["EMBEDDED_NODES", "Geode", "Placement", "SendHandle", "close_all", "node_names"]
