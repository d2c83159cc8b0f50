"""Sends at the edges of the thin path: a Message subclass whose __dict__ holds one attribute
other than data (it forgot super().__init__()), and data whose pickling sends a message itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message
from geode_mpi.transport import InProcHub


class Point(Message):
    """Forgets super().__init__(): its data stays the class default (None)."""

    def __init__(self, x: int) -> None:
        self.x = x


class Greeting(Message):
    data = "hello"  # a class-level default, as Message's own data = None

    def __init__(self, n: int) -> None:
        self.n = n


@pytest.fixture
def pair() -> Iterator[tuple[Geode, Geode]]:
    hub = InProcHub(2)
    geodes = (Geode(2, transport=hub.endpoint(0)), Geode(2, transport=hub.endpoint(1)))
    yield geodes
    for geode in geodes:
        geode.close(timeout=10)


@pytest.mark.parametrize("cls, attribute", [(Point, "x"), (Greeting, "n")])
def test_a_subclass_without_data_in_its_dict_keeps_its_attribute_on_every_send(
    pair: tuple[Geode, Geode], cls: type[Message], attribute: str
) -> None:
    sender, receiver = pair
    for i in range(3):  # (the class is known from the second send on: the fast encodes)
        sender.send(cls(i), dest="node1")  # type: ignore[call-arg]
    for i in range(3):
        got = receiver.receive("node1", timeout=10)
        assert type(got) is cls
        assert getattr(got, attribute, "<missing>") == i
        assert got.data == cls.data


class Noisy:
    """Data whose pickling sends a message of the same node (a callback into geode)."""

    geode: Geode | None = None
    calls = 0

    def __init__(self, tag: str, arr: Any = None) -> None:
        self.tag = tag
        self.arr = arr

    def __reduce__(self) -> tuple[Any, ...]:
        Noisy.calls += 1
        assert Noisy.geode is not None
        Noisy.geode.send(f"inner{Noisy.calls}", dest="node1")
        return (Noisy, (self.tag, self.arr))


@pytest.mark.parametrize("arr", [None, np.zeros(3)], ids=["plain", "holding an array"])
def test_data_whose_pickling_sends_arrives_after_what_it_sent(
    pair: tuple[Geode, Geode], arr: Any
) -> None:
    sender, receiver = pair
    Noisy.geode, Noisy.calls = sender, 0
    sender.send("first", dest="node1")
    outer = sender.send(Noisy("outer", arr), dest="node1")
    sender.send("last", dest="node1")
    got = []
    while True:
        message = receiver.receive("node1", timeout=10)
        got.append((message.seq, message.data))
        if message.data == "last":
            break
    texts = [data if isinstance(data, str) else f"Noisy({data.tag})" for _, data in got]
    inner = [f"inner{i}" for i in range(1, Noisy.calls + 1)]
    assert texts == ["first", *inner, "Noisy(outer)", "last"]
    assert [seq for seq, _ in got] == list(range(len(got)))
    assert outer.seq == got[-2][0]
    assert receiver.stats().duplicates == 0
