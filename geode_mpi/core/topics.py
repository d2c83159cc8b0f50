"""Topics: publish once, every subscriber gets the message.

A topic's messages travel on streams (`geode_mpi.transport.fanout`: point-to-point to each
member rank, no communicator of their own): one per publisher, so that each publisher's
messages keep their order, or, for a topic with one total order, a single stream from its
sequencer, to which the other publishers send point-to-point.
Subscribers on the publisher's own rank get a local copy instead. The delivery layer treats
each (stream, subscriber) as a pair: numbered, deduplicated, in order, acknowledged and
flow-controlled like point-to-point (`geode_mpi.delivery.topics`).

Creating a topic, subscribing and unsubscribing are collective: every rank calls them with the
same arguments, in the same order. A pattern subscription (`Subscription`) names topics by a
glob or a prefix of their names: the topics that exist when it is made, and those made later.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.base.gate import locked, other_threads
from geode_mpi.codec.compression import Compression, setting
from geode_mpi.codec.header import ROUTE_TOPIC
from geode_mpi.core.handles import ELSEWHERE, SendHandle
from geode_mpi.core.handles_publish import PublishHandle
from geode_mpi.core.runtime_parts import POLL_EVERY_SENDS
from geode_mpi.delivery.sending import sent_elsewhere
from geode_mpi.delivery.topics import TopicStream
from geode_mpi.delivery.waiting import wait_for
from geode_mpi.errors import ClosedError, check_timeout
from geode_mpi.message import Message
from geode_mpi.queues import Match, Parcel

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime

# (re-exported: its home before the split, and the public API's `PublishHandle`)
__all__ = ["EXECUTOR_BASE", "STREAM_BASE", "PublishHandle", "Topic"]

STREAM_BASE = 1 << 20  # stream numbers start this far beyond the node indices; wire numbers below
# Executors' work queues: numbered from here on, apart (`Channels.executor_number`)
EXECUTOR_BASE = 1 << 30


class Topic:
    """A named topic: its publishers publish, every subscriber receives each message once.

    Create it with `Geode.topic`. Subscribers receive topic messages through the usual
    ``receive()`` (``receive(topic="name")`` takes only this topic's) and run loop; each arrives
    with ``msg.topic`` set to the topic's name and ``msg.source`` to its publisher (on a
    total-order topic, ``msg.source`` is the sequencer and ``msg.origin`` the publisher).
    """

    def __init__(
        self,
        geode: Runtime,
        name: str,
        wire: int,
        publishers: Sequence[int],
        subscribers: Sequence[int],
        retain: int,
        sequencer: int | None,
        new_stream_number: Callable[[], int],
        settle: Callable[[float | None], None],
    ) -> None:
        self._geode = geode
        self._settle = settle  # `Sequencer.settle`
        self._gate = geode.gate  # its public calls hold it, as the Geode's do
        self.name = name
        self.wire = wire
        self._publishers = tuple(publishers)
        self._subscribers: tuple[int, ...] = ()
        # Subscribed by name (at creation, or `subscribe`), not only through a pattern: a
        # pattern's unsubscribe leaves these. `Channels.topic` sets it.
        self.named: set[int] = set(subscribers)
        self.retain = retain
        self._sequencer = sequencer
        self.compress: Compression | None = None  # its compress= setting (None: the Geode's)
        roots = self._publishers if sequencer is None else (sequencer,)
        engine = geode.engine
        self._streams: dict[int, TopicStream] = {}  # by root (publishing) node
        # by number, of the streams published here: (broadcast to other ranks?, a local copy
        # on the publisher's rank?)
        self._routes: dict[int, tuple[bool, bool]] = {}
        inboxes = geode.inboxes
        local = [sub for sub in subscribers if sub in inboxes]
        for root in roots:
            number = new_stream_number()
            # (retained where it publishes only: no other rank sends or replays its messages)
            stream = TopicStream(number, wire, name, root, retain if root in inboxes else 0)
            self._streams[root] = stream
            engine.add_stream(stream)
            for sub in local:
                engine.expect_from_start(number, sub)
        # What receive(topic=...) passes the queue: a topic message's parcel comes from one of
        # the topic's streams (numbered beyond every node index), which says it all.
        numbers = frozenset(stream.number for stream in self._streams.values())
        self.numbers = numbers
        self.match: Match = lambda parcel: parcel.source in numbers
        self._join(subscribers)

    # -- what it is ------------------------------------------------------------------------

    @property
    def publishers(self) -> tuple[str, ...]:
        return tuple(self._geode.names[index] for index in self._publishers)

    @property
    def subscribers(self) -> tuple[str, ...]:
        return tuple(self._geode.names[index] for index in self._subscribers)

    @property
    def total_order(self) -> bool:
        """True if every subscriber sees the messages of all publishers in one order."""
        return self._sequencer is not None

    @property
    def sequencer(self) -> str | None:
        """The node that orders a total-order topic's messages (None otherwise)."""
        return None if self._sequencer is None else self._geode.names[self._sequencer]

    def __repr__(self) -> str:
        order = "total order" if self.total_order else "per-publisher order"
        return (
            f"<Topic {self.name!r} publishers={list(self.publishers)} "
            f"subscribers={list(self.subscribers)} {order} retain={self.retain}>"
        )

    # -- publishing ------------------------------------------------------------------------

    def publish(
        self,
        message: Any,
        source: str | int | None = None,
        *,
        ack: bool = False,
        timeout: float | None = None,
        compress: str | Compression | None = None,
        priority: int = 0,
        ttl: float | None = None,
    ) -> SendHandle:
        """Send ``message`` to every subscriber of the topic; return at once with a handle.

        As with `Geode.isend`, do not modify arrays in the message until the handle is done,
        and a small message may be held back for up to 100 microseconds to go out with the
        next ones to the same ranks in one MPI message; it goes at the next geode_mpi call
        that waits, `Geode.flush`, or ``handle.wait()``.

        Args:
            message: a Message, or any picklable value (wrapped in a Message).
            source: the publishing node (default: this rank's node); it must be one of the
                topic's publishers. If another rank hosts it, that rank publishes it: here
                nothing happens, and the handle is done at once (``handle.local`` is False).
            ack: the handle completes once every subscriber has processed the message.
            timeout: how long to wait for room when a subscriber's queue is full (``block``).
            compress: this message's compression, over the topic's and the Geode's (on a
                total-order topic, for its way to the sequencer; the topic's from there).
            priority: each subscriber takes higher priorities first (see `Geode.isend`).
            ttl: seconds the message may live, at each subscriber (see `Geode.isend`).

        Raises:
            ValueError: ``source`` is not a publisher of this topic, or a priority or ttl on
                a total-order topic (they would reorder or thin out its one order).
            QueueFull, SendTimeout, EncodeError, ClosedError: as for `Geode.isend`. An
                error of the poll every 32nd publish makes after its message went has that
                message in ``after_send`` (it was published), as a send's has.
        """
        geode = self._geode
        if other_threads() and not geode.owned():
            return geode.serialised(
                self.publish,
                message,
                source,
                ack=ack,
                timeout=timeout,
                compress=compress,
                priority=priority,
                ttl=ttl,
            )
        timeout = check_timeout(timeout)
        via = None if not priority and ttl is None else codec.qos_route(priority, ttl)
        if via is not None and self.total_order:
            raise ValueError(
                f"topic {self.name!r} has a total order: its messages take no priority or ttl "
                "(they would reorder or thin out the one order every subscriber sees)"
            )
        src = geode.rank if source is None else geode.placement.index(source, "source")
        if src not in self._publishers:
            raise ValueError(
                f"{geode.names[src]} is not a publisher of topic {self.name!r} (its publishers: "
                f"{', '.join(self.publishers)})"
            )
        if src not in geode.inboxes:  # its rank publishes it
            stamp = codec.Stamp(ELSEWHERE, ELSEWHERE, 0.0, src, self.wire)
            ticket = sent_elsewhere(geode.placement.rank_of(src))
            return PublishHandle(geode, ticket, stamp, None, False, self.name)
        msg = message if isinstance(message, Message) else Message(message)
        chosen = self.compress if compress is None else setting(compress)
        if self._sequencer is not None and src != self._sequencer:
            # To the sequencer, which publishes it on the topic's one stream.
            via = codec.Route(ROUTE_TOPIC, self.wire)
            return geode.send(
                message,  # (as given: an error of the send's poll names it, `after_send`)
                src,
                self._sequencer,
                ack,
                timeout,
                codec.NO_REPLY,
                codec.FLAG_SEQUENCE,
                False,
                via,
                chosen,
            )
        if self._sequencer is not None:
            msg = copy.copy(msg)
            msg.__dict__["origin"] = geode.names[src]
        handle = self._publish(msg, src, ack, timeout, chosen, via)
        geode.sends += 1
        if not geode.sends & POLL_EVERY_SENDS - 1:
            # A rank that only publishes still takes in its acks (else its outbox keeps every
            # message it published), as one that only sends does (`Runtime.send`); an arrival
            # it cannot read is raised by the next call, not by this publish, which went; any
            # other error of the poll says it went, as a send's does (`after_send`).
            geode.poll_after(message, keep_undecoded=True)
        return handle

    def has_room(self, sequencer: int) -> bool:
        """True if every subscriber has room now for what ``sequencer`` sends on."""
        return self._geode.engine.stream_has_room(self._streams[sequencer])

    def tell_held(self, sequencer: int, sources: set[int]) -> None:
        """``sequencer`` holds messages of ``sources`` for want of room: tell them of the
        subscribers whose rank is in close() (`Credits.tell_held`)."""
        engine = self._geode.engine
        stream = self._streams[sequencer]
        for source in sources:
            engine.tell_held(sequencer, source, stream)

    def publish_sequenced(self, message: Message, sequencer: int) -> None:
        """Publish on the topic's one stream what its ``sequencer`` node received from a
        publisher (``message.origin`` says which)."""
        self._publish(message, sequencer, False, None, self.compress)

    def _publish(
        self,
        msg: Message,
        src: int,
        ack: bool,
        timeout: float | None,
        compress: Compression | None = None,
        via: codec.Route | None = None,
    ) -> PublishHandle:
        geode = self._geode
        geode.check_sending("publish")
        stream = self._streams[src]
        deadline = None if timeout is None else time.monotonic() + timeout
        pairs = geode.engine.reserve_stream(stream, deadline, timeout)
        remote, local = self._routes[stream.number]
        ticket, stamp = geode.path.publish(msg, stream, pairs, ack, remote, local, compress, via)
        tracked = geode.acks or ack
        if not tracked:
            return PublishHandle(geode, ticket, stamp, None, ack, self.name)
        return PublishHandle(geode, ticket, stamp, pairs, ack, self.name, stream)

    # -- membership ------------------------------------------------------------------------

    @locked
    def subscribe(self, nodes: str | int | Iterable[str | int]) -> None:
        """Add subscribers (collective: every rank calls it with the same nodes).

        What was published before (on a total-order topic: even if still on its way to the
        sequencer) reaches only the earlier subscribers; the new ones get the topic's retained
        messages first (up to ``retain`` per publisher; on a total-order topic, the last
        ``retain`` of its one stream), then what follows.
        """
        indices = self._indices(nodes)
        self._agree("subscribe", indices)
        self.named.update(indices)
        self.add(indices)

    @locked
    def unsubscribe(self, nodes: str | int | Iterable[str | int]) -> None:
        """Remove subscribers (collective). Messages already delivered stay in their queues;
        the publishers stop waiting for those subscribers' acks and credits. A node that a
        pattern subscribed leaves this topic too (the pattern still gives it later topics)."""
        indices = self._indices(nodes)
        self._agree("unsubscribe", indices)
        self.named.difference_update(indices)
        self.remove(indices)

    def add(self, nodes: Sequence[int]) -> None:
        """Add subscribers, once every rank agreed to (the stream change is collective)."""
        added = [index for index in dict.fromkeys(nodes) if index not in self._subscribers]
        if added:
            self._change(self._subscribers + tuple(added), added)

    def remove(self, nodes: Iterable[int]) -> None:
        """Remove subscribers, once every rank agreed to."""
        gone = set(nodes) & set(self._subscribers)
        if gone:
            self._change(tuple(index for index in self._subscribers if index not in gone), [])

    def _agree(self, call: str, indices: list[int]) -> None:
        geode = self._geode
        if geode.sealed:
            raise ClosedError(call)
        what = f"subscribers of topic {self.name!r}"
        geode.agree(repr((call, indices)).encode(), what, f"{call}() of topic {self.name!r}")

    def _indices(self, nodes: str | int | Iterable[str | int]) -> list[int]:
        return self._geode.placement.one_or_more(nodes, "nodes", "subscriber")

    def _change(self, subscribers: tuple[int, ...], added: list[int]) -> None:
        sequencer = self._sequencer
        if sequencer is None or all(pub == sequencer for pub in self._publishers):
            self._change_streams(subscribers, added)
            return
        # Publishes still on their way to the sequencer were made before the change:
        # sequenced on the old streams, for the old subscribers, before those end.
        self._settle(None)
        # What reaches the sequencer from here on was published after the change (its
        # publisher left the call): held until the new streams are open. And every rank
        # leaves the drain before any ends a stream: an end marker holds its member's queue
        # until the stream reopens there, and a member still in the drain would wait for
        # that queue for ever (Open MPI, 4 ranks: 1 launch in 3).
        engine = self._geode.engine
        held: list[tuple[int, Parcel]] = []
        forward, engine.on_forward = engine.on_forward, lambda *item: held.append(item)
        try:
            wait_for(engine, self._geode.transport.all_entered(), None)
            self._change_streams(subscribers, added)
        finally:
            engine.on_forward = forward
            engine.forwards.extendleft(reversed(held))  # (first, in their order)
        engine.forward()

    def _change_streams(self, subscribers: tuple[int, ...], added: list[int]) -> None:
        """End the streams, change the subscribers, open the new streams, replay the
        retained messages for the new subscribers (collective)."""
        geode = self._geode
        rank_of = geode.placement.rank_of
        before = {rank_of(sub) for sub in self._subscribers}
        after = {rank_of(sub) for sub in subscribers}
        # The old streams end, everything delivered. A rank that joins waits for the end
        # too, so that what the root sends on the new streams waits for this rank to open
        # them: a rank still ending another topic's stream (a pattern's call changes several)
        # would otherwise receive it before it knows its new subscribers here, and drop it.
        joining = sorted(after - before)
        for stream in self._streams.values():
            geode.transport.close_stream(stream.number, joining=joining)
        removed = set(self._subscribers) - set(subscribers)
        for root, stream in self._streams.items():
            for sub in removed:
                geode.engine.forget_subscriber(stream.number, sub)
            for sub in added:
                geode.engine.rejoin(stream.number, sub)  # (new, or one that was here before)
            # A rank that joins holds nothing of what the stream's cache mirror says its
            # member ranks hold, and one that leaves is no longer one of them: every rank
            # starts the stream's cache again, in a new epoch (collective).
            here = rank_of(root)
            changed = after - {here} != before - {here}
            member = geode.rank != here and geode.rank in after
            geode.path.cache.stream_changed(stream.number, changed, member)
        self._join(subscribers)
        for root, stream in self._streams.items():
            if added and root in geode.inboxes:
                self._replay(stream, added)

    def _join(self, subscribers: Sequence[int]) -> None:
        """Open the streams for this set of subscribers (no communication)."""
        geode = self._geode
        self._subscribers = tuple(subscribers)
        local = tuple(sub for sub in self._subscribers if sub in geode.inboxes)
        geode.engine.topics.set_local_subscribers(self.wire, local)
        rank_of = geode.placement.rank_of
        # Worked out once, for all the topic's streams in one call (each rank opens every
        # stream: a copy per stream was publishers x members entries on every rank).
        ranks = {rank_of(sub) for sub in self._subscribers}
        members = tuple(sorted(ranks))
        # (number, the rank where its messages start) of each stream
        opened = [(stream.number, rank_of(root)) for root, stream in self._streams.items()]
        geode.transport.open_streams(opened, members)
        self._routes.clear()
        for (root, stream), (_, here) in zip(self._streams.items(), opened, strict=True):
            stream.subscribers = self._subscribers
            stream.ranks = len(members) - (here in ranks)
            if root in geode.inboxes:
                self._routes[stream.number] = (bool(stream.ranks), here in ranks)

    def _replay(self, stream: TopicStream, added: list[int]) -> None:
        """Send the retained messages again, for the new subscribers (the others skip them)."""
        geode = self._geode
        ranks = {geode.placement.rank_of(sub) for sub in added}
        geode.path.replay(stream, len(added), bool(ranks - {geode.rank}), geode.rank in ranks)
