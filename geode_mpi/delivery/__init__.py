"""Layer 4, delivery: acknowledgements, outboxes, dedup and order, credits, retries, stats."""

from geode_mpi.delivery.config import ACK_MODES, POLICIES, QueueConfig
from geode_mpi.delivery.engine import Acknowledger, Engine
from geode_mpi.delivery.pairs import OutboxEntry
from geode_mpi.delivery.stats import DeadLetter, NodeStats

__all__ = [
    "ACK_MODES",
    "POLICIES",
    "DeadLetter",
    "Engine",
    "NodeStats",
    "OutboxEntry",
    "QueueConfig",
    "Acknowledger",
]
