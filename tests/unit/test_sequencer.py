"""The sequencer's forwarding, against a stand-in Geode: each channel (a group, a total-order
topic, a work queue) keeps its order even when sending on polls and the poll brings more."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from geode_mpi.core.groups import GROUP_ATTRIBUTE, TOPIC_ATTRIBUTE, Sequencer
from geode_mpi.message import Message
from geode_mpi.queues import Parcel

NODES = ("node0", "node1", "node2")


def parcel(seq: int) -> Parcel:
    return Parcel(0, seq, 0, 0, memoryview(b""), (), 0, 0)


class StandIn:
    """What Sequencer uses of a Geode's runtime: decode, send, the engine's `forwarded`; and
    the channels' to_owner."""

    def __init__(self) -> None:
        self.names = NODES
        self.messages: dict[int, Message] = {}
        self.log: list[tuple[Any, ...]] = []
        self.on_send: Callable[[int], None] | None = None  # called with the send's number
        self.sends = 0
        self.engine = SimpleNamespace(forwarded=lambda index, p: self.log.append(("done", p.seq)))

    def to_owner(self, index: int, source: int, message: Message) -> None:
        self.log.append(("topic", message.data))

    def decode(self, p: Parcel) -> Message:
        return self.messages[p.seq]

    def send(self, message: Message, source: int, dest: int, *args: Any) -> None:
        self.log.append(("send", message.data, dest))
        self.sends += 1
        if self.on_send is not None:
            self.on_send(self.sends)


def group_message(data: str) -> Message:
    message = Message(data)
    message.__dict__[GROUP_ATTRIBUTE] = ("g", (0, 1, 2))
    return message


def topic_message(data: str) -> Message:
    message = Message(data)
    message.__dict__[TOPIC_ATTRIBUTE] = 7
    return message


def test_a_message_arriving_while_its_group_is_sent_on_waits_its_turn() -> None:
    geode = StandIn()
    sequencer = Sequencer(geode, geode.to_owner)  # type: ignore[arg-type]
    geode.messages = {0: group_message("a"), 1: group_message("b"), 2: topic_message("t")}

    def poll(count: int) -> None:
        if count == 1:  # the first copy of "a" polls, and the poll brings "b" and "t"
            sequencer.forward(2, parcel(1))
            sequencer.forward(2, parcel(2))

    geode.on_send = poll
    sequencer.forward(2, parcel(0))
    assert geode.log == [
        ("send", "a", 0),
        ("topic", "t"),  # another channel: on at once
        ("done", 2),
        ("send", "a", 1),
        ("send", "a", 2),
        ("done", 0),
        ("send", "b", 0),  # the same group: after every member has "a"
        ("send", "b", 1),
        ("send", "b", 2),
        ("done", 1),
    ]
    assert [geode.messages[k].__dict__["group_seq"] for k in (0, 1)] == [0, 1]
    assert not sequencer.holding


def test_what_a_failed_send_left_behind_goes_on_at_resume() -> None:
    geode = StandIn()
    sequencer = Sequencer(geode, geode.to_owner)  # type: ignore[arg-type]
    geode.messages = {0: group_message("a"), 1: group_message("b")}

    def fail(count: int) -> None:
        if count == 1:
            sequencer.forward(2, parcel(1))  # held behind "a"
            raise RuntimeError("the transport failed")

    geode.on_send = fail
    with pytest.raises(RuntimeError, match="the transport failed"):
        sequencer.forward(2, parcel(0))
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
