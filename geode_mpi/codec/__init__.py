"""Layer 1, the codec: Messages to (meta, frames) and back. Knows nothing of MPI."""

from geode_mpi.codec.classes import resolve, short_name
from geode_mpi.codec.wire import Peek, Stamp, decode, encode, make_stamp, peek, route

__all__ = [
    "Peek",
    "Stamp",
    "decode",
    "encode",
    "make_stamp",
    "peek",
    "route",
    "resolve",
    "short_name",
]
