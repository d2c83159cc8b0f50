"""The header's one home: every accessor reads back what encode was given."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from geode_mpi import DecodeError, Message, codec
from geode_mpi.codec import header
from geode_mpi.codec.header import Route

NAMES = [f"node{k}" for k in range(8)]
STAMP = codec.make_stamp((3 << 40) | 17, 9, 1700000000.25, 3, 5)

ROUTES = [
    None,
    Route(header.ROUTE_TOPIC, 12),
    Route(header.ROUTE_WORK, 2**32 - 1),
    Route(header.ROUTE_GROUP, group="ring", members=(0, 2, 7)),
    Route(header.ROUTE_GROUP, group="größe ∑", members=()),
]
DATA = ["text", {"a": [1, 2.5]}, np.arange(5.0), np.arange(1000.0), (np.arange(3), "mixed")]


class Tagged(Message):
    pass


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: "none" if r is None else str(r.kind))
@pytest.mark.parametrize("data", DATA, ids=["text", "dict", "small", "array", "pickle"])
@pytest.mark.parametrize("cls", [Message, Tagged])
def test_every_accessor_reads_what_encode_was_given(
    route: Route | None, data: object, cls: type[Message]
) -> None:
    message = cls(data, headers={"h": 1}) if cls is Tagged else cls(data)
    flags = codec.FLAG_TRACKED | codec.FLAG_SEQUENCE
    meta, frames = codec.encode(message, STAMP, flags, reply_to=42, route=route)
    assert meta[0] == header.VERSION == 7
    assert header.message_id(meta) == STAMP.id
    assert header.timestamp(meta) == STAMP.timestamp
    # track's flags hold the route byte above the flags byte
    tracked = flags | (cls is Tagged) | (0 if route is None else route.route_byte() << 8)
    assert header.track_fields(meta) == (tracked, 9, 3, 5, 42)
    assert codec.track(meta) == codec.Track(tracked, 9, 3, 5, 42)
    assert header.route(meta) == route
    assert not codec.is_control(meta) and header.kind(meta) != header.KIND_CONTROL
    info = codec.peek(meta)
    assert info.stamp == STAMP and info.flags & flags == flags
    assert header.data_length(meta) == info.data_len
    # the checksum is the Adler-32 of what C pickle reads: the pickled data, then the rest
    pickled = meta[info.body : info.body + info.data_len] if info.kind == 0 else b""
    rest = meta[info.body + info.data_len :] if cls is Tagged else b""
    assert header.checksum(meta) == (zlib.adler32(pickled + rest) if pickled + rest else 0)
    got = codec.decode(meta, [np.asarray(f).copy() for f in frames], NAMES)
    assert type(got) is cls and got.id == STAMP.id and got.reply_to == 42
    assert (got.source, got.dest) == ("node3", "node5")
    if isinstance(data, np.ndarray):
        np.testing.assert_array_equal(got.data, data)
    elif isinstance(data, tuple):
        np.testing.assert_array_equal(got.data[0], data[0])
    else:
        assert got.data == data
    assert "_geode_group" not in got.__dict__ and "_geode_topic" not in got.__dict__


def test_a_topic_message_names_its_topic_in_dest() -> None:
    stamp = codec.make_stamp(1, 0, 0.0, 2, 9)  # dest: the topic's wire number
    meta, _ = codec.encode(Message("x"), stamp, codec.FLAG_TOPIC)
    assert header.topic_number(meta) == 9 and codec.track(meta).flags & codec.FLAG_TOPIC
    assert header.source(meta) == 2


def test_a_control_record_is_a_control_record() -> None:
    meta = codec.encode_control(1, 4, b"payload")
    assert codec.is_control(meta) and header.kind(meta) == header.KIND_CONTROL
    assert bytes(codec.control_payload(meta)) == b"payload"
    assert codec.track(meta)[2:4] == (1, 4) and header.route(meta) is None


def test_a_small_array_after_a_route_section_is_still_8_byte_aligned() -> None:
    route = Route(header.ROUTE_GROUP, group="odd", members=(1,))  # 7 bytes of route section
    meta, _ = codec.encode(Message(np.arange(4.0)), STAMP, route=route)
    got = codec.decode(bytearray(meta), [], NAMES).data
    assert got.ctypes.data % 8 == 0
    np.testing.assert_array_equal(got, np.arange(4.0))


def test_another_codec_version_is_a_decode_error_naming_both() -> None:
    meta, _ = codec.encode(Message("x"), STAMP)
    version_3 = bytes([3]) + meta[1:56]  # a version 3 header was 56 bytes
    version_4 = bytes([4]) + meta[1:]  # a version 4 header: the same, with a CRC-32
    others = (bytes([version]) + meta[1:] for version in (5, 6, 8))
    for damaged in (version_3, version_4, *others):
        for read in (codec.peek, codec.track, lambda m: codec.decode(m, [], NAMES)):
            with pytest.raises(DecodeError, match=rf"version {damaged[0]} .*speaks 7\)"):
                read(damaged)


@pytest.mark.parametrize(
    ("which", "number", "section"),
    [(3, 4, b"\x00" * 8), (3, 1, b"\x00\x00\x00\x00\xff\xfe"), (9, 0, b"")],
    ids=["members-past-the-section", "name-not-utf8", "unknown-route"],
)
def test_a_damaged_route_is_a_decode_error(which: int, number: int, section: bytes) -> None:
    meta, _ = codec.encode(Message("x"), STAMP, route=Route(header.ROUTE_GROUP, group="g"))
    out = bytearray(meta[: header.SIZE]) + section + meta[header.SIZE + 1 :]
    out[header.ROUTE_AT] = which
    struct.pack_into("<H", out, header.ROUTE_LEN_AT, len(section))
    struct.pack_into("<I", out, header.NUMBER_AT, number)
    with pytest.raises(DecodeError, match="route"):
        header.route(out)


def test_with_flags_sets_then_clears_and_leaves_the_rest_as_it_was() -> None:
    message = Message(np.arange(1000.0), headers={"h": 1})
    flags = codec.FLAG_TRACKED | codec.FLAG_WAITED | codec.FLAG_TOPIC
    meta, frames = codec.encode(message, STAMP, flags, reply_to=42)
    again = header.with_flags(
        meta, add=codec.FLAG_RESENT, clear=codec.FLAG_TRACKED | codec.FLAG_WAITED
    )
    resent = header.with_flags(memoryview(meta), add=codec.FLAG_RESENT)
    assert codec.track(again) == codec.Track(
        codec.FLAG_TOPIC | codec.FLAG_RESENT | header.FLAG_REST, 9, 3, 5, 42
    )
    assert codec.track(resent).flags == flags | codec.FLAG_RESENT | header.FLAG_REST
    assert codec.track(meta).flags == flags | header.FLAG_REST  # the original is untouched
    for copy in (again, resent):
        assert copy[: header.FLAGS_AT] + copy[header.FLAGS_AT + 1 :] == (
            meta[: header.FLAGS_AT] + meta[header.FLAGS_AT + 1 :]
        )
        got = codec.decode(copy, [np.asarray(f).copy() for f in frames], NAMES)
        np.testing.assert_array_equal(got.data, message.data)
        assert got.headers == {"h": 1} and got.id == STAMP.id


def test_the_plain_header_is_the_full_header_without_a_route() -> None:
    """encode's fast paths pack `header.PLAIN`: the same bytes as `HEAD` with no route."""
    fields = (header.VERSION, header.KIND_TEXT, 6, 2**40 + 3, 2**63 + 1, 1.25, 7, 2**32 - 1)
    tail = (13, 1, 2**32 - 2, -1, 0xDEADBEEF)
    full = header.HEAD.pack(*fields[:3], 0, *fields[3:], tail[0], 0, *tail[1:], 0)
    assert header.PLAIN.pack(*fields, *tail) == full
    assert header.PLAIN.size == header.SIZE
