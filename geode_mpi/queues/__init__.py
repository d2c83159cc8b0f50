"""Layer 3, queues: where messages wait between the transport and the user."""

from geode_mpi.queues.bundles import Bundle
from geode_mpi.queues.inbox import NEVER, Inbox, Key, Match, Parcel, monotonic_clock, wall_clock

__all__ = ["NEVER", "Bundle", "Inbox", "Key", "Match", "Parcel", "monotonic_clock", "wall_clock"]
