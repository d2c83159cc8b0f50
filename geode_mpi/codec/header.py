"""The header of an encoded message: its layout, kinds, flags and version, and named accessors.

Every layer that reads a header reads it here (docs/wire-format.md, "Meta", has the table):

    0 u8 version | 1 u8 kind | 2 u8 flags | 3 u8 route (bit 7: queued by priority or ttl)
    4 i64 id | 12 u64 seq | 20 f64 timestamp | 28 u32 source | 32 u32 dest
    36 u16 class-name length | 38 u16 route-section length | 40 u32 data frames
    44 u32 data length | 48 i64 reply_to | 56 u32 Adler-32 of the pickled sections
    60 u32 route number
    then: class name | route section (a 16-byte priority block first, with bit 7)
    | data section | rest section

The accessors that run on every message (`track_fields`, `kind`) are the struct's own methods
or a byte index, so they cost no Python call of their own.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from geode_mpi.errors import DecodeError

VERSION = 7  # 7: priority and ttl (ROUTE_QOS); 6: compressed frames; 5: Adler-32; 4: routes

KIND_PICKLE = 0
KIND_ARRAY = 1  # an array in its own frame
KIND_SMALL_ARRAY = 2  # a small array's bytes inside meta, after its descriptor (8-aligned)
KIND_CONTROL = 3  # not a message: the delivery layer's bytes (acknowledgements, credits)
KIND_TEXT = 4  # a str, as UTF-8 (no pickle either way)
KIND_RUN = 5  # not one message: a run of them (`geode_mpi.codec.runs`)
KIND_ARRAY_DICT = 6  # a dict holding arrays: a skeleton, descriptors (`geode_mpi.codec.maps`)

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
ROUTE_KINDS = 0x0F  # the route byte's low bits: which route
# The route byte's bit 7: the message has a priority or a ttl, and its route section starts
# with the priority block (`QOS`). A message without one keeps the header as it was.
ROUTE_QOS = 0x80
# ROUTE_QOS as `track_fields` sees it: its flags are the flags byte and the route byte above
# (so that delivery's "leave the fast path" test costs nothing more for the default message).
FLAG_QOS = ROUTE_QOS << 8
QOS = struct.Struct("<iId")  # priority, 0 (reserved), ttl in seconds (0.0: none)
PRIORITY_MIN = -(2**31)
PRIORITY_MAX = 2**31 - 1

NO_REPLY = -1
# reply_to of a request (`Geode.request`): its sender waits for a reply, so a receiver whose
# handler fails for good tells it (`geode_mpi.core.processing`). Ids are >= 0.
REQUEST = -2

HEAD = struct.Struct("<BBBBqQdIIHHIIqII")
SIZE = HEAD.size
# HEAD for a message without a route (encode's fast paths): route, route length and number
# are zero pad bytes, each field fewer to convert is ~2% of a small message's encoding.
PLAIN = struct.Struct("<BBBxqQdIIH2xIIqI4x")
# What every decode reads first (once: `decode_plain` takes its fields): the version, kind,
# flags and route bytes as one u32 (the "lead"), so that a receiver tells the commonest
# message from every other by one set lookup (`PLAIN_LEADS`); then the stamp, the class-name
# and route lengths as one u32 (0: a plain Message without a route section), the data
# frames and length, reply_to and the checksum.
LEAD = struct.Struct("<IqQdIIIIIqI4x")
# PLAIN for a text sent by a lane's express path (delivery/direct.py), with what is the same
# for every message of a lane packed once: the lead (4 bytes), id, seq, timestamp, then source,
# dest, no class name or route and no frames (16 bytes), the data length, then `TEXT_TAIL`.
TEXT_HEAD = struct.Struct("<4sqQd16sI16s")
TEXT_TAIL = struct.pack("<qI4x", NO_REPLY, 0)  # no reply_to, no checksum (no pickle), the pad
# PLAIN for a pickle or a small array sent by a lane's express path: TEXT_HEAD's fields up to
# the data length, then reply_to and the checksum (of a pickle; 0 for an array), the pad.
LANE_HEAD = struct.Struct("<4sqQd16sIqI4x")
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


def lead(kind: int, flags: int) -> int:
    """The u32 that `LEAD` reads first from a message of this version, ``kind`` and ``flags``
    with no route: version | kind << 8 | flags << 16."""
    return VERSION | kind << 8 | flags << 16


# The leads of a plain message (a pickle without arrays, a text, a small array in meta; no
# rest section, not compressed, no route, not diverted), tracked or not, resent or not:
# what a receiver may decode without the general machinery (`Engine.take_arrival`).
PLAIN_LEADS = frozenset(
    lead(kind, flags)
    for kind in (KIND_PICKLE, KIND_SMALL_ARRAY, KIND_TEXT)
    for flags in (0, FLAG_TRACKED, FLAG_RESENT, FLAG_TRACKED | FLAG_RESENT)
)
TEXT_LEADS = frozenset(found for found in PLAIN_LEADS if found >> 8 & 0xFF == KIND_TEXT)

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_ID = struct.Struct("<q")
_TIMESTAMP = struct.Struct("<d")
_TRACK = struct.Struct("<2xH8xQ8xII12xq")

# flags, seq, source, dest, reply_to of a header (unchecked: see `codec.track` for a checked
# read); ``track_fields(meta)`` reads them at offset 0. The struct's own method: no Python call.
# Its flags are the flags byte with the route byte above it: bits 8-11 the route, `FLAG_QOS`.
track_fields: Callable[..., tuple[Any, ...]] = _TRACK.unpack_from
TRACK_SIZE = _TRACK.size  # the bytes `track_fields` reads


class Track(NamedTuple):
    """What delivery needs from a message's header, read without decoding it."""

    flags: int  # the flags byte, and the route byte as bits 8-15 (`FLAG_QOS`)
    seq: int
    source: int
    dest: int
    reply_to: int


class Route(NamedTuple):
    """How a message travels beyond its stamp: where a sequencer or dispatcher sends it on (a
    topic, a work queue or a group), and how its receiver queues it (priority, ttl).

    A message with neither is sent with no route at all (None), the fast way.
    """

    kind: int  # ROUTE_NONE, ROUTE_TOPIC, ROUTE_WORK or ROUTE_GROUP
    number: int = 0  # the topic's wire number or the queue's stream number
    group: str = ""  # the group's name
    members: tuple[int, ...] = ()  # the group's member node indices
    priority: int = 0  # higher is taken first from the receiver's queue
    ttl: float = 0.0  # seconds it may wait in the receiver's queue (0.0: no limit)

    def section(self) -> bytes:
        """The route section: the priority block if any, then a group's member indices (u32
        each) and name (UTF-8)."""
        block = QOS.pack(self.priority, 0, self.ttl) if self.priority or self.ttl else b""
        if self.kind != ROUTE_GROUP:
            return block
        return block + struct.pack(f"<{len(self.members)}I", *self.members) + self.group.encode()

    def route_byte(self) -> int:
        """The header's route byte: the kind, with `ROUTE_QOS` for a priority or a ttl."""
        return self.kind | ROUTE_QOS if self.priority or self.ttl else self.kind

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


def qos_route(priority: int = 0, ttl: float | None = None) -> Route | None:
    """The route of a message sent with ``priority`` and ``ttl`` (None: neither, the default).

    Raises:
        TypeError: priority is not an int, or ttl not a number.
        ValueError: priority outside the i32 range, or ttl not > 0 and finite.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {priority!r}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"priority must be in -2**31..2**31-1, got {priority}")
    if ttl is None:
        return None if priority == 0 else Route(ROUTE_NONE, priority=priority)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds or None, got {ttl!r}")
    if not 0 < ttl < float("inf"):
        raise ValueError(f"ttl must be > 0 and finite (seconds), got {ttl}")
    return Route(ROUTE_NONE, priority=priority, ttl=float(ttl))


def qos(meta: bytes | memoryview) -> tuple[int, float]:
    """The priority and ttl (0.0: none) of a message whose route byte has `ROUTE_QOS`.

    Raises:
        DecodeError: the priority block does not fit in its route section.
    """
    start = SIZE + _U16.unpack_from(meta, NAME_LEN_AT)[0]
    if _U16.unpack_from(meta, ROUTE_LEN_AT)[0] < QOS.size or start + QOS.size > len(meta):
        raise DecodeError(
            f"message {message_id(meta)} is flagged with a priority block that its route "
            "section does not hold"
        )
    priority, _, ttl = QOS.unpack_from(meta, start)
    return int(priority), float(ttl)


def route(meta: bytes | memoryview) -> Route | None:
    """Where a message for a sequencer or dispatcher goes on, and its priority and ttl (None:
    it has neither).

    Raises:
        DecodeError: the route is not one this version knows, or its section does not fit.
    """
    byte = meta[ROUTE_AT]
    if byte == ROUTE_NONE:
        return None
    priority, ttl = qos(meta) if byte & ROUTE_QOS else (0, 0.0)
    which = byte & ROUTE_KINDS
    number = int(_U32.unpack_from(meta, NUMBER_AT)[0])
    if which in (ROUTE_NONE, ROUTE_TOPIC, ROUTE_WORK):
        return Route(which, number, priority=priority, ttl=ttl)
    section = SIZE + _U16.unpack_from(meta, NAME_LEN_AT)[0]
    start = section + (QOS.size if byte & ROUTE_QOS else 0)
    end = section + _U16.unpack_from(meta, ROUTE_LEN_AT)[0]
    try:
        if which != ROUTE_GROUP or start + 4 * number > end or end > len(meta):
            raise ValueError(f"route {which} with {number} members in {end - start} bytes")
        members = struct.unpack_from(f"<{number}I", meta, start)
        name = bytes(meta[start + 4 * number : end]).decode()
    except ValueError as exc:  # (UnicodeDecodeError is one)
        raise DecodeError(f"cannot read the route of message {message_id(meta)}: {exc}") from exc
    return Route(ROUTE_GROUP, 0, name, members, priority, ttl)
