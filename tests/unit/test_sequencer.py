"""The sequencer's forwarding, against a stand-in Geode: each channel (a group, a total-order
topic, a work queue) keeps its order even when sending on polls and the poll brings more."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from geode_mpi import codec
from geode_mpi.codec.header import ROUTE_GROUP, ROUTE_TOPIC, Route
from geode_mpi.core.groups import Sequencer
from geode_mpi.message import Message
from geode_mpi.queues import Parcel

NODES = ("node0", "node1", "node2")
GROUP = Route(ROUTE_GROUP, group="g", members=(0, 1, 2))
TOPIC = Route(ROUTE_TOPIC, 7)


class StandIn:
    """What Sequencer uses of a Geode's runtime: decode, send, the engine's `forwarded` and
    `told_held`; and the channels' to_owner and held."""

    def __init__(self) -> None:
        self.names = NODES
        self.messages: dict[int, tuple[Message, Route]] = {}  # by seq: where each goes on
        self.log: list[tuple[Any, ...]] = []
        self.told: list[tuple[int, list[int]]] = []  # (owner, sources) of what it held
        self.on_send: Callable[[int], None] | None = None  # called with the send's number
        self.sends = 0
        self.engine = SimpleNamespace(
            forwarded=lambda index, p: self.log.append(("done", p.seq)),
            told_held=lambda index, source: False,
            held_for_room=False,
            closing_nodes=frozenset({9}),  # (a rank is closing: what is held is told)
            closing_beyond={},
            group_sequencers=frozenset(),
        )
        self.room = True  # False: a topic's subscriber has no room (to_owner says so)

    def to_owner(self, index: int, source: int, message: Message, via: Route) -> bool:
        if not self.room:
            return False
        self.log.append(("topic", message.data, via))
        return True

    def held(self, index: int, sources: set[int], via: Route) -> None:
        self.told.append((index, sorted(sources)))

    def decode(self, p: Parcel) -> Message:
        return self.messages[p.seq][0]

    def parcel(self, seq: int) -> Parcel:
        """Message ``seq`` as it reaches the sequencer: its route in its header."""
        stamp = codec.make_stamp(seq, seq, 0.0, 0, 2)
        meta, _ = codec.encode(
            Message(None), stamp, codec.FLAG_SEQUENCE, route=self.messages[seq][1]
        )
        return Parcel(0, seq, 0, 0, memoryview(meta), (), 0, 0)

    def send(self, message: Message, source: int, dest: int, *args: Any) -> None:
        self.log.append(("send", message.data, dest))
        self.sends += 1
        if self.on_send is not None:
            self.on_send(self.sends)


def group_message(data: str) -> tuple[Message, Route]:
    return Message(data), GROUP


def topic_message(data: str) -> tuple[Message, Route]:
    return Message(data), TOPIC


def test_a_message_arriving_while_its_group_is_sent_on_waits_its_turn() -> None:
    geode = StandIn()
    sequencer = Sequencer(geode, geode.to_owner, geode.held)  # type: ignore[arg-type]
    geode.messages = {0: group_message("a"), 1: group_message("b"), 2: topic_message("t")}

    def poll(count: int) -> None:
        if count == 1:  # the first copy of "a" polls, and the poll brings "b" and "t"
            sequencer.forward(2, geode.parcel(1))
            sequencer.forward(2, geode.parcel(2))

    geode.on_send = poll
    sequencer.forward(2, geode.parcel(0))
    assert geode.log == [
        ("send", "a", 0),
        ("topic", "t", TOPIC),  # another channel: on at once
        ("done", 2),
        ("send", "a", 1),
        ("send", "a", 2),
        ("done", 0),
        ("send", "b", 0),  # the same group: after every member has "a"
        ("send", "b", 1),
        ("send", "b", 2),
        ("done", 1),
    ]
    assert [geode.messages[k][0].__dict__["group_seq"] for k in (0, 1)] == [0, 1]
    assert not sequencer.holding


def test_what_a_failed_send_left_behind_goes_on_at_resume() -> None:
    geode = StandIn()
    sequencer = Sequencer(geode, geode.to_owner, geode.held)  # type: ignore[arg-type]
    geode.messages = {0: group_message("a"), 1: group_message("b")}

    def fail(count: int) -> None:
        if count == 1:
            sequencer.forward(2, geode.parcel(1))  # held behind "a"
            raise RuntimeError("the transport failed")

    geode.on_send = fail
    with pytest.raises(RuntimeError, match="the transport failed"):
        sequencer.forward(2, geode.parcel(0))
    assert sequencer.holding
    geode.on_send = None
    sequencer.resume()
    assert [entry for entry in geode.log if entry[0] != "send" or entry[1] == "b"][-4:] == [
        ("send", "b", 0),
        ("send", "b", 1),
        ("send", "b", 2),
        ("done", 1),
    ]
    assert not sequencer.holding


def test_a_topic_message_without_room_is_held_in_order_until_resume() -> None:
    geode = StandIn()
    sequencer = Sequencer(geode, geode.to_owner, geode.held)  # type: ignore[arg-type]
    geode.messages = {0: topic_message("t0"), 1: topic_message("t1")}
    geode.room = False
    sequencer.forward(2, geode.parcel(0))
    sequencer.forward(2, geode.parcel(1))
    assert geode.log == [] and sequencer.holding  # held: not sent, not done, not raised
    assert geode.engine.held_for_room  # (a poll retries)
    geode.room = True
    sequencer.resume()
    assert geode.log == [("topic", "t0", TOPIC), ("done", 0), ("topic", "t1", TOPIC), ("done", 1)]
    assert not sequencer.holding
