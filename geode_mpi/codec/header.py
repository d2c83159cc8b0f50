"""The header of an encoded message: its layout, kinds, flags and version, and named accessors.

Every layer that reads a header reads it here (docs/wire-format.md, "Meta", has the table):

    0 u8 version | 1 u8 kind | 2 u8 flags | 3 u8 route | 4 i64 id | 12 u64 seq
    20 f64 timestamp | 28 u32 source | 32 u32 dest | 36 u16 class-name length
    38 u16 route-section length | 40 u32 data frames | 44 u32 data length
    48 i64 reply_to | 56 u32 Adler-32 of the pickled sections | 60 u32 route number
    then: class name | route section | data section | rest section

The accessors that run on every message (`track_fields`, `kind`) are the struct's own methods
or a byte index, so they cost no Python call of their own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from geode_mpi.errors import DecodeError

VERSION = 6  # 6: compressed frames (FLAG_COMPRESSED); 5: Adler-32; 4: routing fields, a CRC-32

KIND_PICKLE = 0
KIND_ARRAY = 1  # an array in its own frame
KIND_SMALL_ARRAY = 2  # a small array's bytes inside meta, after its descriptor (8-aligned)
KIND_CONTROL = 3  # not a message: the delivery layer's bytes (acknowledgements, credits)
KIND_TEXT = 4  # a str, as UTF-8 (no pickle either way)

FLAG_REST = 1  # a rest section (headers, extra attributes) follows the data section
FLAG_TRACKED = 2  # the sender keeps the message until it is acknowledged
FLAG_WAITED = 4  # the sender waits for this acknowledgement: send it at once
FLAG_RESENT = 8  # a copy sent again after an acknowledgement timeout
FLAG_SEQUENCE = 16  # for a group's sequencer: forward to the group's members, in one order
FLAG_TOPIC = 32  # published on a topic: dest is the topic's wire number, not a node
FLAG_WORK = 64  # a work queue's task: source is the queue's stream number, not a node
# Some frames are compressed: meta ends with their table (`geode_mpi.codec.compression`). Set
# after encoding, so not one of the SENDER_FLAGS that encode takes.
FLAG_COMPRESSED = 128
SENDER_FLAGS = FLAG_TRACKED | FLAG_WAITED | FLAG_RESENT | FLAG_SEQUENCE | FLAG_TOPIC | FLAG_WORK

ROUTE_NONE = 0
ROUTE_TOPIC = 1  # to a total-order topic's sequencer: the number is the topic's wire number
ROUTE_WORK = 2  # to a work queue's dispatcher: the number is the queue's stream number
ROUTE_GROUP = 3  # to a group's sequencer: the route section holds the group and its members

NO_REPLY = -1

HEAD = struct.Struct("<BBBBqQdIIHHIIqII")
SIZE = HEAD.size
# HEAD for a message without a route (encode's fast paths): route, route length and number
# are zero pad bytes, each field fewer to convert is ~2% of a small message's encoding.
PLAIN = struct.Struct("<BBBxqQdIIH2xIIqI4x")
# What decode reads first: the same without the route fields, and the class-name and route
# lengths as one u32 (0: a plain Message without a route section).
DECODE = struct.Struct("<BBBxqQdIIIIIqI4x")
KIND_AT = 1  # the kind's byte: ``meta[KIND_AT]``
FLAGS_AT = 2
ROUTE_AT = 3
ID_AT = 4
TIMESTAMP_AT = 20
NAME_LEN_AT = 36
ROUTE_LEN_AT = 38
DATA_LEN_AT = 44
CHECKSUM_AT = 56
NUMBER_AT = 60

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ID = struct.Struct("<q")
_TIMESTAMP = struct.Struct("<d")
_TRACK = struct.Struct("<2xB9xQ8xII12xq")

# flags, seq, source, dest, reply_to of a header (unchecked: see `codec.track` for a checked
# read); ``track_fields(meta)`` reads them at offset 0. The struct's own method: no Python call.
track_fields: Callable[..., tuple[Any, ...]] = _TRACK.unpack_from


class Track(NamedTuple):
    """What delivery needs from a message's header, read without decoding it."""

    flags: int
    seq: int
    source: int
    dest: int
    reply_to: int


class Route(NamedTuple):
    """Where a sequencer or dispatcher sends a message on: a topic, a work queue or a group."""

    kind: int  # ROUTE_TOPIC, ROUTE_WORK or ROUTE_GROUP
    number: int = 0  # the topic's wire number or the queue's stream number
    group: str = ""  # the group's name
    members: tuple[int, ...] = ()  # the group's member node indices

    def section(self) -> bytes:
        """The route section: the member indices (u32 each), then the group's name (UTF-8)."""
        if self.kind != ROUTE_GROUP:
            return b""
        return struct.pack(f"<{len(self.members)}I", *self.members) + self.group.encode()

    def number_field(self) -> int:
        """The header's route number: a group's member count, else `number`."""
        return len(self.members) if self.kind == ROUTE_GROUP else self.number


def kind(meta: bytes | memoryview) -> int:
    """The kind of an encoded message (`KIND_CONTROL`: a control record)."""
    return meta[KIND_AT]


def with_flags(meta: bytes | memoryview, *, add: int = 0, clear: int = 0) -> bytes:
    """A copy of an encoded meta with the flags ``add`` set, then the flags ``clear`` cleared.

    For the cold paths that send a message again (a resend, a topic's replay); the frames
    and the checksum (which covers only the pickled sections) stay valid.
    """
    out = bytearray(meta)
    out[FLAGS_AT] = (out[FLAGS_AT] | add) & ~clear & 0xFF
    return bytes(out)


def message_id(meta: bytes | memoryview) -> int:
    """The id the sender stamped."""
    return int(_ID.unpack_from(meta, ID_AT)[0])


def timestamp(meta: bytes | memoryview) -> float:
    """The sender's ``time.time()`` when it sent the message."""
    return float(_TIMESTAMP.unpack_from(meta, TIMESTAMP_AT)[0])


def data_length(meta: bytes | memoryview) -> int:
    """The data section's length (a control record's payload length)."""
    return int(_U32.unpack_from(meta, DATA_LEN_AT)[0])


def checksum(meta: bytes | memoryview) -> int:
    """The Adler-32 of the pickled sections the sender stored."""
    return int(_U32.unpack_from(meta, CHECKSUM_AT)[0])


def source(meta: bytes | memoryview) -> int:
    """The source field: the sending node's index (a work queue's task: the queue's stream)."""
    return int(track_fields(meta)[2])


def topic_number(meta: bytes | memoryview) -> int:
    """The topic's wire number of a message published on a topic (`FLAG_TOPIC`: its dest)."""
    return int(track_fields(meta)[3])


def route(meta: bytes | memoryview) -> Route | None:
    """Where a message for a sequencer or dispatcher goes on (None: it has no route).

    Raises:
        DecodeError: the route is not one this version knows, or its section does not fit.
    """
    which = meta[ROUTE_AT]
    if which == ROUTE_NONE:
        return None
    number = int(_U32.unpack_from(meta, NUMBER_AT)[0])
    if which in (ROUTE_TOPIC, ROUTE_WORK):
        return Route(which, number)
    start = SIZE + _U16.unpack_from(meta, NAME_LEN_AT)[0]
    end = start + _U16.unpack_from(meta, ROUTE_LEN_AT)[0]
    try:
        if which != ROUTE_GROUP or start + 4 * number > end or end > len(meta):
            raise ValueError(f"route {which} with {number} members in {end - start} bytes")
        members = struct.unpack_from(f"<{number}I", meta, start)
        name = bytes(meta[start + 4 * number : end]).decode()
    except ValueError as exc:  # (UnicodeDecodeError is one)
        raise DecodeError(f"cannot read the route of message {message_id(meta)}: {exc}") from exc
    return Route(ROUTE_GROUP, 0, name, members)
