"""A message holding attributes or headers (a rest section) taken by the express receive: inline
once its class is kept, with every guarantee of the general take; and the shapes that are not
plain (an array, slots, a class's own metadata) kept on the general path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from test_express import Guarded, Point, Slotted, Tagged, first_taken, spun, spy_take_arrival
from test_reentrant_take import taken

from geode_mpi import DecodeError, Geode, Message, codec
from geode_mpi.delivery import Engine, express
from geode_mpi.transport import InProcHub

__all__ = ["first_taken", "taken"]  # (fixtures)

NAMES = ["node0", "node1", "node2", "node3"]


class Spot:
    """A user class held as an attribute: pickled by reference to its class."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spot) and other.where == self.where

    __hash__ = None  # type: ignore[assignment]


def with_attrs(message: Message, **attrs: Any) -> Message:
    vars(message).update(attrs)
    return message


def guarded(data: Any, **attrs: Any) -> Message:
    """A `Guarded` (its ``__setattr__`` refuses every name): built through its __dict__."""
    return with_attrs(Guarded.__new__(Guarded), data=data, **attrs)


def slotted(cls: type[Slotted], data: Any, **attrs: Any) -> Message:
    message = with_attrs(cls(data), **attrs)
    message.weight = 0.25
    return message


# seq -> a message whose class the express take may build inline, with a rest section
RESTS: dict[str, Callable[[int], Message]] = {
    "text, two attributes": lambda seq: Point(f"p{seq}", seq, "a"),
    "pickle, attributes": lambda seq: Point({"seq": seq}, (seq, None), "b"),
    "headers and attributes": lambda seq: with_attrs(Point(seq, 1.5, "c"), _headers={"step": seq}),
    "headers only": lambda seq: Tagged(f"t{seq}", headers={"step": seq}),
    "small array, an attribute": lambda seq: with_attrs(Tagged(np.arange(2.0) + seq), n=seq),
    "a user class": lambda seq: with_attrs(Tagged(seq), spot=Spot(f"s{seq}")),
    "named like a field": lambda seq: with_attrs(Tagged(seq), priority=seq, ttl="x"),
    "a Message's headers": lambda seq: Message(f"m{seq}", headers={"seq": seq}),
    "a Message's attribute": lambda seq: with_attrs(Message(seq), note=f"n{seq}"),
}


def meta_of(message: Message, seq: int) -> bytes:
    """node0's ``message`` to node1 with seq ``seq``, tracked, as `codec.encode` gives it."""
    return codec.encode(message, codec.make_stamp(seq, seq, 1.0, 0, 1), codec.FLAG_TRACKED)[0]


def same_state(got: Message, meta: bytes) -> None:
    want = codec.decode(meta, (), NAMES, codec.peek(meta))  # (the general decode)
    assert type(got) is type(want)
    left, right = dict(vars(got)), dict(vars(want))
    data, expected = left.pop("data"), right.pop("data")
    assert left == right
    if isinstance(expected, np.ndarray):
        assert np.array_equal(data, expected) and data.flags.writeable
    else:
        assert data == expected


@pytest.mark.parametrize("make", list(RESTS.values()), ids=list(RESTS))
def test_attributes_and_headers_are_taken_inline_once_the_class_is_kept(
    first_taken: tuple[Geode, Engine, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[int], Message],
) -> None:
    b, engine, _ = first_taken
    calls = spy_take_arrival(engine, monkeypatch)
    before = b.stats("node1")
    size = 0
    for seq in (1, 2, 3):
        meta = meta_of(make(seq), seq)
        got = engine.take_express(1, spun(meta), 0.0)
        assert isinstance(got, Message) and (got.seq, got.source, got.dest) == (
            seq,
            "node0",
            "node1",
        )
        same_state(got, meta)
        assert engine.pairs_in[(0, 1)].expected == seq + 1
        size += len(meta)
    # a subclass's first message names its class (`take_arrival`), the next ones are inline
    assert calls in ([1], [])
    after = b.stats("node1")
    assert (after.received, after.processed) == (before.received + 3, before.processed + 3)
    assert after.received_bytes == before.received_bytes + size


@pytest.mark.parametrize("data", ["text", {"x": 1}], ids=["text", "pickle"])
def test_a_damaged_rest_section_is_never_unpickled(
    first_taken: tuple[Geode, Engine, list[bytes]], monkeypatch: pytest.MonkeyPatch, data: Any
) -> None:
    b, engine, _ = first_taken
    assert isinstance(engine.take_express(1, spun(meta_of(Point("kept"), 1)), 0.0), Point)
    damaged = bytearray(meta_of(Point(data, 5, "label"), 2))
    damaged[-4] ^= 0x01  # (in the rest section)
    monkeypatch.setattr(express, "_loads", lambda _: pytest.fail("unpickled"))
    parcel = engine.take_express(1, spun(bytes(damaged)), 0.0)
    assert parcel is not None and not isinstance(parcel, Message)  # queued, then taken as is
    with pytest.raises(
        DecodeError, match="message 2 from node index 0 does not match its checksum"
    ):
        b._runtime.decode(parcel, 1)


def test_order_and_dedup_hold_for_attributes(
    first_taken: tuple[Geode, Engine, list[bytes]],
) -> None:
    b, engine, _ = first_taken
    assert isinstance(engine.take_express(1, spun(meta_of(Point("kept"), 1)), 0.0), Point)
    pair = engine.pairs_in[(0, 1)]
    early = engine.take_express(1, spun(meta_of(Point("third", 3), 3)), 0.0)
    assert early is None and pair.expected == 2 and pair.held  # held until seq 2
    got = engine.take_express(1, spun(meta_of(Point("second", 2), 2)), 0.0)
    assert got is not None  # (the sink's, as it lets the one held through: a parcel)
    second = got if isinstance(got, Message) else b._runtime.decode(got, 1)
    assert isinstance(second, Point) and (second.data, second.x) == ("second", 2)
    assert pair.expected == 4
    third = b.receive("node1", timeout=10)
    assert isinstance(third, Point) and (third.data, third.x, third.seq) == ("third", 3, 3)
    again = engine.take_express(1, spun(meta_of(Point("second", 2), 2), False), 0.0)
    assert again is None and b.stats("node1").duplicates == 1


def test_a_private_queue_is_never_taken_inline(
    first_taken: tuple[Geode, Engine, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, engine, _ = first_taken
    assert isinstance(engine.take_express(1, spun(meta_of(Point("kept"), 1)), 0.0), Point)
    monkeypatch.setattr(express, "plain_message", lambda *_: pytest.fail("taken inline"))
    monkeypatch.setattr(engine.inboxes[1], "private", {0: lambda parcel: True})
    got = engine.take_express(1, spun(meta_of(Point("kept", 2), 2)), 0.0)
    assert got is None  # (queued: only its executor's filter takes it)
    assert engine.pairs_in[(0, 1)].expected == 3


CALLS: list[str] = []


def refuse(tag: str) -> Any:
    CALLS.append(tag)
    raise ValueError("cannot rebuild here")


class Refused:
    def __reduce__(self) -> Any:
        return (refuse, ("obj",))


@pytest.mark.parametrize(
    "make",
    [
        lambda: Point("data", Refused(), "an attribute"),  # (kept: the inline take)
        lambda: guarded("data", spot=Refused()),  # (never inline: `take_arrival`)
        lambda: guarded(Refused()),  # (its data)
    ],
    ids=["inline", "take_arrival", "take_arrival data"],
)
def test_what_does_not_unpickle_is_unpickled_once(
    taken: tuple[Geode, Engine], make: Callable[[], Message]
) -> None:
    b, engine = taken
    assert isinstance(engine.take_express(1, spun(meta_of(Point("kept"), 1)), 0.0), Point)
    CALLS.clear()
    b._runtime.express_spin = spun(meta_of(make(), 2))
    with pytest.raises(DecodeError, match="message 2 from node index 0: .*cannot rebuild"):
        b.receive()  # (node1's, by the express take: `Geode.receive`'s fast case)
    assert CALLS == ["obj"]
    (letter,) = b.dead_letters("node1")
    assert "cannot rebuild here" in str(letter.error) and engine.undecoded is None
    assert engine.refused is None
    b.transport.attach(engine.sink, engine.sink_run)
    following = meta_of(Point("next", 3), 3)
    engine.sink(0, memoryview(bytearray(following)), (), len(following))
    assert b.receive("node1", timeout=10).data == "next"


@pytest.mark.parametrize(
    "data", ["text", {"x": 1}, np.zeros(1)], ids=["text", "pickle", "small array"]
)
def test_a_subclass_s_damaged_length_field_is_raised_by_the_receive(
    taken: tuple[Geode, Engine], data: Any
) -> None:
    b, engine = taken
    damaged = bytearray(meta_of(Tagged(data), 1))
    at = codec.header.DATA_LEN_AT
    length = int.from_bytes(damaged[at : at + 4], "little")
    damaged[at : at + 4] = (length - 1).to_bytes(4, "little")
    b._runtime.express_spin = spun(bytes(damaged))
    with pytest.raises(DecodeError, match="message 1 from node index 0 says its data is"):
        b.receive()
    assert b.stats("node1").dead_letters == 1 and engine.refused is None


# -- the shapes that stay on the general path ------------------------------------------------


class Sized(Slotted):
    """A subclass of a slotted one, with attributes of its own in its ``__dict__``."""


EDGES: dict[str, Callable[[], Message]] = {
    "an array attribute": lambda: with_attrs(Point("a", 1, "b"), grid=np.arange(6.0)),
    "a large array attribute": lambda: with_attrs(Tagged(1), big=np.ones(40_000)),
    "slots": lambda: slotted(Slotted, "s"),
    "slots and a dict": lambda: slotted(Sized, "s", extra=[1]),
    "a user class": lambda: with_attrs(Point("u"), spot=Spot("here")),
    "its own __setattr__": lambda: guarded("g", note=1),
}


@pytest.mark.parametrize("make", list(EDGES.values()), ids=list(EDGES))
def test_attributes_that_are_not_plain_round_trip(make: Callable[[], Message]) -> None:
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    for _ in range(3):  # (the first of a class, and the ones after)
        sent = make()
        a.send(sent, dest="node1")
        got = b.receive(timeout=10)
        assert type(got) is type(sent)
        for key, value in vars(sent).items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(vars(got)[key], value)
            else:
                assert vars(got)[key] == value
        if isinstance(sent, Slotted):
            assert got.weight == sent.weight
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize("make", list(EDGES.values())[2:], ids=list(EDGES)[2:])
def test_an_express_take_of_one_in_meta_is_the_general_decode_s(
    first_taken: tuple[Geode, Engine, list[bytes]], make: Callable[[], Message]
) -> None:
    _, engine, _ = first_taken
    for seq in (1, 2, 3):
        sent = make()
        meta, frames = codec.encode(sent, codec.make_stamp(seq, seq, 1.0, 0, 1))
        assert not frames
        got = engine.take_express(1, spun(meta), 0.0)
        assert isinstance(got, Message)
        same_state(got, meta)
        if isinstance(sent, Slotted):
            assert got.weight == sent.weight
