"""Frozen dataclass Message subclasses are received as sent, on every decode path.

A received message's ``__dict__`` was assigned through its class's ``__setattr__``, which a
frozen dataclass's refuses (``FrozenInstanceError: cannot assign to field '__dict__'``; with
``slots=True``, ``TypeError: super(type, obj)``): every such message was a `DecodeError`, and
dead-lettered. The codec now sets a received message's state past the class's ``__setattr__``,
as unpickling does.
"""

from __future__ import annotations

import sys
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message
from geode_mpi.codec import Stamp, decode, encode
from geode_mpi.codec.classes import class_name
from geode_mpi.codec.runs import Run, encode_run
from geode_mpi.transport.base import copy_frame

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mpi"))
from payloads import Reading, SlottedReading

NAMES = ["node0", "node1"]
STAMP = Stamp(id=9, seq=4, timestamp=2.0, source=0, dest=1)


def made(cls: type[Message], data: Any, headers: dict[str, Any] | None = None) -> Message:
    message = cls(3, np.arange(4.0))  # type: ignore[call-arg]
    object.__setattr__(message, "data", data)  # (Message.__init__ is not a dataclass's)
    if headers:
        message.__dict__["_headers"] = headers
    return message


# Each takes another decode path: a pickle (decode_named), an array in its frame and a dict
# holding arrays (their shortcut), a small array in meta, headers (the general decode)
DATA: list[tuple[str, Any, dict[str, Any] | None]] = [
    ("text", "x", None),
    ("pickle", {"a": [1, 2]}, None),
    ("array", np.arange(5000.0), None),
    ("dict of arrays", {"grid": np.ones(3000), "n": 2}, None),
    ("small array", np.arange(3), None),
    ("headers", "with headers", {"units": "K"}),
]


def same(got: Message, sent: Message) -> None:
    assert type(got) is type(sent)
    for name in ("step", "data", "headers"):
        want, have = getattr(sent, name), getattr(got, name)
        if isinstance(want, dict):
            assert have.keys() == want.keys()
            assert all(np.array_equal(have[k], v) for k, v in want.items())
        else:
            assert np.array_equal(have, want)
    assert np.array_equal(got.value, sent.value)  # type: ignore[attr-defined]
    assert (got.id, got.seq, got.source, got.dest) == (9, 4, "node0", "node1")


@pytest.mark.parametrize("cls", [Reading, SlottedReading])
@pytest.mark.parametrize("name,data,headers", DATA, ids=[d[0] for d in DATA])
def test_a_frozen_dataclass_message_decodes(
    cls: type[Message], name: str, data: Any, headers: dict[str, Any] | None
) -> None:
    sent = made(cls, data, headers)
    meta, frames = encode(sent, STAMP)
    got = decode(meta, [copy_frame(f) for f in frames], NAMES)
    same(got, sent)
    with pytest.raises(FrozenInstanceError):
        got.step = 4  # type: ignore[misc]  # (still frozen)


@pytest.mark.parametrize("states", [False, True])
def test_a_run_of_a_frozen_dataclass_s_messages_decodes(states: bool) -> None:
    name = class_name(Reading).encode()
    payloads: list[Any] = (
        [{"data": k, "step": k, "value": 2.5} for k in range(3)] if states else [0, 1, 2]
    )
    run = Run(encode_run(name, 0, 9, 4, 0, 1, payloads, [2.0] * 3, states), NAMES)
    built = run.messages()
    assert built is not None
    for index, got in enumerate([run.message(k) for k in range(3)] + built):
        assert type(got) is Reading and got.data == index % 3 and got.seq == 4 + index % 3
        if states:
            assert (got.step, got.value) == (index % 3, 2.5)
    message = run.single(1)  # (the message alone, built from the run to be encoded)
    assert decode(message, [], NAMES).data == 1


def test_a_frozen_dataclass_message_is_received_not_dead_lettered() -> None:
    with Geode(2) as geode:
        for cls in (Reading, SlottedReading):
            sent = cls(1, 2.5)  # type: ignore[call-arg]
            geode.send(sent, "node0", "node1")
            got = geode.receive("node1", timeout=10)
            assert got == sent and type(got) is cls and got.source == "node0"
        assert not geode.dead_letters()
