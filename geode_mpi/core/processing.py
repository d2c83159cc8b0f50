"""Message processing: handlers by message type, the run loop, replies, quiescence.

`Geode.run` takes each message from the node queues it serves, calls the handler registered
for its type, sends the handler's return value back to the sender as a reply, and acks the
message; a handler that raises makes it a failed delivery (retried, then dead-lettered).
A request is always answered: a handler's None is a reply of None (unless the handler replied
itself), and a request dead-lettered here is answered with a `RequestFailed`, which the
requester's `request()` raises as a `HandlerError`.
The loop ends on a count, a predicate, a `Stop` message, a timeout, or, by default, when the
whole job is quiescent: no rank has a message to process and none is in flight.

Quiescence is found by waves of counts down and up a tree of the ranks
(`geode_mpi.core.quiescence`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.base.gate import daemons_busy, other_threads, senders_may_run
from geode_mpi.base.logger import log
from geode_mpi.base.record import Record
from geode_mpi.codec.classes import class_name
from geode_mpi.codec.header import message_id
from geode_mpi.core.quiescence import Quiescence
from geode_mpi.delivery import Acknowledger
from geode_mpi.delivery.authoring import Watch
from geode_mpi.delivery.control import CLOSED
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.delivery.waiting import IDLE, WORKED, Marker, Wait
from geode_mpi.errors import ClosedError, DecodeError, HandlerError, ThreadError
from geode_mpi.message import ANSWERED, Message
from geode_mpi.queues import Match, Parcel
from geode_mpi.tracing import TRACER, now_us

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime

Handler = Callable[[Message], Any]
_WAITED = codec.FLAG_WAITED
_REQUEST = codec.REQUEST
HandlerKey = type[Message] | str


class Stop(Message):
    """Ends the `Geode.run` loop of the node it is sent to (see `Geode.stop`); a subclass
    of it ends every loop a Stop ends, where a Stop would."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _STOPS[class_name(cls)] = cls


# Wire class name -> the Stop class (a subclass too) defined under it in this process, for a
# filtered `messages()` loop's test of each queued message's name (`is_stop_name`): a dict
# lookup, no decode, never an import. A Stop subclass registers itself as it is defined.
_STOPS: dict[str, type[Message]] = {class_name(Stop): Stop}


def is_stop_name(wire_name: str) -> bool:
    """Whether a message of the class of wire name ``wire_name`` is a `Stop` (a subclass
    too): a name no Stop class defined in this process has is no Stop (nothing is imported to
    tell: a Stop subclass not defined here could not be built here either). A name whose
    module now defines another class under it (a later job's ``__main__``) is no Stop."""
    cls = _STOPS.get(wire_name)
    if cls is None:
        return False
    now = _defined(wire_name)
    return now is None or now is cls


def _defined(wire_name: str) -> object | None:
    """What ``module:qualname`` names in the modules imported now (None: nothing found,
    e.g. a class defined inside a function), without importing anything."""
    module, _, qualname = wire_name.partition(":")
    found: object | None = sys.modules.get(module)
    for part in qualname.split("."):
        if found is None:
            return None
        found = getattr(found, part, None)
    return found


class RequestFailed(Message):
    """The answer to a request that went to the dead letters where it was handled: its data
    is what `HandlerError` says (a dict of its arguments); `request()` raises that error."""

    def error(self) -> HandlerError:
        return HandlerError(**self.data)


class RunSummary(Record):
    """What one `Geode.run` call did.

    Attributes:
        processed: messages handled successfully.
        failed: handler calls that raised (each is retried or dead-lettered).
        replies: handler results sent back as replies.
        dead_letters: messages that went to the dead letters during this run.
        reason: why it ended: "quiescent", "stopped", "count", "until" or "timeout".
        seconds: how long it ran.
    """

    __match_args__ = ("processed", "failed", "replies", "dead_letters", "reason", "seconds")

    def __init__(
        self,
        processed: int = 0,
        failed: int = 0,
        replies: int = 0,
        dead_letters: int = 0,
        reason: str = "",
        seconds: float = 0.0,
    ) -> None:
        self.processed = processed
        self.failed = failed
        self.replies = replies
        self.dead_letters = dead_letters
        self.reason = reason
        self.seconds = seconds


class Processor:
    """The handlers of one Geode, and its run loop."""

    def __init__(self, geode: Runtime) -> None:
        self.geode = geode
        self.handlers: dict[int | None, dict[HandlerKey, Handler]] = {}
        self.stopped: set[int] = set()
        # Made now, not at the first run(): a wave may reach this rank before it calls run()
        # (it answers once it does).
        self.quiescence: Quiescence | None = Quiescence(geode)
        self.served = RunSummary()  # what serve_waited did, over this Geode's life
        geode.engine.on_waited = self.serve_waited
        geode.served = self
        self.runner: threading.Thread | None = None  # the thread inside run(), if any
        # Ids of the requests a request() waits for in some thread: run() leaves their
        # replies in the queue for it.
        self.awaited: set[int] = set()
        self._not_awaited: Match = lambda parcel: parcel.reply_to not in self.awaited
        # The requests (by object: ids repeat across sources) whose handler runs and has not
        # replied by hand (`replied`): the handler's return value answers them, None too.
        self.answering: set[int] = set()
        # Set once this rank is in close() (`Geode.close`): a waited-for message that no
        # handler here takes is told not processed (`refuse_closing`), once each (by node,
        # source and seq).
        self.closing = False
        self._told_closing: set[tuple[int, int, int]] = set()
        # Local node index -> messages of it inside a handler now (close() reports them
        # apart from those taken with an explicit ack and never acked).
        self.handling: dict[int, int] = {}

    # -- handlers --------------------------------------------------------------------------

    def add(self, key: HandlerKey, node: int | None, handler: Handler) -> None:
        if not (isinstance(key, str) or (isinstance(key, type) and issubclass(key, Message))):
            raise TypeError(f"on() takes a Message subclass or a class name, got {key!r}")
        if not callable(handler):
            raise TypeError(f"a handler must be callable, got {handler!r}")
        self.handlers.setdefault(node, {})[key] = handler

    def find(self, index: int, cls: type[Message]) -> Handler | None:
        """The handler for a message of class ``cls`` on node ``index``: the most specific
        class wins (a Geode-wide handler for ``cls`` beats node ``index``'s own for a base
        class of it); for one class, the node's own handler beats the Geode-wide one."""
        own = self.handlers.get(index)
        shared = self.handlers.get(None)
        for klass in cls.__mro__:
            for table in (own, shared):
                if table:
                    found = table.get(klass) or table.get(klass.__name__)
                    if found is not None:
                        return found
        return None

    def handles(self, index: int, parcel: Parcel) -> bool:
        """True if node ``index`` has a handler for the parcel's class (found by its name)."""
        try:
            cls = codec.resolve(codec.peek(parcel.meta).class_name)
        except DecodeError:
            return False
        return self.find(index, cls) is not None

    # -- processing one message ------------------------------------------------------------

    def process(
        self, index: int, parcel: Parcel, receipt: Acknowledger, summary: RunSummary
    ) -> None:
        """Decode, handle, reply and ack one taken message (or nack / dead-letter it)."""
        geode = self.geode
        engine = geode.engine
        try:
            message = geode.decode(parcel, index)
        except DecodeError as exc:
            engine.in_hand -= 1
            engine.dead_letter(index, parcel, exc, parcel.attempts + 1)
            summary.dead_letters += 1
            log.warning("%s: dead letter (cannot decode): %s", geode.names[index], exc)
            geode.undecodable(index, parcel, exc)
            return
        if isinstance(message, Stop):
            receipt.ack()
            self.stopped.add(index)
            return
        handler = self.find(index, type(message))
        if handler is None:
            error = LookupError(
                f"no handler for {message.type} on {geode.names[index]}: register one with "
                f"@geode.on({message.type})"
            )
            engine.in_hand -= 1
            engine.dead_letter(index, parcel, error, parcel.attempts + 1)
            summary.dead_letters += 1
            log.warning("%s: dead letter: %s", geode.names[index], error)
            if parcel.reply_to == _REQUEST:
                self.refuse(index, parcel, message_id(parcel.meta), message.type, error)
            return
        dead_before = engine.stats[index].dead_letters
        begun = now_us() if TRACER.on else 0.0
        request = parcel.reply_to == _REQUEST
        mid = -1  # a request's id
        if request:
            mid = message_id(parcel.meta)
            self.answering.add(id(message))
        handling = self.handling
        handling[index] = handling.get(index, 0) + 1
        # What the handler's thread sends, publishes or replies meanwhile, as any node: a
        # second call would do it again (`interrupted`).
        watch = Watch()
        try:
            # Without the lock while other threads exist: they may use the Geode meanwhile.
            result = geode.gate.unlocked(handler, message) if other_threads() else handler(message)
            by_hand = request and id(message) not in self.answering
            if not by_hand and (request or result is not None):
                geode.reply(message, result, None, True)
                summary.replies += 1
                if request:
                    message.__dict__[ANSWERED] = True  # (a later reply by hand raises)
            elif by_hand and result is not None:
                log.warning(
                    "%s: the handler of request %s from %s replied by hand and returned a "
                    "value too: only the first reply is sent (a request has one reply)",
                    geode.names[index],
                    message.id,
                    message.source,
                )
        except Exception as exc:
            acted = watch.count() != 0 or (request and id(message) not in self.answering)
            if self.interrupted(index, parcel, message, exc, acted, summary):
                return
            summary.failed += 1
            receipt.nack(exc)
            if begun:
                trace_receive(index, message, f"handle {message.type} (failed)", begun)
            if engine.stats[index].dead_letters > dead_before:
                summary.dead_letters += 1
                log.warning(
                    "%s: dead letter after %d attempt(s): message %s from %s: %s: %s",
                    geode.names[index],
                    parcel.attempts + 1,
                    message.id,
                    message.source,
                    type(exc).__name__,
                    exc,
                )
                if request and id(message) in self.answering:  # (not if it replied by hand)
                    self.refuse(index, parcel, mid, message.type, exc)
            return
        finally:
            watch.end()
            handling[index] -= 1
            if request:
                self.answering.discard(id(message))
        receipt.ack()
        summary.processed += 1
        if begun:
            trace_receive(index, message, f"handle {message.type}", begun)

    def interrupted(
        self,
        index: int,
        parcel: Parcel,
        message: Message,
        error: Exception,
        acted: bool,
        summary: RunSummary,
    ) -> bool:
        """Whether the handler's ``error`` is a close() in another thread interrupting it (a
        `ClosedError` once close() began there), and if so, deal with its message.

        If the handler did nothing another node can see (``acted`` False: its thread authored
        no message in it, as any node, no send, publish nor reply, and it did not reply by
        hand), the message goes back to node ``index``'s queue, not counted as a failure nor
        as an attempt (the handler did nothing wrong), receivable after close() and reported as
        never received at the end if nothing takes it (a request, or a send with
        ``ack=True``: handled again by that close() while it still serves the other ranks).
        If it did (``acted``), handling it again would do that twice: it is a failed
        processing, dead-lettered at once (no retry, which close() would serve), its
        requester answered with the failure (`HandlerError`) unless the handler replied,
        a sender with ``ack=True`` told it was not processed. A warning says which."""
        engine = self.geode.engine
        closer = engine.closer
        if not isinstance(error, ClosedError) or closer in (None, threading.current_thread()):
            return False
        node = self.geode.names[index]
        if acted:
            engine.in_hand -= 1
            engine.dead_letter(index, parcel, error, parcel.attempts + 1)
            summary.failed += 1
            summary.dead_letters += 1
            if parcel.reply_to == _REQUEST and id(message) in self.answering:
                self.refuse(index, parcel, message_id(parcel.meta), message.type, error)
            outcome = "after it sent, published or replied: a dead letter, not handled again"
        else:
            engine.put_back(index, parcel)
            if parcel.flags & _WAITED:  # its sender waits: a close() still serving handles it
                engine.waited.add(index)
            outcome = (
                f"before it sent, published or replied: not a failure; the message is back in "
                f"{node}'s queue, not processed (receivable after close(), else reported as "
                "never received)"
            )
        log.warning(
            "%s: the handler of message %s (%s) from %s was interrupted by close() in thread "
            "%r (%s) %s",
            node,
            message.id,
            message.type,
            message.source,
            closer.name,
            error,
            outcome,
        )
        return True

    def replied(self, request: Message) -> None:
        """``request`` was answered by hand (`Geode.reply`): if it is a request its handler
        is handling, its handler's None is no reply, and a second reply raises."""
        if id(request) in self.answering:
            self.answering.discard(id(request))
            request.__dict__[ANSWERED] = True

    def refuse_undecodable(self, index: int, parcel: Parcel, error: BaseException) -> None:
        """`refuse` a request that node ``index`` took and could not decode (by `run`, a
        take or a wait), named by its class as sent."""
        try:
            type_name = codec.peek(parcel.meta).class_name
        except DecodeError:
            type_name = "a message"
        self.refuse(index, parcel, message_id(parcel.meta), type_name, error)

    def refuse(
        self,
        index: int,
        parcel: Parcel,
        mid: int,
        type_name: str,
        error: BaseException,
    ) -> None:
        """Answer a request that node ``index`` dead-lettered with a `RequestFailed`, so that
        its requester raises `HandlerError` instead of waiting for a reply that cannot come."""
        geode = self.geode
        node = geode.names[index]
        failure = RequestFailed(
            {
                "node": node,
                "request_id": mid,
                "type_name": type_name,
                "error_type": type(error).__name__,
                "error": str(error),
                "attempts": parcel.attempts + 1,
            }
        )
        try:
            geode.send(failure, index, parcel.source, False, None, mid, 0, False)
        except Exception as exc:  # (closing, say): the dead letter and its warning stay
            log.warning("%s: could not tell the requester of %s: %s", node, mid, exc)

    def step(
        self,
        served: list[int],
        summary: RunSummary,
        limit: int | None = None,
        handled_only: bool = False,
    ) -> int:
        """Process at most one message per served node (and at most ``limit``); the count.
        With ``handled_only``, only messages that have a handler (the others stay queued)."""
        engine = self.geode.engine
        done = 0
        for index in served:
            if index in self.stopped or (limit is not None and done >= limit):
                continue
            match = self._not_awaited if self.awaited else None
            if handled_only:

                def match(parcel: Parcel, index: int = index) -> bool:
                    return self.handles(index, parcel) and (parcel.reply_to not in self.awaited)

            found = engine.take(index, match, None, True)
            if found is None:
                continue
            parcel, receipt = found
            assert receipt is not None
            self.process(index, parcel, receipt, summary)
            done += 1
        return done

    def serve_waited(self) -> None:
        """Process the queued messages whose sender waits for their processing (requests,
        sends with ``ack=True``) at the local nodes where they arrived, when those nodes have
        a handler for them, and before each the older messages of its source that a handler
        takes (per-source FIFO). Every wait of this rank calls it, so a request is answered
        wherever its node's rank waits; other messages wait for `run` or `receive`."""
        engine = self.geode.engine
        waited = engine.waited
        later: set[int] = set()
        while waited:
            index = waited.pop()
            if self.closing:
                self.refuse_closing(index)
            if not self.has_handlers(index):
                continue
            inbox = self.geode.inboxes[index]

            def owes(parcel: Parcel, index: int = index) -> bool:
                """Its sender waits for its processing, and a handler here takes it."""
                return bool(parcel.flags & _WAITED) and self.handles(index, parcel)

            owed: dict[int, int] = {}  # source -> waited-for messages of it, with a handler
            for parcel in filter(owes, inbox):
                owed[parcel.source] = owed.get(parcel.source, 0) + 1

            def servable(parcel: Parcel, index: int = index, owed: dict[int, int] = owed) -> bool:
                return parcel.source in owed and self.handles(index, parcel)

            while owed and (found := engine.take(index, servable, None, True)) is not None:
                parcel, receipt = found
                assert receipt is not None
                if parcel.flags & _WAITED:
                    left = owed.pop(parcel.source) - 1
                    if left:
                        owed[parcel.source] = left
                self.process(index, parcel, receipt, self.served)
            if inbox.next_ready() is not None and any(map(owes, inbox)):
                later.add(index)  # a failed one waits out its retry's back-off
        waited |= later

    def refuse_closing(self, index: int) -> None:
        """This rank is in close(): tell the sender of each waited-for message (ack=True, a
        request) in local node ``index``'s queue that no handler here takes that it will not
        be processed (its wait raises `NotProcessed`, why "closing", instead of waiting for
        an ack or a reply that cannot come). The message stays queued, as what a closing
        node holds does."""
        engine = self.geode.engine
        told = self._told_closing
        for parcel in self.geode.inboxes[index]:
            if parcel.flags & _WAITED and not self.handles(index, parcel):
                key = (index, parcel.source, parcel.seq)
                if key not in told:
                    told.add(key)
                    engine.tell_lost(index, parcel, CLOSED, batch=False)

    def pump(self, nodes: list[int], done: Callable[[], bool]) -> bool:
        """Process messages of these local nodes, where they have handlers, until ``done()``
        or none is left (a wait in one process that only local processing can end)."""
        geode = self.geode
        served = [index for index in nodes if self.has_handlers(index)]
        summary = RunSummary()
        while not done() and geode.engine.closer is None:  # (closing: the caller's wait ends)
            geode.engine.poll()
            if not served or not self.step(served, summary, handled_only=True):
                break
        return done()

    def await_reply(
        self,
        src: int,
        dst: int,
        wanted: int,
        deadline: float | None,
        refused: Callable[[], bool] = lambda: False,
    ) -> tuple[Parcel, Acknowledger | None] | None:
        """Take the reply from ``dst`` to message ``wanted`` out of local node ``src``'s queue,
        waiting for it until ``deadline`` (`time.monotonic`; None: no limit) while this rank's
        other nodes keep processing with their handlers; None if it did not come, or once
        ``refused()`` (dst said it will not process the request: no reply comes)."""
        geode = self.geode
        engine = geode.engine

        def is_reply(parcel: Parcel) -> bool:
            return parcel.reply_to == wanted and parcel.source == dst

        others = [index for index in geode.local if index != src]
        self.awaited.add(wanted)  # before anything lets another thread in
        summary = RunSummary()

        def look() -> tuple[Parcel, Acknowledger | None] | Marker | None:
            found = engine.take(src, is_reply, None, False)
            if found is not None:
                return found
            if engine.waited:  # requests to this rank's nodes, its own among them
                self.serve_waited()
                found = engine.take(src, is_reply, None, False)
                if found is not None:
                    return found
            if refused():
                return None
            worked = self.step(others, summary, handled_only=True) if others else 0
            return WORKED if worked else IDLE

        started = time.perf_counter()
        try:
            wait = Wait(engine, deadline, started, poll=True, call="request")
            return wait.until(look, self.alone)
        finally:
            self.awaited.discard(wanted)
            geode.waited(src, started, "wait: request")

    def alone(self) -> bool:
        """Nothing can arrive any more: one process, no other thread that could send, and
        no request here waiting out its retry's back-off (in ``engine.waited``)."""
        engine = self.geode.engine
        return not (engine.transport.delivers_later or senders_may_run() or engine.waited)

    def has_handlers(self, index: int) -> bool:
        return bool(self.handlers.get(index) or self.handlers.get(None))

    # -- the loop --------------------------------------------------------------------------

    def run(
        self,
        served: list[int],
        count: int | None,
        until: Callable[[], bool] | None,
        deadline: float | None,
        quiescent: bool,
    ) -> RunSummary:
        me = self.check_runner()
        outer, self.runner = self.runner, me
        try:
            return self._run(served, count, until, deadline, quiescent)
        finally:
            self.runner = outer

    def check_runner(self) -> threading.Thread:
        """The calling thread, if it may enter run() (no other thread is inside it).

        Raises:
            ThreadError: another thread is inside run().
        """
        me = threading.current_thread()
        runner = self.runner
        if runner is not None and runner is not me:
            raise ThreadError(
                f"run() was called in thread {me.name!r} while thread {runner.name!r} is "
                "inside run(): one run loop per Geode at a time (its handlers may call any "
                "other method, and other threads may send and receive meanwhile)"
            )
        return me

    def _run(
        self,
        served: list[int],
        count: int | None,
        until: Callable[[], bool] | None,
        deadline: float | None,
        quiescent: bool,
    ) -> RunSummary:
        geode = self.geode
        engine = geode.engine
        summary = RunSummary()
        started = time.monotonic()
        self.stopped.difference_update(served)
        if quiescent:
            if self.quiescence is None:
                self.quiescence = Quiescence(geode)
            self.quiescence.reset()
        quiescence = self.quiescence if quiescent else None
        wait = Wait(engine, deadline, poll=True, leave=served, serving=True, call="run")

        def look() -> str | Marker:
            engine.serve_waiting(served)  # waited-for messages at nodes this loop does not serve
            left = None if count is None else count - summary.processed - summary.failed
            worked = self.step(served, summary, left)
            if any(index in self.stopped for index in served):
                return "stopped"
            if count is not None and summary.processed + summary.failed >= count:
                return "count"
            if until is not None and until():
                return "until"
            idle = (
                not engine.in_hand
                and not engine.forwards
                and not any(len(geode.inboxes[i]) for i in served)
                and not daemons_busy()  # (an executor's pending task may send)
            )
            if quiescence is not None and quiescence.check(idle):
                return "quiescent"
            if not worked and idle and count is not None and until is None and self.alone():
                # One process and no thread that could send: no message can come any more,
                # so the count cannot be reached (receive() raises at once there).
                return "quiescent"
            return WORKED if worked else IDLE

        summary.reason = wait.until(look) or "timeout"
        waited = wait.paused
        for index in served:  # the loop served them all while it waited
            engine.stats[index].wait_seconds += waited / len(served)
        engine.flush()
        summary.seconds = time.monotonic() - started
        return summary
