"""A Message subclass's plain message decoded without the general machinery
(`codec.decoding.decode_named`), and the job script's classes found once (`classes.resolve`)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_express import NAMED, Point, Slotted, slotted

from geode_mpi import DecodeError, Message, codec
from geode_mpi.codec import classes, decoding, peek

NAMES = ["node0", "node1"]
STAMP = codec.make_stamp(7, 3, 12.5, 0, 1)


def general(meta: bytes) -> Message:
    """The general decode of ``meta`` (`peek` first: never the fast cases)."""
    return codec.decode(meta, (), NAMES, peek(meta), True)


def same(a: Message, b: Message) -> bool:
    left, right = dict(vars(a)), dict(vars(b))
    data_a, data_b = left.pop("data"), right.pop("data")
    if isinstance(data_a, np.ndarray):
        return bool(np.array_equal(data_a, data_b)) and left == right
    return type(a) is type(b) and data_a == data_b and left == right


MESSAGES = [*NAMED, lambda: slotted("s")]


@pytest.mark.parametrize("make", MESSAGES)
def test_a_subclass_decodes_as_the_general_decode_does(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = codec.encode(make(), STAMP, codec.FLAG_TRACKED)[0]
    taken: list[Message | None] = []
    named = decoding.decode_named

    def spy(*args: Any) -> Message | None:
        taken.append(named(*args))
        return taken[-1]

    monkeypatch.setattr(decoding, "decode_named", spy)
    got = codec.decode(bytearray(meta), (), NAMES, None, True)
    assert taken and taken[0] is got  # (its fast case took it)
    want = general(meta)
    assert type(got) is type(want) and same(got, want)
    assert (got.id, got.seq, got.source, got.dest) == (7, 3, "node0", "node1")
    if isinstance(got, Slotted):
        assert got.weight == 0.5


def test_a_damaged_subclass_message_is_a_decode_error() -> None:
    meta = bytearray(codec.encode(Point({"a": 1}, 2, "x"), STAMP)[0])
    meta[-3] ^= 0xFF  # (in its rest section: the checksum covers it)
    with pytest.raises(DecodeError, match="checksum"):
        codec.decode(meta, (), NAMES, None, True)


def test_an_unknown_class_stays_a_decode_error() -> None:
    class Local(Message):
        pass

    Local.__qualname__ = "NowhereNamed"
    meta = codec.encode(Local("x"), STAMP)[0]
    classes._cache.pop(f"{__name__}:NowhereNamed")  # as on a rank that never saw the class
    for _ in range(2):  # (never remembered)
        with pytest.raises(DecodeError, match="define or import the class"):
            codec.decode(meta, (), NAMES, None, True)


@pytest.fixture
def script() -> Iterator[types.ModuleType]:
    """A job script's ``__main__`` (restored after)."""
    before = sys.modules["__main__"]
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    yield main
    sys.modules["__main__"] = before


def script_class(main: types.ModuleType) -> type[Message]:
    cls = type("ScriptTagged", (Message,), {"__module__": "__main__"})
    main.ScriptTagged = cls  # type: ignore[attr-defined]
    return cls


def test_a_script_class_is_found_again_only_while_it_is_the_same(
    script: types.ModuleType,
) -> None:
    first = script_class(script)
    meta = codec.encode(first("a"), STAMP)[0]
    assert type(codec.decode(meta, (), NAMES)) is first
    assert type(codec.decode(meta, (), NAMES)) is first  # (kept)
    second = script_class(script)  # redefined in the same script
    assert type(codec.decode(meta, (), NAMES)) is second
    other = types.ModuleType("__main__")  # the next job run in this process
    sys.modules["__main__"] = other
    third = script_class(other)
    assert type(codec.decode(meta, (), NAMES)) is third
    del other.ScriptTagged  # (gone from the job: the class this process sent is found)
    assert codec.classes.resolve("__main__:ScriptTagged") in (first, second, third)


def test_a_script_class_is_built_inline_only_while_it_is_the_same(
    script: types.ModuleType,
) -> None:
    first = script_class(script)
    meta = codec.encode(first("a"), STAMP)[0]
    raw = b"__main__:ScriptTagged"
    codec.decode(meta, (), NAMES)  # (kept by its first decode)
    assert classes.inline_class(raw) is first
    script_class(script)
    assert classes.inline_class(raw) is None  # redefined: resolved again
    sys.modules["__main__"] = types.ModuleType("__main__")
    assert classes.inline_class(raw) is None  # the next job's script


@pytest.mark.parametrize("by", [-1, 1], ids=["short", "long"])
@pytest.mark.parametrize("make", [*NAMED[:4], lambda: Point("rest", 1, "a")])
def test_a_damaged_length_field_names_the_message_and_its_source(make: Any, by: int) -> None:
    # A class-named message's length one short decoded to shorter data on the general decode;
    # now a DecodeError on both decodes, as for a plain Message. (With a rest section, a
    # length that reaches past its start.)
    meta = bytearray(codec.encode(make(), STAMP)[0])
    at = codec.header.DATA_LEN_AT
    length = int.from_bytes(meta[at : at + 4], "little")
    if meta[codec.header.FLAGS_AT] & codec.header.FLAG_REST:
        by *= len(meta)  # (past the end either way round: a u32 wraps)
    meta[at : at + 4] = ((length + by) % 2**32).to_bytes(4, "little")
    with pytest.raises(DecodeError, match="message 7 from node index 0 says its data is"):
        general(bytes(meta))
    with pytest.raises(DecodeError, match="message 7 from node index 0 says its data is"):
        codec.decode(bytearray(meta), (), NAMES, None, True)
