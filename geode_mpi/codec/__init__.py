"""Layer 1, the codec: Messages to (meta, frames) and back. Knows nothing of MPI."""

from geode_mpi.codec.classes import resolve, short_name
from geode_mpi.codec.decoding import decode
from geode_mpi.codec.header import (
    FLAG_QOS,
    FLAG_RESENT,
    FLAG_SEQUENCE,
    FLAG_TOPIC,
    FLAG_TRACKED,
    FLAG_WAITED,
    FLAG_WORK,
    NO_REPLY,
    REQUEST,
    Route,
    Track,
    qos_route,
)
from geode_mpi.codec.peeking import class_name_of, make_stamp, peek
from geode_mpi.codec.records import control_payload, encode_control, is_control, track
from geode_mpi.codec.wire import encode
from geode_mpi.codec.wire_parts import Peek, Stamp

__all__ = [
    "FLAG_QOS",
    "FLAG_RESENT",
    "FLAG_SEQUENCE",
    "FLAG_TOPIC",
    "FLAG_TRACKED",
    "FLAG_WAITED",
    "FLAG_WORK",
    "NO_REPLY",
    "REQUEST",
    "Peek",
    "Route",
    "Stamp",
    "Track",
    "class_name_of",
    "control_payload",
    "decode",
    "encode",
    "encode_control",
    "is_control",
    "make_stamp",
    "peek",
    "qos_route",
    "resolve",
    "short_name",
    "track",
]
