"""Layer 1, the codec: Messages to (meta, frames) and back. Knows nothing of MPI."""

from geode_mpi.codec.classes import resolve, short_name
from geode_mpi.codec.wire import (
    FLAG_RESENT,
    FLAG_SEQUENCE,
    FLAG_TOPIC,
    FLAG_TRACKED,
    FLAG_WAITED,
    NO_REPLY,
    Peek,
    Stamp,
    Track,
    control_payload,
    decode,
    encode,
    encode_control,
    is_control,
    make_stamp,
    peek,
    track,
)

__all__ = [
    "FLAG_RESENT",
    "FLAG_SEQUENCE",
    "FLAG_TOPIC",
    "FLAG_TRACKED",
    "FLAG_WAITED",
    "NO_REPLY",
    "Peek",
    "Stamp",
    "Track",
    "control_payload",
    "decode",
    "encode",
    "encode_control",
    "is_control",
    "make_stamp",
    "peek",
    "resolve",
    "short_name",
    "track",
]
