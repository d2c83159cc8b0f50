"""Groups with one total order: every member sees the group's messages in the same order.

A group routes each message through its **sequencer** node, which forwards it to every member.
All copies then come from one source, the sequencer, and per-source FIFO (which geode_mpi always
keeps) makes the sequencer's order everyone's order. The cost is one extra hop, and the
sequencer's work of decoding and re-sending each message to every member.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.base.gate import locked
from geode_mpi.codec import header
from geode_mpi.errors import DecodeError, GeodeTimeoutError
from geode_mpi.message import Message
from geode_mpi.queues import Parcel

if TYPE_CHECKING:
    from geode_mpi.core.handles import SendHandle
    from geode_mpi.core.runtime import Runtime

# A message for a total-order topic's sequencer or a work queue's dispatcher, which local
# node ``index`` is: (index, source node index, message, its route); see `Channels.to_owner`.
ToOwner = Callable[[int, int, Message, codec.Route], bool]
# What the owner ``index`` holds for want of room, from these sources (`Channels.held`).
Held = Callable[[int, set[int], codec.Route], None]


class Group:
    """A set of nodes that receive the messages sent to the group in one order.

    Create it with `Geode.group`. Members receive through the usual ``receive()`` and run loop;
    a group message arrives with ``msg.group`` (the group's name), ``msg.group_seq`` (its place
    in the group's order, from 0) and ``msg.origin`` (the node that sent it; ``msg.source`` is
    the sequencer, which forwarded it).
    """

    def __init__(self, geode: Runtime, name: str, members: Sequence[int], sequencer: int) -> None:
        self._geode = geode
        self._gate = geode.gate  # its send holds it, as the Geode's calls do
        self.name = name
        self._members = tuple(members)
        self._sequencer = sequencer
        engine = geode.engine  # (its sequencer forwards in close(): never "done" for it)
        engine.group_sequencers = engine.group_sequencers | {sequencer}

    @property
    def members(self) -> tuple[str, ...]:
        """The member nodes, in the order given."""
        return tuple(self._geode.names[index] for index in self._members)

    @property
    def sequencer(self) -> str:
        """The node that orders the group's messages."""
        return self._geode.names[self._sequencer]

    @locked
    def send(
        self, message: Any, source: str | int | None = None, *, timeout: float | None = None
    ) -> SendHandle:
        """Send ``message`` to every member, in the group's one order.

        Returns once the sequencer has it (the handle of that first hop). When another rank
        hosts ``source``, that rank sends it: the handle here is done at once.
        """
        via = codec.Route(header.ROUTE_GROUP, group=self.name, members=self._members)
        return self._geode.send(
            message,
            source,
            self._sequencer,
            False,
            timeout,
            codec.NO_REPLY,
            codec.FLAG_SEQUENCE,
            False,
            via,
        )

    def __repr__(self) -> str:
        return f"<Group {self.name!r} members={list(self.members)} sequencer={self.sequencer}>"


class Sequencer:
    """Forwards the group messages that reach a local node to each group's members (and hands
    total-order topic messages and work-queue traffic to their topic or queue).

    Each group, topic and queue is a channel whose messages go on in the order they arrived.
    Sending them on can poll, and a poll can bring the next message of the same channel here
    before every member has the current one: that one waits until the current one is out (the
    loop sending the current one takes it next). Other channels go on meanwhile, so one whose
    member has no room left (policy ``block``) holds up only itself.
    """

    def __init__(self, geode: Runtime, to_owner: ToOwner, held: Held) -> None:
        self.geode = geode
        self.to_owner = to_owner
        self.held = held
        self.next_seq: dict[str, int] = {}
        self._held: dict[tuple[str, Any], deque[tuple[int, Parcel, Message]]] = {}
        self._busy: set[tuple[str, Any]] = set()  # channels being sent on, up the stack

    @property
    def holding(self) -> bool:
        """True while messages wait here for their channel (only inside a forward, or after
        a forward raised)."""
        return bool(self._held)

    def forward(self, index: int, parcel: Parcel) -> None:
        """The engine's `on_forward`: take a message that reached sequencer node ``index``."""
        message = self.geode.decode(parcel)
        via = header.route(parcel.meta)
        if via is not None and via.kind == header.ROUTE_TOPIC:
            channel: tuple[str, Any] = ("topic", via.number)
        elif via is not None and via.kind == header.ROUTE_WORK:
            channel = ("queue", via.number)
        elif via is not None:
            channel = ("group", via.group)
            engine = self.geode.engine
            if index not in engine.group_sequencers:  # (its group was not made here)
                engine.group_sequencers = engine.group_sequencers | {index}
        else:  # a damaged flag: nothing to forward it on
            raise DecodeError(
                f"message {message.id} reached sequencer node index {index} without a group, "
                "topic or work queue to forward it on"
            )
        self._held.setdefault(channel, deque()).append((index, parcel, message))
        self.resume()

    def settle(self, deadline: float | None) -> None:
        """Collective (every rank calls it): forward until nothing is on its way to any rank's
        sequencer or dispatcher, and what they sent on has reached its destination's queue.

        Messages sent to a total-order topic's sequencer or a work queue's dispatcher travel
        point-to-point first; a drain alone would leave the last of them at the owner, never
        sent on. So: forward what is here, drain, and again while any rank had something to
        forward (whether it did rides on the drain's last collective).

        Raises:
            GeodeTimeoutError: still moving at ``deadline`` (`time.monotonic`).
        """
        engine = self.geode.engine
        transport = self.geode.transport
        while True:
            while engine.forwards:
                engine.forward()
            self.resume()  # what a forward that raised left behind
            engine.flush()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise GeodeTimeoutError("messages were still moving")
            # (what is held for want of room at a subscriber that takes nothing meanwhile would
            # keep every rank draining for ever: it stays held, sent on once room comes)
            if not transport.drain(left, lambda: bool(engine.forwards) or self._movable()):
                return

    def _movable(self) -> bool:
        """True if a channel holds what it could send on now (not for want of room)."""
        if not self._held:
            return False
        engine = self.geode.engine
        engine.held_for_room = False
        self.resume()
        return bool(self._held) and not engine.held_for_room

    def held_for(self, among: Callable[[tuple[str, Any]], bool] | None = None) -> dict[str, int]:
        """How many messages each sequencer node holds, by node name (of the channels, as
        ``("topic", wire number)``, for which ``among`` is true; None: all)."""
        names = self.geode.names
        found: dict[str, int] = {}
        for channel, held in self._held.items():
            if among is not None and not among(channel):
                continue
            for index, _, _ in held:
                found[names[index]] = found.get(names[index], 0) + 1
        return found

    def channels(self) -> list[tuple[str, Any]]:
        """The channels that hold messages: ``("topic", wire number)``, ``("group", name)``,
        ``("queue", number)``."""
        return list(self._held)

    def held_parcels(self) -> dict[int, list[Parcel]]:
        """What each local sequencer node holds, and what waits to reach it, in order, by
        node index: a checkpoint saves it (`snapshot.capture`), a restart hands it back."""
        found: dict[int, list[Parcel]] = {}
        for held in self._held.values():
            for index, parcel, _ in held:
                found.setdefault(index, []).append(parcel)
        for index, parcel in self.geode.engine.forwards:
            found.setdefault(index, []).append(parcel)
        return found

    def resume(self) -> None:
        """Send on what every channel not being sent on up the stack holds."""
        for waiting in list(self._held):
            # (sending on one channel may have sent on, and dropped, the next one)
            if waiting in self._held and waiting not in self._busy:
                self._send_on(waiting)

    def _send_on(self, channel: tuple[str, Any]) -> None:
        """Send on what ``channel`` holds, in order (nothing else of it runs meanwhile)."""
        held = self._held[channel]
        engine = self.geode.engine
        self._busy.add(channel)
        try:
            while held:
                index, parcel, message = held[0]
                if channel[0] == "group":
                    held.popleft()
                    self._send_to_members(index, parcel, message)
                else:
                    via = header.route(parcel.meta)
                    assert via is not None  # (forward put it on this channel by its route)
                    if not self.to_owner(index, parcel.source, message, via):
                        # No room at a subscriber: held, in its place, until room comes (a
                        # poll retries, `Engine.on_room`); neither waited for here, inside
                        # whatever call polled, nor refused: its publisher's call succeeded.
                        # Its sender gets its ack and credit once it is sent on; a sender
                        # of what is held here is told if a subscriber's rank is closing.
                        engine.held_for_room = True
                        if engine.closing_nodes or engine.closing_beyond:  # (else nobody to tell)
                            self.held(index, {entry[1].source for entry in held}, via)
                        return
                    held.popleft()
                engine.forwarded(index, parcel)
                if engine.told_held(index, parcel.source) and not self._holds(index, parcel):
                    engine.sent_on_all(index, parcel.source)
        finally:
            self._busy.discard(channel)
            if not held and self._held.get(channel) is held:
                del self._held[channel]

    def _holds(self, index: int, parcel: Parcel) -> bool:
        """True if local node ``index`` holds a message of ``parcel``'s source (other than
        ``parcel``) on any channel."""
        source = parcel.source
        return any(
            at == index and held.source == source and held is not parcel
            for channel in self._held.values()
            for at, held, _ in channel
        )

    def _send_to_members(self, index: int, parcel: Parcel, message: Message) -> None:
        geode = self.geode
        state = message.__dict__
        via = header.route(parcel.meta)
        assert via is not None  # (forward put it on a group's channel by its route)
        name, members = via.group, via.members
        seq = self.next_seq.get(name, 0)
        self.next_seq[name] = seq + 1
        state.update(origin=geode.names[parcel.source], group=name, group_seq=seq)
        for member in members:
            geode.send(message, index, member, False, None)
