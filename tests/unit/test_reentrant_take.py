"""A message whose unpickling makes progress (a ``__reduce__`` callable that calls geode) while
a take holds it: what arrives meanwhile is held as early, and must be let through after it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_express import arrival, spun
from test_take_arrival import captured

from geode_mpi import DecodeError, Geode, Message, codec
from geode_mpi.delivery import Engine

STATE: dict[str, Any] = {}


class Tagged(Message):
    """A subclass: its class name sends it through `take_arrival`'s general decode."""


@pytest.fixture
def taken() -> Iterator[tuple[Geode, Engine]]:
    """node1 (in process, its arrivals replayed) with node0's first message taken."""
    a, b, arrivals = captured()
    engine: Engine = b._runtime.engine
    b.transport.attach(engine.sink, engine.sink_run)
    engine.sink(0, memoryview(bytearray(arrivals[1])), (), len(arrivals[1]))
    assert b.receive("node1", timeout=10).data == "text"
    yield b, engine
    for geode in (a, b):
        geode.close(timeout=10)


def rebuild(tag: str) -> tuple[str, str]:
    engine: Engine = STATE["engine"]
    following = arrival("next", seq=2)  # what progress receives meanwhile: the one after it
    engine.sink(0, memoryview(bytearray(following)), (), len(following))
    STATE["inner"] = STATE["geode"].try_receive("node1")  # (any call that makes progress)
    return ("rebuilt", tag)


class Calls:
    def __reduce__(self) -> Any:
        return (rebuild, ("obj",))


def tagged_arrival(data: Any, seq: int) -> bytes:
    stamp = codec.make_stamp(seq, seq, 1.0, 0, 1)
    return codec.encode(Tagged(data), stamp, codec.FLAG_TRACKED)[0]


@pytest.mark.parametrize("cls", [Message, Tagged], ids=["express", "take_arrival"])
def test_what_arrived_while_unpickling_is_let_through(
    taken: tuple[Geode, Engine], cls: type[Message]
) -> None:
    b, engine = taken
    STATE.update(engine=engine, geode=b)
    meta = arrival(Calls(), seq=1) if cls is Message else tagged_arrival(Calls(), 1)
    got = engine.take_express(1, spun(meta), 0.0)
    assert type(got) is cls and got.data == ("rebuilt", "obj")
    assert STATE["inner"] is None  # (the next one waited for it: order kept)
    pair = engine.pairs_in[(0, 1)]
    assert (pair.expected, pair.held) == (3, {})
    following = b.try_receive("node1")
    assert following is not None and (following.data, following.seq) == ("next", 2)
    later = arrival("later", seq=3)
    engine.sink(0, memoryview(bytearray(later)), (), len(later))
    last = b.receive("node1", timeout=10)
    assert (last.data, last.seq) == ("later", 3)
    stats = b.stats("node1")
    assert stats.received == stats.processed == 4  # "text", Calls, "next", "later"


CALLS: list[str] = []


def refuse(tag: str) -> Any:
    CALLS.append(tag)  # (a side effect: a log line, a counter, a send)
    raise ValueError("cannot rebuild here")


class Refused:
    def __reduce__(self) -> Any:
        return (refuse, ("obj",))


def test_data_that_does_not_unpickle_is_unpickled_once(taken: tuple[Geode, Engine]) -> None:
    b, engine = taken
    b._runtime.express_spin = spun(arrival(Refused(), seq=1))
    with pytest.raises(DecodeError, match="cannot decode a Message message 1 .*cannot rebuild"):
        b.receive()  # (node1's, by the express take: `Geode.receive`'s fast case)
    assert CALLS == ["obj"]  # (by the express take; the receive raised what it met)
    (letter,) = b.dead_letters("node1")
    assert "cannot rebuild here" in str(letter.error) and engine.undecoded is None
    following = arrival("next", seq=2)
    engine.sink(0, memoryview(bytearray(following)), (), len(following))
    assert b.receive("node1", timeout=10).data == "next"
