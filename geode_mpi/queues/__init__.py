"""Layer 3, queues: where messages wait between the transport and the user."""

from geode_mpi.queues.inbox import NEVER, Inbox, Key, Match, Parcel, monotonic_clock, wall_clock

__all__ = ["NEVER", "Inbox", "Key", "Match", "Parcel", "monotonic_clock", "wall_clock"]
