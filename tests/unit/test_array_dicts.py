"""A dict holding arrays (kind 6, `geode_mpi.codec.maps`) decodes to what the array-aware
pickler's kind 0 gave: the same keys in the same order, dtypes, shapes, orders, bytes and
flags, for plain Messages and subclasses, on decode's fast and general paths."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mpi"))
from payloads import array_cases

from geode_mpi import DecodeError, EncodeError, Message
from geode_mpi.codec import Stamp, arrays, decode, encode, fastpickle, header, maps, peek
from geode_mpi.transport.base import copy_frame

NAMES = ("node0", "node1", "node2")
STAMP = Stamp(id=(1 << 40) | 5, seq=3, timestamp=1234.5, source=1, dest=2)


class Holder(Message):
    """A user's subclass around a dict."""


def as_kind_0(monkeypatch: pytest.MonkeyPatch, message: Message) -> tuple[bytes, list[Any]]:
    """``message`` encoded as before kind 6: the array-aware pickler."""
    with monkeypatch.context() as patch:
        patch.setattr(maps, "split", lambda data, frames: None)
        meta, frames = encode(message, STAMP)
    assert meta[header.KIND_AT] == header.KIND_PICKLE
    return meta, list(frames)


def received(frames: Any) -> list[Any]:
    """The frames as a receiver has them: writable uint8 copies in C order."""
    return [copy_frame(frame) for frame in frames]


def assert_same_dict(got: dict[Any, Any], want: dict[Any, Any]) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            mine = got[key]
            assert type(mine) is np.ndarray, key
            assert (mine.dtype, mine.shape, mine.strides) == (
                value.dtype,
                value.shape,
                value.strides,
            )
            assert mine.flags.writeable == value.flags.writeable, key
            assert mine.flags.c_contiguous == value.flags.c_contiguous, key
            assert mine.tobytes() == value.tobytes(), key
        else:
            assert got[key] == value and type(got[key]) is type(value), key


@pytest.mark.parametrize("name,array", array_cases(), ids=[c[0] for c in array_cases()])
def test_a_dict_of_arrays_decodes_as_the_array_aware_pickle_did(
    monkeypatch: pytest.MonkeyPatch, name: str, array: np.ndarray[Any, Any]
) -> None:
    data = {"step": 3, "field": array, "label": "x", "again": array[..., None], "t": 0.5}
    meta, frames = encode(Message(data), STAMP)
    assert meta[header.KIND_AT] == header.KIND_ARRAY_DICT
    assert len(frames) == 2 and b"_rebuild" not in meta  # no pickled array
    assert all(np.shares_memory(frame, array) for frame in frames if frame.size)
    old_meta, old_frames = as_kind_0(monkeypatch, Message(data))
    want = decode(old_meta, received(old_frames), NAMES)
    for info in (None, peek(meta)):  # decode's fast path, then its general one
        got = decode(meta, received(frames), NAMES, info)
        assert type(got) is Message
        assert_same_dict(got.data, want.data)
        assert {k: v for k, v in got.__dict__.items() if k != "data"} == {
            k: v for k, v in want.__dict__.items() if k != "data"
        }


def test_read_only_frames_give_read_only_arrays_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    array = np.arange(5000.0)
    data = {"a": array, "b": 1}
    meta, frames = encode(Message(data), STAMP)
    old_meta, old_frames = as_kind_0(monkeypatch, Message(data))
    views = [frame.view() for frame in received(frames)]
    old_views = [frame.view() for frame in received(old_frames)]
    for view in views + old_views:
        view.flags.writeable = False  # as a loopback's sealed frame
    got = decode(meta, views, NAMES).data["a"]
    want = decode(old_meta, old_views, NAMES).data["a"]
    assert not got.flags.writeable and not want.flags.writeable
    assert np.array_equal(got, array)


def test_a_subclass_holding_a_dict_keeps_its_class_and_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = {"u": np.arange(3000, dtype=np.int32), "n": 7}
    plain = Holder(data)
    tagged = Holder(data, headers={"kind": "field"})
    tagged.note = np.ones(4000)  # an attribute holding an array: the rest section
    for message in (plain, tagged):
        meta, frames = encode(message, STAMP)
        assert meta[header.KIND_AT] == header.KIND_ARRAY_DICT
        old_meta, old_frames = as_kind_0(monkeypatch, message)
        want = decode(old_meta, received(old_frames), NAMES)
        got = decode(meta, received(frames), NAMES)
        assert type(got) is Holder and got.__dict__.keys() == want.__dict__.keys()
        assert_same_dict(got.data, want.data)
    assert got.headers == {"kind": "field"} and np.array_equal(got.note, tagged.note)


def test_a_subclass_of_one_array_decodes_on_the_fast_path_as_on_the_general() -> None:
    array = np.asfortranarray(np.arange(6000.0).reshape(60, 100))
    meta, frames = encode(Holder(array), STAMP)
    fast = decode(meta, received(frames), NAMES)
    general = decode(meta, received(frames), NAMES, peek(meta))
    assert type(fast) is Holder and fast.__dict__.keys() == general.__dict__.keys()
    assert fast.data.flags.f_contiguous and np.array_equal(fast.data, array)
    assert fast.data.flags.writeable


@pytest.mark.parametrize(
    "data",
    [
        {i: np.arange(3) for i in range(maps.ITEMS_MAX + 1)},  # too many items
        {("a", 1): np.arange(3)},  # a key that is not atomic
        {"a": np.arange(3), "b": [np.arange(4)]},  # an array inside another value
        {"a": np.array([object()])},  # Python objects inside
        {"a": np.arange(3).view(np.recarray)},  # not exactly an ndarray
    ],
    ids=["too many", "tuple key", "nested", "objects", "subclass of ndarray"],
)
def test_other_dicts_keep_the_array_aware_pickler(data: dict[Any, Any]) -> None:
    meta, frames = encode(Message(data), STAMP)
    assert meta[header.KIND_AT] == header.KIND_PICKLE
    got = decode(meta, received(frames), NAMES).data
    assert list(got) == list(data)


def test_a_dict_without_arrays_stays_a_plain_pickle() -> None:
    meta, frames = encode(Message({"a": 1, "b": [1.5, "x"]}), STAMP)
    assert meta[header.KIND_AT] == header.KIND_PICKLE and not frames


def test_the_encoders_fast_path_gives_the_general_paths_bytes() -> None:
    """After a dict with arrays, the next ones skip the C pickle attempt (`_plain_misses`)
    and build kind 6 at once: the same bytes as the general path."""
    data = {"a": np.arange(5000.0), "b": "text"}
    fastpickle._plain_misses[0] = 0
    general = encode(Message(data), STAMP, header.FLAG_TRACKED, 11)
    assert fastpickle._plain_misses[0] > 0  # the next one takes the fast path
    fast = encode(Message(data), STAMP, header.FLAG_TRACKED, 11)
    assert fast[0] == general[0]
    assert [np.shares_memory(a, b) for a, b in zip(fast[1], general[1], strict=True)] == [True]


def test_a_damaged_skeleton_is_a_decode_error_before_unpickling() -> None:
    meta, frames = encode(Message({"a": np.arange(5000.0), "b": "text"}), STAMP)
    damaged = bytearray(meta)
    damaged[-30] ^= 0xFF
    for info in (None, peek(damaged)):
        with pytest.raises(DecodeError, match="does not match its checksum"):
            decode(damaged, received(frames), NAMES, info)


def test_frames_that_do_not_match_the_skeleton_are_a_decode_error() -> None:
    meta, frames = encode(Message({"a": np.arange(5000.0), "b": np.arange(3)}), STAMP)
    with pytest.raises(DecodeError, match="does not place its 1 frame"):
        decode(meta, received(frames)[:1], NAMES, peek(meta))
    with pytest.raises(DecodeError, match="need 40000"):
        decode(meta, [np.zeros(8, np.uint8), *received(frames)[1:]], NAMES)


def test_an_array_whose_dtype_cannot_be_described_is_an_encode_error_on_both_paths() -> None:
    import threading

    dtype = np.dtype([("a", "f8")], metadata={"lock": threading.Lock()})  # pickles its metadata
    for _ in range(2):  # the general path, then the encoder's fast path
        with pytest.raises(EncodeError, match="message data of type builtins.dict"):
            encode(Message({"a": np.zeros(1000, dtype)}), STAMP)
        encode(Message({"a": np.zeros(1000)}), STAMP)  # arrays met: the next one is fast


def test_an_array_held_twice_travels_once_and_arrives_once_as_with_pickle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grid = np.arange(5000.0)
    data = {"grid": grid, "step": 1, "again": grid, "other": grid + 1}
    meta, frames = encode(Message(data), STAMP)
    old_meta, old_frames = as_kind_0(monkeypatch, Message(data))
    assert len(frames) == len(old_frames) == 2
    got = decode(meta, received(frames), NAMES).data
    want = decode(old_meta, received(old_frames), NAMES).data
    assert got["grid"] is got["again"] and want["grid"] is want["again"]
    assert_same_dict(got, want)


def test_a_layout_is_parsed_once_and_a_section_with_bytes_after_its_arrays_still_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`maps.join` parses a section's descriptors once per layout (the same dtypes and
    shapes again: a dict lookup), and a damaged tail is refused whether or not its layout
    was seen."""
    parsed: list[int] = []
    read = maps.read_descriptor
    monkeypatch.setattr(maps, "read_descriptor", lambda *args: (parsed.append(1), read(*args))[1])
    maps._layouts.clear()
    data = {"step": 0, "u": np.arange(7000.0), "v": np.ones((30, 40), np.int16, order="F")}
    for step in range(3):
        data["step"] = step
        meta, frames = encode(Message(data), STAMP)
        got = decode(meta, received(frames), NAMES).data
        assert_same_dict(got, data)
    assert len(parsed) == 2  # the two arrays' descriptors, parsed with the first message only
    section = bytes(maps.split(data, []) or b"") + b"\0" * 8
    with pytest.raises(ValueError, match="8 bytes after its arrays"):
        maps.join(memoryview(section), received(encode(Message(data), STAMP)[1]))


def test_a_dict_of_arrays_splits_before_the_codec_has_learnt_numpys_array_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`maps.split` tests types against the codec's learnt ndarray; before it is learnt (numpy
    imported by the user, no array met yet) a dict of arrays still takes kind 6."""
    monkeypatch.setattr(arrays, "ndarray", arrays.NO_ARRAY)
    frames: list[Any] = []
    section = maps.split({"a": np.arange(3000.0), "b": 2}, frames)
    assert section is not None and len(frames) == 1
    assert arrays.ndarray is np.ndarray
    assert maps.split({"a": 1, "b": "two"}, []) is None
