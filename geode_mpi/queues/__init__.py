"""Layer 3, queues: where messages wait between the transport and the user."""

from geode_mpi.queues.bundles import Bundle
from geode_mpi.queues.inbox import Inbox
from geode_mpi.queues.parcels import (
    NEVER,
    TAKEN_BEFORE,
    Key,
    Match,
    Parcel,
    first_take,
    monotonic_clock,
    wall_clock,
)

__all__ = [
    "NEVER",
    "TAKEN_BEFORE",
    "Bundle",
    "Inbox",
    "Key",
    "Match",
    "Parcel",
    "first_take",
    "monotonic_clock",
    "wall_clock",
]
