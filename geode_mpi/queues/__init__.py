"""Layer 3, queues: where messages wait between the transport and the user."""

from geode_mpi.queues.inbox import Inbox, Key, Match, Parcel

__all__ = ["Inbox", "Key", "Match", "Parcel"]
