"""The Geode's receives, `receive` and `try_receive`, their fast cases (the hot path), and the
filters and the timeout error they share with the other receiving calls."""

from __future__ import annotations

from typing import Any

from geode_mpi import codec
from geode_mpi.base.gate import locked, other_threads, senders_may_run
from geode_mpi.base.listing import ranks_named, some_names
from geode_mpi.codec.runs import RunItem
from geode_mpi.core.aio import POLL_EVERY_RUN_RECEIVES
from geode_mpi.core.facade import Facade
from geode_mpi.core.facade_sending import _NODE_KEYS, _SECONDS
from geode_mpi.core.filters import (
    TypeFilter,
    matcher,
    order_key,
    type_label,
    unfound_classes,
    unfound_text,
)
from geode_mpi.core.runtime import FIRST_SPIN, NO_FAST_QUEUE, POLL_EVERY_RECEIVES, Runtime
from geode_mpi.core.subscriptions import Subscription
from geode_mpi.core.topics import Topic
from geode_mpi.delivery.run_cursor import RunCursor
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.delivery.waiting import ended_elsewhere
from geode_mpi.errors import ClosedError, DecodeError, ReceiveTimeout, check_timeout
from geode_mpi.message import Message
from geode_mpi.queues import Match
from geode_mpi.tracing import TRACER

# Hot-path names, bound once.
_decode = codec.decode
_FROM_STREAM = codec.FLAG_TOPIC | codec.FLAG_WORK  # from a topic's or a work queue's stream
# The longest timeout the fast case takes (longer ones, or a float's inf, go the general way,
# which refuses an int beyond a float's range before taking anything)
_LONGEST = 1e300
_MATCHERS_MAX = 256  # (source, type) filters a Geode keeps built


class ReceiveCalls(Facade):
    """The Geode's receives (`Geode` inherits them)."""

    def receive(
        self,
        node: str | int | None = None,
        *,
        source: str | int | None = None,
        type: TypeFilter = None,
        timeout: float | None = None,
        order: str | None = None,
        topic: Topic | Subscription | str | None = None,
    ) -> Message:
        """Take the oldest matching message from a node's queue, waiting for one if needed.

        Messages from one source come out in the order they were sent. On a queue with
        explicit acks, call ``msg.ack()`` (or ``msg.nack()``) when done with it.

        Args:
            node: the receiving node (default: this rank's node); must be hosted here.
            source: only messages from this node.
            type: only messages of this Message class (or subclasses), or this class name.
            timeout: seconds to wait (None: no limit; 0: do not wait).
            order: ``"timestamp"`` or ``"id"``: of the messages queued now, the one with the
                smallest timestamp (sender clocks) or id, instead of the oldest arrival
                (a scan of the queue: its cost grows with its length).
            topic: only messages published on this topic (a Topic or its name), or on the
                topics a pattern matches (a `Subscription`, or a glob such as ``"sim.*"``).

        Raises:
            ReceiveTimeout: nothing matching arrived in time (also a TimeoutError).
            NodeNotLocalError: another rank hosts ``node``.
            UnknownNodeError: ``node`` or ``source`` is not a node of this job.
            DecodeError: the message arrived but cannot be decoded here.
            ClosedError: the Geode is closed and nothing matching is queued (naming the
                thread whose close() ended its wait, ``closer``, if it waited then).
        """
        runtime = self._runtime
        if other_threads() and not runtime.owned():
            return runtime.serialised(
                self.receive,
                node,
                source=source,
                type=type,
                timeout=timeout,
                order=order,
                topic=topic,
            )
        spun = False
        want = -1  # (the source filter's node index, found by `_head_from`)
        if (
            runtime.plain_queue is not NO_FAST_QUEUE
            and (node is None or (node.__class__ in _NODE_KEYS and node in self._own))
            and (
                timeout is None
                or (
                    timeout.__class__ in _SECONDS
                    and (0 < timeout < _LONGEST or (timeout == 0 and runtime.plain_queue))
                )
            )  # (before ``source``: a bad timeout is the general path's to report first)
            and (source is None or (want := self._head_from(source)) >= 0)
            and type is None
            and order is None
            and topic is None
        ):
            # The commonest receive: this rank's node (unnamed or named), automatic acks, no
            # window, with or without a timeout: a message already queued, or one that comes
            # within the first spin (a ping-pong's reply), is taken and decoded without the
            # general machinery (with a ``source`` filter: the first one queued, from it). A
            # poll (``timeout=0``, and `try_receive`) takes a queued message here too; it never
            # spins. (A positive timeout counts after the spin.)
            engine = runtime.engine
            if runtime.plain_queue:
                head = runtime.plain_queue[0].frames
                if head.__class__ is RunCursor:  # a run queued whole: its next message
                    message = _next_of_run(runtime, self.rank, head)
                    if message is not None:
                        return message
                parcel = engine.take_plain(self.rank)
                if parcel is not None:
                    runtime.receives += 1
                    if not runtime.receives & POLL_EVERY_RECEIVES - 1:
                        engine.poll_after_take()
            else:
                # The express receive: the spin and the take in one step (`Engine.take_express`;
                # no spin while a sequencer has messages to forward: `take` forwards them first).
                spin = runtime.express_spin
                if spin is None or engine.forwards:
                    spun_for = None
                else:
                    spun_for = engine.take_express(self.rank, spin, FIRST_SPIN, want)
                    if spun_for is not None:
                        runtime.receives += 1
                if isinstance(spun_for, Message):  # taken and decoded as it arrived
                    if TRACER.on:
                        trace_receive(self.rank, spun_for, "receive")
                    return spun_for
                parcel = spun_for
                spun = True
            if parcel is not None:
                try:
                    # Taken for good (automatic acks): a small array may be a view of the
                    # message's own receive buffer. A topic's meta is shared by its local
                    # subscribers: copied from. A run's message was built as it arrived.
                    frames: Any = parcel.frames
                    owned = not parcel.flags & _FROM_STREAM
                    if frames.__class__ is RunItem and frames.message is not None:
                        message = frames.message
                    elif spun and engine.undecoded is not None and engine.undecoded[0] is parcel:
                        failed = engine.undecoded[1]  # (unpickled once, by the take: not again)
                        engine.undecoded = None
                        raise failed
                    else:
                        message = _decode(parcel.meta, frames, runtime.names, None, owned)
                    if not owned:
                        runtime.stream_fields(message, parcel, self.rank)
                    if TRACER.on:
                        trace_receive(self.rank, message, "receive")
                    return message
                except DecodeError as exc:
                    engine.dead_letter(self.rank, parcel, exc, parcel.attempts + 1, False)
                    runtime.undecodable(self.rank, parcel, exc)
                    raise
        if timeout is not None:
            timeout = check_timeout(timeout)
        index = self.rank if node is None else runtime.local_index(node, "receive")
        match = (
            None
            if source is None and type is None and topic is None
            else self._matcher(source, type, topic)
        )
        key = None if order is None else order_key(order)
        was_open = not runtime.closed  # (a close() in another thread may end its wait)
        found = runtime.take(index, match, key, timeout, spun, source)
        if found is not None:
            return runtime.deliver(index, found)
        waited = runtime.transport.delivers_later or senders_may_run()
        raise self._nothing_came(
            "receive", index, timeout, source, type, waited, was_open, node is None, topic
        )

    def _head_from(self, source: str | int) -> int:
        """``source``'s node index if `receive(source=...)` may take its fast case: nothing
        is queued (the express take takes only a message from ``source``), or the message a
        plain take takes (`Inbox.in_order`: then it is the queue's head) is the oldest
        queued, and it is from ``source``; -1 if not.

        Raises:
            UnknownNodeError: ``source`` is not a node of this job.
        """
        runtime = self._runtime
        queue = runtime.plain_queue
        index = runtime.placement.index(source, "source")
        if queue and (queue[0].source != index or not runtime.inboxes[self.rank].in_order):
            return -1
        return index

    def try_receive(
        self,
        node: str | int | None = None,
        *,
        source: str | int | None = None,
        type: TypeFilter = None,
        order: str | None = None,
        topic: Topic | Subscription | str | None = None,
    ) -> Message | None:
        """Like `receive`, but return None at once when nothing matching is queued."""
        if (
            self._runtime.plain_queue
            and node is None
            and source is None
            and type is None
            and order is None
            and topic is None
        ):
            # A message queued for this rank's node: `receive`'s fast case takes it.
            try:
                return self.receive(timeout=0)
            except ReceiveTimeout:  # (its head held back for a retry: nothing to take now)
                return None
        return self._try_receive(node, source, type, order, topic)

    @locked
    def _try_receive(
        self,
        node: str | int | None,
        source: str | int | None,
        type: TypeFilter,
        order: str | None,
        topic: Topic | Subscription | str | None,
    ) -> Message | None:
        """`try_receive`'s general case, holding the gate."""
        index = self._runtime.local_index(node, "try_receive")
        if not self._runtime.closed:
            self._runtime.poll()
        found = self._runtime.engine.take(
            index,
            self._matcher(source, type, topic),
            order_key(order),
            False,
        )
        return None if found is None else self._runtime.deliver(index, found)

    def _nothing_came(
        self,
        call: str,
        index: int,
        timeout: float | None,
        source: str | int | None,
        type_filter: TypeFilter,
        waited: bool,
        was_open: bool = False,
        defaulted: bool = False,
        topic: Topic | Subscription | str | None = None,
    ) -> ReceiveTimeout:
        """The error of a receive at node ``index`` that got nothing (`ClosedError` raised
        instead once the Geode is closed: naming the thread whose close() ended its wait, if
        it was open when the receive began, ``was_open``, as a request's names it).
        ``defaulted``: the call named no node (this rank's first): the error then names the
        rank's other nodes that hold messages, if any (a message sent to one of them)."""
        runtime = self._runtime
        if runtime.closed:
            closer = runtime.engine.closer if was_open else None
            raise ClosedError(call, None if closer is None else closer.name)
        engine = runtime.engine
        if ended_elsewhere(engine):
            raise runtime.closed_error(call)  # (a close() of another thread that timed out)
        names = runtime.names
        hint = ""
        queued = runtime.inboxes[index]
        if type_filter is not None and len(queued) and (timeout is None or timeout > 0):
            unfound = unfound_classes(queued)  # (not a poll: a scan costs nothing beside it)
            if unfound:
                hint = f"; of the messages queued at {names[index]}, {unfound_text(unfound)}"
        if defaulted:
            held = [
                other
                for other, inbox in sorted(runtime.inboxes.items())
                if other != index and len(inbox)
            ]
            if held:
                counts = [f"{names[other]} ({len(runtime.inboxes[other])})" for other in held]
                hint += (
                    f"; messages are queued at this rank's other node(s): {some_names(counts)} "
                    f"({call}() without a node takes {names[index]}'s; name the node to take "
                    f"another's: {call}({names[held[0]]!r}))"
                )
        src = None if source is None else runtime.placement.index(source)
        gone = src is not None and waited and runtime.source_gone(index, src)
        everyone = (  # (never an awaited receive's: `aio.take`)
            src is None
            and waited
            and call != "areceive"
            and engine.asked_ranks
            and runtime.others_gone(index, 0)
        )
        return ReceiveTimeout(
            names[index],
            timeout or 0.0,
            None if src is None else names[src],
            type_label(type_filter),
            len(queued),
            waited=waited,
            call=call,
            hint=hint,
            closing_rank=engine.rank_of(src) if gone and src is not None else None,
            closing_ranks=ranks_named(engine.ranks_done) if everyone else None,
            topic=_topic_label(topic),
        )

    def _matcher(
        self,
        source: str | int | None,
        type_filter: TypeFilter,
        topic: Topic | Subscription | str | None = None,
    ) -> Match | None:
        # Kept per (source, type), so that a type filter's answers per class are kept too;
        # an unhashable or bad argument is built again (and refused) on each call.
        key = (source.__class__, source, type_filter)
        try:
            rest = self._matchers[key]
        except (KeyError, TypeError):
            index = None if source is None else self._runtime.placement.index(source, "source")
            rest = matcher(index, type_filter)
            if len(self._matchers) < _MATCHERS_MAX:
                self._matchers[key] = rest
        return rest if topic is None else self._channels.topic_match(topic, rest)


def _next_of_run(runtime: Runtime, rank: int, cursor: RunCursor) -> Message | None:
    """`Geode.receive`'s fast path when its queue's first entry is a run: its next message
    (`Engine.take_run`), or None when a plain take would not take it."""
    message = runtime.engine.take_run(rank, cursor)
    if message is not None:
        runtime.receives += 1
        if not runtime.receives & POLL_EVERY_RUN_RECEIVES - 1:
            runtime.engine.poll_after_take()
        if TRACER.on:
            trace_receive(rank, message, "receive")
    return message


def _topic_label(topic: Topic | Subscription | str | None) -> str | None:
    """A receive's topic filter as its `ReceiveTimeout` names it: a topic's name, a pattern."""
    if topic is None or isinstance(topic, str):
        return topic
    return topic.name if isinstance(topic, Topic) else topic.pattern
