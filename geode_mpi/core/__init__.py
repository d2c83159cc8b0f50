"""Layer 4, the core: nodes, placement, point-to-point messaging on top of the transport."""

from geode_mpi.core.geode import Geode, SendHandle, close_all
from geode_mpi.core.placement import EMBEDDED_NODES, Placement, node_names

__all__ = ["EMBEDDED_NODES", "Geode", "Placement", "SendHandle", "close_all", "node_names"]
