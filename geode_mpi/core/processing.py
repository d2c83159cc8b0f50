"""Message processing: handlers by message type, the run loop, replies, quiescence.

`Geode.run` takes each message from the node queues it serves, calls the handler registered
for its type, sends the handler's return value back to the sender as a reply, and acks the
message; a handler that raises an `Exception` makes it a failed delivery (retried, then
dead-lettered; at once if it replied by hand first: a request has one reply). One stopped by
another `BaseException` (Ctrl-C's `KeyboardInterrupt`, `SystemExit`, `CancelledError`) did
not fail: its message goes back to its queue and the exception goes on up, out of run().
A request is always answered: a handler's None is a reply of None (unless the handler replied
itself), and a request dead-lettered here is answered with a `RequestFailed`, which the
requester's `request()` raises as a `HandlerError`.
The loop ends on a count, a predicate, a `Stop` message, a timeout, or, by default, when the
whole job is quiescent: no rank has a message to process and none is in flight.

Quiescence is found by waves of counts down and up a tree of the ranks
(`geode_mpi.core.quiescence`). A message that arrives after this rank answered the wave found
quiet (one sent after another rank's run() returned) is left queued, in order, for receive() or
the next run(): the loop looks at the verdict before it takes anything, and takes nothing while
the outcome of a wave it answered is not known (`Quiescence.holds`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.base.gate import daemons_busy, other_threads
from geode_mpi.base.logger import log
from geode_mpi.codec.classes import class_name
from geode_mpi.codec.header import message_id
from geode_mpi.core.processing_answers import Answers
from geode_mpi.core.processing_serving import Serving
from geode_mpi.core.processing_state import (
    _REQUEST,
    Handler,
    HandlerKey,
    RequestFailed,
    RunSummary,
)
from geode_mpi.core.quiescence import Quiescence
from geode_mpi.core.stop_names import _STOPS, is_stop_name
from geode_mpi.delivery import Acknowledger
from geode_mpi.delivery.authoring import Watch
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.delivery.waiting import IDLE, WORKED, Marker, Wait
from geode_mpi.errors import DecodeError, ThreadError
from geode_mpi.message import ANSWERED, Message
from geode_mpi.queues import Match, Parcel
from geode_mpi.tracing import TRACER, now_us

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime

# (re-exported: their home before the split, and the public API's `Stop` and `RunSummary`)
__all__ = [
    "Handler",
    "HandlerKey",
    "Processor",
    "RequestFailed",
    "RunSummary",
    "Stop",
    "is_stop_name",
]


class Stop(Message):
    """Ends the `Geode.run` loop of the node it is sent to (see `Geode.stop`); a subclass
    of it ends every loop a Stop ends, where a Stop would."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _STOPS[class_name(cls)] = cls


_STOPS[class_name(Stop)] = Stop  # (each subclass enters itself as it is defined)


class Processor(Answers, Serving):
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
        # The last `REPLIED_KEPT` messages replied to by hand, by (source, id): a second
        # reply to one of them (the same message taken again after a nack) raises.
        self.replied_to: dict[tuple[str, int], None] = {}
        # The last `REPLIED_KEPT` requests whose request() (or arequest()) stopped waiting
        # without their reply, by (local node, id): a reply that comes later is late.
        self.given_up: dict[tuple[int, int], None] = {}
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
            error = self.unhandled(index, message)
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
        except BaseException as exc:
            replied = request and id(message) not in self.answering
            acted = watch.count() != 0 or replied
            if self.interrupted(index, parcel, message, exc, acted, summary):
                if not isinstance(exc, Exception):
                    raise  # (Ctrl-C, SystemExit, CancelledError: its message put back)
                return
            if replied:  # a retry's reply would be the request's second: a dead letter now
                self.dead_letter_now(index, parcel, exc, summary)
                log.warning(
                    "%s: dead letter: the handler of request %s from %s replied by hand, "
                    "then raised %s: %s (not retried: a request has one reply)",
                    geode.names[index],
                    message.id,
                    message.source,
                    type(exc).__name__,
                    exc,
                )
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

        def pending() -> bool:
            return any(len(geode.inboxes[i]) for i in served)

        def look() -> str | Marker:
            engine.serve_waiting(served)  # waited-for messages at nodes this loop does not serve
            worked = 0
            if quiescence is not None and quiescence.found():
                return "quiescent"  # (first: what came since this rank's answer is not this run's)
            if quiescence is None or not quiescence.holds(pending):
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
                and not pending()
                and not daemons_busy()  # (an executor's pending task may send)
            )
            if quiescence is not None and quiescence.check(idle):
                return "quiescent"
            if not worked and idle and count is not None and until is None and self.alone():
                # One process and no thread that could send: no message can come any more,
                # so the count cannot be reached (receive() raises at once there).
                return "quiescent"
            return WORKED if worked else IDLE

        try:
            summary.reason = wait.until(look) or "timeout"
        except BaseException:  # (an exception, Ctrl-C: no rank may hold for a wave left out)
            if quiescence is not None:
                with contextlib.suppress(Exception):  # (what ended run() is the error to see)
                    quiescence.leave()
            raise
        if quiescence is not None:
            quiescence.leave()  # (no rank holds for a wave this one leaves out)
        waited = wait.paused
        for index in served:  # the loop served them all while it waited
            engine.stats[index].wait_seconds += waited / len(served)
        engine.flush()
        summary.seconds = time.monotonic() - started
        return summary
