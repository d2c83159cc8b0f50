"""The codec alone: Messages to (meta, frames) and back, without any transport."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mpi"))
from payloads import Point, array_cases

from geode_mpi import DecodeError, EncodeError, Message
from geode_mpi.codec import Stamp, classes, decode, encode, header, peek, pickling
from geode_mpi.codec import wire as codec_wire
from geode_mpi.transport.base import copy_frame

NAMES = ("node0", "node1", "node2")
STAMP = Stamp(id=(1 << 40) | 5, seq=3, timestamp=1234.5, source=1, dest=2)


def round_trip(message: Message) -> Message:
    meta, frames = encode(message, STAMP)
    return decode(meta, [copy_frame(f) for f in frames], NAMES)


@pytest.mark.parametrize("name,array", array_cases(), ids=[c[0] for c in array_cases()])
def test_arrays_round_trip_bit_exact(name: str, array: np.ndarray[Any, Any]) -> None:
    got = round_trip(Message(array)).data
    assert got.dtype == array.dtype and got.shape == array.shape
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(array).tobytes()
    assert got.flags.writeable


def test_a_top_level_array_is_one_frame_in_its_own_memory() -> None:
    array = np.arange(1000.0)
    meta, frames = encode(Message(array), STAMP)
    assert len(frames) == 1 and np.shares_memory(frames[0], array)
    assert b"numpy" not in meta, "no pickle of the array"


def test_a_small_array_travels_inside_meta_aligned_and_writable() -> None:
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    meta, frames = encode(Message(np.asfortranarray(array)), STAMP)
    assert frames == []
    buffer = bytearray(16) + bytearray(meta)  # meta arrives 16-aligned in a writable buffer
    got = decode(memoryview(buffer)[16:], [], NAMES).data
    assert np.array_equal(got, array) and got.flags.f_contiguous
    assert got.flags.writeable and got.flags.aligned
    got[0, 0] = 99.0  # a view of the receive buffer, no copy
    from_bytes = decode(meta, [], NAMES).data  # read-only meta: decoded as a copy
    assert from_bytes.flags.writeable and np.array_equal(from_bytes, array)


def test_nested_and_strided_arrays_go_out_of_band_without_copies() -> None:
    base = np.arange(10_000.0).reshape(100, 100)
    data = {"a": base, "b": [base[::2, ::3]], "c": (np.asfortranarray(base),)}
    meta, frames = encode(Message(data), STAMP)
    assert len(frames) == 3
    assert all(np.shares_memory(frame, base) or frame.base is not None for frame in frames)
    assert np.shares_memory(frames[1], base), "the strided view is sent from its own memory"
    assert len(meta) < 1000
    got = decode(meta, [copy_frame(f) for f in frames], NAMES).data
    assert np.array_equal(got["b"][0], base[::2, ::3])
    assert got["c"][0].flags.f_contiguous


def test_metadata_is_filled_in_on_decode() -> None:
    got = round_trip(Message("hi", headers={"step": 1}))
    assert (got.id, got.seq, got.timestamp) == (STAMP.id, 3, 1234.5)
    assert (got.source, got.dest, got.type) == ("node1", "node2", "Message")
    assert got.headers == {"step": 1}


def test_subclass_keeps_its_class_and_attributes_without_calling_init() -> None:
    got = round_trip(Point(np.ones(3), label="x", weight=0.5))
    assert type(got) is Point and got.label == "x" and got.weight == 0.5
    assert got.type == "Point"


def test_subclass_defined_in_a_script_resolves_through_main() -> None:
    main = sys.modules["__main__"]

    class ScriptMessage(Message):
        pass

    ScriptMessage.__module__ = "__main__"
    ScriptMessage.__qualname__ = "ScriptMessage"
    main.ScriptMessage = ScriptMessage
    try:
        assert type(round_trip(ScriptMessage(1))) is ScriptMessage
    finally:
        delattr(main, "ScriptMessage")


def test_unknown_class_is_a_clear_decode_error() -> None:
    class Local(Message):
        pass

    Local.__qualname__ = "Nowhere"
    meta, frames = encode(Local(1), STAMP)
    classes._cache.pop(f"{__name__}:Nowhere")  # as on a rank that never saw the class
    with pytest.raises(DecodeError, match="class 'Nowhere' .* define or import the class"):
        decode(meta, frames, NAMES)


def test_unpicklable_data_names_its_type() -> None:
    with pytest.raises(EncodeError, match="message data of type builtins.function") as info:
        encode(Message(lambda: 1), STAMP)
    assert isinstance(info.value, TypeError)


def test_unpicklable_attribute_is_named() -> None:
    msg = Point(1, label="x")
    msg.callback = lambda: 1  # type: ignore[attr-defined]
    with pytest.raises(EncodeError, match="Point attribute 'callback' of type builtins.function"):
        encode(msg, STAMP)


def test_garbage_meta_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="shorter than"):
        peek(bytes([header.VERSION]) + bytes(10))
    with pytest.raises(DecodeError, match="codec version 99"):
        peek(bytes([99]) + bytes(60))


def test_truncated_frame_is_a_decode_error() -> None:
    meta, frames = encode(Message(np.arange(1000)), STAMP)
    with pytest.raises(DecodeError, match="array frame holds 40 bytes"):
        decode(meta, [copy_frame(frames[0])[:40]], NAMES)


TEXTS = ["", "hello world", "h\u00e9llo \u2603 \U0001d11e", "x" * 100_000, "a\x00b"]


@pytest.mark.parametrize("text", TEXTS, ids=["empty", "ascii", "non-ascii", "long", "nul"])
def test_a_str_travels_as_utf8_text_not_pickle(text: str) -> None:
    for message in (Message(text), Point(text, "p"), Message(text, headers={"k": 1})):
        meta, _ = encode(message, STAMP)
        assert meta[1] == header.KIND_TEXT
        got = round_trip(message)
        assert type(got) is type(message) and got.data == text and type(got.data) is str
    assert round_trip(Message(text, headers={"k": 1})).headers == {"k": 1}
    assert round_trip(Point(text, "p")).label == "p"


def test_a_str_that_utf8_cannot_hold_is_pickled_and_kept() -> None:
    lone = "a\ud800b"  # a lone surrogate: not encodable as UTF-8
    meta, _ = encode(Message(lone), STAMP)
    assert meta[1] == header.KIND_PICKLE
    assert round_trip(Message(lone)).data == lone


def test_damaged_text_is_a_decode_error() -> None:
    meta = bytearray(encode(Message("h\u00e9llo"), STAMP)[0])
    meta[-1] = 0xFF  # not UTF-8
    with pytest.raises(DecodeError, match="UnicodeDecodeError"):
        decode(bytes(meta), [], NAMES)


class Tagged(dict):  # type: ignore[type-arg]
    """A dict subclass: not a plain container (pickle must see its class)."""


@pytest.mark.parametrize(
    "data,plain,n_frames",
    [
        ({"step": 3, "value": 0.5, "label": "x"}, True, 0),
        ([1, "a", (2.0, None, {"k": b"v"})], True, 0),  # three levels
        ([[[[1]]]], False, 0),  # four: the array-aware pickler looks
        ({"a": np.arange(3)}, False, 1),
        ({"a": [np.float64(1.0)]}, False, 0),  # a numpy scalar is not atomic
        (Tagged(a=1), False, 0),
        ({1, 2}, False, 0),
    ],
)
def test_plain_containers_skip_the_array_aware_pickler(
    data: Any, plain: bool, n_frames: int
) -> None:
    assert pickling.is_plain(data) is plain
    assert len(encode(Message(data), STAMP)[1]) == n_frames
    got = round_trip(Message(data)).data
    assert type(got) is type(data)
    if n_frames:
        assert np.array_equal(got["a"], data["a"])
    else:
        assert got == data


def test_encoding_arrays_inside_containers_keeps_no_reference_to_them() -> None:
    """The array-aware pickler must not be a reference cycle: it would keep every array it
    pickled alive (and a forwarded array's pooled receive buffer busy) until a gc run."""
    import gc

    array = np.arange(100_000.0)
    before = sys.getrefcount(array)
    gc.disable()
    try:
        for _ in range(5):
            meta, frames = encode(Message((array, {"again": array})), STAMP)
            del meta, frames
        assert sys.getrefcount(array) == before
    finally:
        gc.enable()


def large_array_cases() -> list[tuple[str, np.ndarray[Any, Any]]]:
    """`array_cases` past the small-array limit, as arrays and as Fortran/strided/structured
    ones, so that each fast path meets each kind of frame."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((64, 48))
    cases = [(name, a) for name, a in array_cases() if a.nbytes > codec_wire.SMALL_ARRAY_MAX]
    cases += [
        ("uint8 1-D", rng.integers(0, 255, 5000, dtype=np.uint8)),
        ("Fortran large", np.asfortranarray(base)),
        ("structured large", np.zeros(400, dtype=[("a", "<i4"), ("b", ">f8")])),
        ("datetime64 large", np.arange(600).astype("datetime64[s]")),
    ]
    return cases


@pytest.mark.parametrize("name,array", large_array_cases(), ids=[c[0] for c in large_array_cases()])
def test_a_large_array_alone_takes_the_fast_paths_to_the_same_bytes_and_message(
    name: str, array: np.ndarray[Any, Any]
) -> None:
    """encode and decode have fast paths for a plain Message holding one large array; they
    must give what the general paths give (the first encode of a class is general)."""
    codec_wire._wire_names.pop(Message, None)
    general_meta, general_frames = encode(Message(array), STAMP, header.FLAG_TOPIC, 9)
    assert Message in codec_wire._wire_names  # the next encode may take the fast path
    meta, frames = encode(Message(array), STAMP, header.FLAG_TOPIC, 9)
    assert meta == general_meta
    assert len(frames) == len(general_frames) == 1
    assert frames[0] is not None and np.shares_memory(frames[0], general_frames[0])
    received = [copy_frame(f) for f in frames]
    fast = decode(meta, received, NAMES)  # no Peek given: the fast path may take it
    general = decode(meta, received, NAMES, peek(meta))  # with one: the general path
    assert fast.__dict__.keys() == general.__dict__.keys()
    for key, value in general.__dict__.items():
        if key != "data":
            assert fast.__dict__[key] == value, key
    assert fast.data.dtype == array.dtype and fast.data.shape == array.shape
    assert np.ascontiguousarray(fast.data).tobytes() == np.ascontiguousarray(array).tobytes()
    assert fast.data.flags.writeable


def test_an_array_whose_dtype_cannot_be_described_is_an_encode_error_on_both_paths() -> None:
    import threading

    dtype = np.dtype([("a", "f8")], metadata={"lock": threading.Lock()})  # pickles its metadata
    array = np.zeros(1000, dtype)
    codec_wire._wire_names.pop(Message, None)
    for _ in range(2):  # the general path, then the large-array fast path
        with pytest.raises(EncodeError, match="message data of type numpy.ndarray"):
            encode(Message(array), STAMP)
        encode(Message(np.zeros(1000)), STAMP)  # the class is known: the next one is fast


def _records(n: int) -> np.ndarray[Any, Any]:
    """What ``np.asarray(recarray)`` gives: an ndarray whose dtype is a numpy.record one."""
    fields = [np.arange(n), np.arange(n, dtype=np.float32)]
    return np.asarray(np.rec.fromarrays(fields, names="a,b"))


def _wrapped(array: np.ndarray[Any, Any], how: str) -> Message:
    if how == "alone":
        return Message(array)
    return Message({"x": array, "n": 1} if how == "dict" else [array, "pickled"])


def _unwrapped(message: Message, how: str) -> np.ndarray[Any, Any]:
    data = message.data
    return data if how == "alone" else data["x"] if how == "dict" else data[0]


@pytest.mark.parametrize("n", [5, 700])  # inside meta (60 bytes); a frame of its own
@pytest.mark.parametrize("how", ["alone", "dict", "pickled"])
@pytest.mark.parametrize("record_first", [True, False])
def test_equal_record_void_and_metadata_dtypes_each_arrive_as_sent(
    n: int, how: str, record_first: bool
) -> None:
    """numpy holds a numpy.record dtype, its numpy.void twin and one with metadata equal
    (with one hash): each arrives as itself, whichever was sent first (the sender's caches
    of descriptors and templates used to give the later ones the first one's)."""
    records = _records(n)
    plain = np.array(records, dtype=[("a", "<i8"), ("b", "<f4")])
    noted = plain.astype(np.dtype(plain.dtype, metadata={"unit": "m"}))
    assert records.dtype == plain.dtype == noted.dtype
    assert hash(records.dtype) == hash(plain.dtype)
    order = [records, plain, noted] if record_first else [plain, noted, records]
    for array in order * 2:
        got = _unwrapped(round_trip(_wrapped(array, how)), how)
        assert got.dtype == array.dtype and got.dtype.type is array.dtype.type
        assert got.dtype.metadata == array.dtype.metadata
        assert got.tobytes() == array.tobytes()


def test_a_record_dtype_arrives_as_one_inside_another_dtype_too() -> None:
    inner = _records(1).dtype
    outer = np.dtype([("p", inner), ("q", "f8")])
    array = np.zeros(4, outer)
    got = round_trip(Message(array)).data
    assert got.dtype == outer and got.dtype.fields is not None
    assert got.dtype.fields["p"][0].type is np.record
