"""The Geode's handlers and run(), request and reply, groups and Stop."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from geode_mpi import codec
from geode_mpi.base.gate import locked
from geode_mpi.core.facade import Facade
from geode_mpi.core.groups import Group
from geode_mpi.core.processing import Handler, HandlerKey, RequestFailed, RunSummary, Stop
from geode_mpi.errors import check_flag, check_timeout, whole
from geode_mpi.message import Message

_NO_REPLY = codec.NO_REPLY
_REQUEST = codec.REQUEST


class Processing(Facade):
    """The Geode's handler calls, run(), request/reply and groups (`Geode` inherits them)."""

    # -- processing ------------------------------------------------------------------------

    def on(self, type: HandlerKey, node: str | int | None = None) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of messages of ``type``.

        ``run()`` calls it with each such message (of that class or a subclass, unless a more
        specific handler exists: the handler of the nearest class in the message's MRO wins,
        whether Geode-wide or for the node; for one class, the node's own beats the Geode-wide
        one). A return value other than None is sent back to the message's source as a reply;
        a request (`request`) gets one in any case, None too, unless the handler called
        `reply` itself. A handler that raises fails the delivery: the message is delivered
        again after a back-off, then goes to the dead letters (and a request's requester gets
        a `HandlerError`).

        Args:
            type: a Message subclass, or a class name.
            node: only for this node (default: every node this rank hosts).
        """
        index = None if node is None else self._runtime.placement.index(node)

        def register_handler(handler: Handler) -> Handler:
            self._gate.call(self._processor.add, type, index, handler)
            return handler

        return register_handler

    def run(
        self,
        node: str | int | None = None,
        *,
        count: int | None = None,
        until: Callable[[], bool] | None = None,
        timeout: float | None = None,
        quiescent: bool | None = None,
    ) -> RunSummary:
        """Process messages with the registered handlers until told to stop.

        It ends after ``count`` messages, when ``until()`` returns True, when a `Stop` message
        arrives (`stop`), after ``timeout`` seconds, or (``quiescent``, the default when neither
        count nor until is given) when the whole job is quiescent: no node that the ranks'
        run() calls serve has a message to process and none is in flight (a node a rank's
        ``run(node)`` leaves out keeps what is queued for it, even with a handler). Waiting for
        quiescence is collective: every rank calls run(), and in rounds with a ``timeout``,
        synchronises after each (docs/delivery.md: otherwise the calls can pair off by one
        across ranks). In a one-process world with no other thread, a ``count`` that cannot
        be reached ends it as soon as nothing is left to process (reason "quiescent"), since
        nothing can arrive any more (``receive()`` raises at once there).

        A handler that raises an `Exception` is a failed processing (retried, then
        dead-lettered). One stopped by another `BaseException` (Ctrl-C's `KeyboardInterrupt`,
        `SystemExit`, `asyncio.CancelledError`) did not fail: unless it had sent or replied,
        its message goes back to its queue untried, for the next run() to process once, and
        the exception goes on up out of run(), unchanged.

        Args:
            node: serve only this local node (default: every node this rank hosts).
            count: stop after this many messages (handled or failed): an int >= 1.
            until: stop once this returns True (checked after each round).
            timeout: stop after this many seconds.
            quiescent: stop when the job is quiescent.

        Returns:
            A RunSummary: messages processed, failures, replies, dead letters, why it ended.

        Raises:
            TypeError: ``count`` is not an int, ``until`` not callable, ``quiescent`` not a
                bool.
            ValueError: ``count`` is less than 1, or ``timeout`` is negative.
            ThreadError: another thread is inside run().
        """
        if count is not None:
            counted = whole(count)  # an int, or a numpy integer
            if counted is None:
                raise TypeError(f"count must be an int >= 1 or None, got {count!r}")
            count = counted
            if count < 1:
                raise ValueError(f"count must be >= 1 (None: no limit), got {count}")
        if until is not None and not callable(until):
            raise TypeError(
                f"until must be a function of no arguments returning True to stop, or None, "
                f"got {until!r}"
            )
        if quiescent is not None:
            quiescent = check_flag(quiescent, "quiescent")
        self._processor.check_runner()  # at once, not after waiting for the lock
        return self._runtime.serialised(self._run, node, count, until, timeout, quiescent)

    def _run(
        self,
        node: str | int | None,
        count: int | None,
        until: Callable[[], bool] | None,
        timeout: float | None,
        quiescent: bool | None,
    ) -> RunSummary:
        self._runtime.check_open("run")
        served = (
            list(self._runtime.local) if node is None else [self._runtime.local_index(node, "run")]
        )
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if quiescent is None:
            quiescent = count is None and until is None
        return self._processor.run(served, count, until, deadline, quiescent)

    @locked
    def reply(self, request: Message, value: Any, *, timeout: float | None = None) -> None:
        """Send ``value`` back to the sender of a received ``request`` as its reply.

        Raises:
            ValueError: ``request`` is not a received message, or it is a `request()`'s
                message that its handler answered already (a request has one reply: the
                handler's return value, a Message of None if it returned None, or one
                `reply` made inside the handler).
        """
        if not isinstance(request, Message):
            raise TypeError(
                f"reply() needs the request it answers (a received Message), got {request!r}"
            )
        if self._processor.replied_before(request):
            raise ValueError(
                f"message {request.id} from {request.source} was answered already on "
                f"{request.dest}, by its handler or by a reply() (a message has one reply: a "
                "request()'s handler returning None answers with a Message of None; to "
                "answer later, take the request with receive() instead of a handler)"
            )
        self._runtime.reply(request, value, timeout, False)
        self._processor.replied(request)

    @locked
    def request(
        self,
        message: Any,
        dest: str | int,
        *,
        source: str | int | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Send ``message`` to ``dest`` and return its reply: what dest's handler returned, of
        the type it returned (a Message subclass instance arrives as that class); a handler
        that returns None (and does not call `reply` itself) answers with a Message of None.
        A handler that fails for good (it raised on every attempt, or dest has none for the
        request's type in its run loop) answers with the failure: this raises `HandlerError`
        as soon as the request goes to dest's dead letters.

        The handler runs on the rank that hosts ``dest``, whatever that rank is doing in
        geode_mpi: a rank waiting in any call (a request of its own, receive, a send with
        ``ack=True``, a work queue's ``get``, ``close``, a run loop) serves the requests sent
        to its nodes that have a handler for them. So every rank may request from another at
        once (a ring, all to all), and a node may request from itself. While waiting, this
        rank's other nodes also keep processing with their handlers (the embedded world
        answers requests between its nodes that way).

        Args:
            message: a Message, or any picklable value (wrapped in a Message).
            dest: the node whose handler answers.
            source: the requesting node (default: this rank's node); this rank must host
                it, since the reply arrives there.
            timeout: seconds to wait for the reply (None: no limit).

        Raises:
            ReceiveTimeout: no reply within ``timeout`` seconds.
            HandlerError: dest's handler failed for good (its type, text and attempts).
            NotProcessed: dest will not process the request, so no reply comes: its rank is
                in close() and dest has no handler for it (``why`` "closing"), or its full
                ``drop_oldest`` queue dropped it.
            NodeNotLocalError: another rank hosts ``source`` (guard the call with
                ``geode.hosts(source)``, or leave ``source`` out).
        """
        timeout = check_timeout(timeout)
        self._runtime.check_sending("request")  # (not the isend it goes through: named here)
        deadline = None if timeout is None else time.monotonic() + timeout
        src = self._runtime.local_index(source, "request")
        # Sent as waited for: its node's rank serves it in whatever wait it is in.
        handle = self._runtime.send(message, src, dest, True, timeout, _REQUEST, 0, False)
        wanted = handle.id
        assert wanted is not None, "a request's source is local: this rank sent it"
        dst = self._runtime.placement.index(handle.dest)

        def refused() -> bool:  # dest said it will not process the request: no reply comes
            return handle.lost is not None

        found = self._processor.await_reply(src, dst, wanted, deadline, refused)
        if found is not None:
            reply = self._runtime.deliver(src, found)
            if isinstance(reply, RequestFailed):
                raise reply.error()
            return reply
        handle.check_processed()  # refused: dest's rank is closing, or it was dropped
        raise self._no_reply(handle, timeout, self._transport.delivers_later)

    def group(self, members: Sequence[str | int], *, sequencer: str | int | None = None) -> Group:
        """A group of nodes that see the messages sent to it in one total order.

        Every message sent with ``group.send()`` goes through the ``sequencer`` node (default:
        the first member), which forwards it to every member; all members, the sender too if
        it is one, receive the group's messages in the same order. The cost: one extra hop,
        and the sequencer's work per message and member. Creating a group involves no
        communication: create it the same way wherever it is used.

        Raises:
            TypeError: ``members`` is not a list of nodes (a single name is refused).
            UnknownNodeError: a member or the sequencer is not a node of this job.
            ValueError: no members, or the same member twice.
        """
        indices = self._runtime.placement.indices(members, "members", "member")
        if not indices:
            raise ValueError("a group needs at least one member")
        if len(set(indices)) != len(indices):
            raise ValueError(f"group members must be distinct, got {list(members)!r}")
        chosen = (
            indices[0]
            if sequencer is None
            else self._runtime.placement.index(sequencer, "sequencer")
        )
        name = "+".join(self._runtime.names[index] for index in indices)
        return Group(self._runtime, name, indices, chosen)

    @locked
    def stop(self, node: str | int, *, source: str | int | None = None) -> None:
        """Send a `Stop` message: ``node``'s run() loop ends when it gets there (in order
        after what ``source`` sent it before).

        Raises:
            TypeError: ``node`` is None (the node whose loop ends must be named).
            UnknownNodeError: ``node`` or ``source`` is not a node of this job.
        """
        if node is None:
            raise TypeError("stop() needs the node whose run() loop ends, got None")
        self._runtime.send(Stop(), source, node, False, None, _NO_REPLY, 0, False)
