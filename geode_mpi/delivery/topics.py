"""Topics as the delivery layer sees them: streams, their publishers, local subscribers.

A topic's messages travel on *streams*: one per publisher, or a single one from the topic's
sequencer when the topic keeps one total order. On the wire a topic message names its publisher
as source and the topic's *wire number* as dest (a number beyond every node index). Here each
stream also has a number beyond every node index, the same on every rank, and each (stream,
subscriber) is a pair like any (source, dest): numbered, deduplicated, ordered, acknowledged and
flow-controlled by the same code as point-to-point.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from geode_mpi.errors import DecodeError
from geode_mpi.transport.base import Frame

Retained = deque[tuple[bytes, list[Frame]]]  # (meta, frames) of published messages
# A stream that retains nothing here (retain=0, or published on another rank): one deque for
# all of them, which can hold nothing (appending to it keeps nothing), not one each.
NOTHING_RETAINED: Retained = deque(maxlen=0)


class TopicNotMadeYet(DecodeError):
    """A resend on a topic restored from a checkpoint reached a rank that has not made the
    topic again yet: dropped there, it comes again (its publisher resends it until it is
    acknowledged) and is delivered once the topic is made."""


class TopicStream:
    """One stream of a topic: who publishes on it, its next number, who subscribes, and the
    last messages it keeps for subscribers that join later."""

    __slots__ = (
        "next_seq",
        "number",
        "publisher",
        "ranks",
        "retained",
        "subscribers",
        "topic",
        "wire",
    )

    def __init__(self, number: int, wire: int, topic: str, publisher: int, retain: int = 0) -> None:
        self.number = number  # the stream's own number (beyond every node index)
        self.wire = wire  # the topic's wire number
        self.topic = topic
        self.publisher = publisher  # the node that broadcasts on it
        self.subscribers: tuple[int, ...] = ()  # every subscriber node, on any rank
        self.ranks = 0  # how many ranks other than the publisher's its broadcasts reach
        # The seq of the next message published on it (its one owner: `Engine.published`
        # moves it on); each subscriber's pair numbers its arrivals from it.
        self.next_seq = 0
        self.retained = deque(maxlen=retain) if retain else NOTHING_RETAINED


class TopicTable:
    """Every topic's streams and wire number (the same on every rank), and which of its
    subscribers this rank hosts."""

    def __init__(self) -> None:
        self.streams: dict[int, TopicStream] = {}  # by stream number
        self.names: dict[int, str] = {}  # topic name by wire number
        self._by_origin: dict[tuple[int, int], int] = {}  # (wire, publisher) -> stream number
        self._local: dict[int, tuple[int, ...]] = {}  # wire -> local subscribers
        # After a restart: the names of the restored topics each publisher node sends on (set
        # by `geode_mpi.core.restoring`), to say what happens to an arrival before topic().
        self.restored: dict[int, list[str]] = {}
        self.told: set[int] = set()  # the ranks whose early resends were logged
        # Arrivals counted for quiescence (`Engine.data_received`) apart from the nodes'
        # received and duplicates, by node (`Streams._topic_arrival`): + a replayed message
        # that a subscriber which came back had, and skipped (its publisher counted it resent
        # for it); - a resend after an ack timeout counted by a second local subscriber (sent
        # for one). Saved with the node's checkpoint.
        self.counted_apart: dict[int, int] = {}
        # (stream, subscriber) that came back -> [lo, hi): the replayed numbers it had, not yet
        # skipped (`Streams.rejoin`).
        self.had: dict[tuple[int, int], list[int]] = {}

    def add(self, stream: TopicStream) -> None:
        """Know a stream (a work queue's has no topic: its wire number is -1)."""
        self.streams[stream.number] = stream
        if stream.wire >= 0:
            self.names[stream.wire] = stream.topic
            self._by_origin[(stream.wire, stream.publisher)] = stream.number

    def stream_of(self, wire: int, publisher: int) -> int:
        """The number of the stream that ``publisher`` broadcasts topic ``wire`` on.

        Raises:
            DecodeError: no such topic or publisher here (ranks disagree about topics).
        """
        number = self._by_origin.get((wire, publisher))
        if number is None and publisher in self.restored:
            topics = " or ".join(repr(name) for name in self.restored[publisher])
            raise TopicNotMadeYet(
                f"a resend on restored topic {topics} reached this rank before it made the topic"
                " again: dropped here; its publisher resends it until it is acknowledged, and it"
                " is delivered once topic() is called here"
            )
        if number is None:
            raise DecodeError(
                f"a message published by node index {publisher} on topic number {wire}, which "
                "this rank does not know: do all ranks create the same topics in the same order?"
            )
        return number

    def set_local_subscribers(self, wire: int, subscribers: tuple[int, ...]) -> None:
        self._local[wire] = subscribers

    def local_subscribers(self, wire: int) -> tuple[int, ...]:
        return self._local.get(wire, ())

    def of_topic(self, wire: int) -> Sequence[TopicStream]:
        """The streams of topic ``wire``, in the order they were added."""
        return [stream for stream in self.streams.values() if stream.wire == wire]

    def publisher_of(self, number: int) -> int:
        """The node that publishes on stream ``number``."""
        return self.streams[number].publisher
