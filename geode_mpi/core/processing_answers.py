"""The answers of `Processor` besides a handler's reply: a handler interrupted by close(), a
reply by hand, and the refusals (a dead-lettered or undecodable request, a waited-for message
a closing rank will not process)."""

from __future__ import annotations

import threading

from geode_mpi import codec
from geode_mpi.base.logger import log
from geode_mpi.codec.header import message_id
from geode_mpi.core.processing_state import (
    _REQUEST,
    _WAITED,
    ProcessorState,
    RequestFailed,
    RunSummary,
)
from geode_mpi.delivery.control import CLOSED
from geode_mpi.errors import ClosedError, DecodeError
from geode_mpi.message import ANSWERED, Message
from geode_mpi.queues import Parcel

# How many messages replied to by hand a Geode remembers, to refuse a second reply to one.
REPLIED_KEPT = 65_536


class Answers(ProcessorState):
    """`Processor`'s answers other than a handler's reply (a part of it, through ``self``)."""

    def interrupted(
        self,
        index: int,
        parcel: Parcel,
        message: Message,
        error: BaseException,
        acted: bool,
        summary: RunSummary,
    ) -> bool:
        """Whether the handler was stopped rather than failed, and if so, deal with its
        message: ``error`` is a close() in another thread interrupting it (a `ClosedError`
        once close() began there), or a `BaseException` that is not an `Exception` (Ctrl-C's
        `KeyboardInterrupt`, `SystemExit`, asyncio's `CancelledError`: the caller raises it
        again, out of `run` or the wait that called the handler).

        If the handler did nothing another node can see (``acted`` False: its thread authored
        no message in it, as any node, no send, publish nor reply, and it did not reply by
        hand), the message goes back to the front of node ``index``'s queue, not counted as a
        failure nor as an attempt (the handler did nothing wrong): a later `run` (or a
        receive) takes it; after close() it is reported as never received if nothing took it
        (a request, or a send with ``ack=True``: handled again by that close() while it still
        serves the other ranks). If it did (``acted``), handling it again would do that twice:
        it is a failed processing, dead-lettered at once (no retry), its requester answered
        with the failure (`HandlerError`) unless the handler replied, a sender with
        ``ack=True`` told it was not processed. A warning says which."""
        engine = self.geode.engine
        closer = engine.closer
        if isinstance(error, Exception) and (
            not isinstance(error, ClosedError) or closer in (None, threading.current_thread())
        ):
            return False
        node = self.geode.names[index]
        if acted:
            self.dead_letter_now(index, parcel, error, summary)
            if parcel.reply_to == _REQUEST and id(message) in self.answering:
                self.refuse(index, parcel, message_id(parcel.meta), message.type, error)
            outcome = "after it sent, published or replied: a dead letter, not handled again"
        else:
            engine.put_back(index, parcel)
            if parcel.flags & _WAITED:  # its sender waits: the next wait (or close()) serves it
                engine.waited.add(index)
            outcome = (
                f"before it sent, published or replied: not a failure; the message is back in "
                f"{node}'s queue, not processed (a later run() or receive() takes it; after "
                "close(), reported as never received)"
            )
        by = (
            f"close() in thread {closer.name!r} ({error})"
            if closer is not None and isinstance(error, ClosedError)
            else f"{type(error).__name__}{f' ({error})' if str(error) else ''}"
        )
        log.warning(
            "%s: the handler of message %s (%s) from %s was interrupted by %s %s",
            node,
            message.id,
            message.type,
            message.source,
            by,
            outcome,
        )
        return True

    def dead_letter_now(
        self, index: int, parcel: Parcel, error: BaseException, summary: RunSummary
    ) -> None:
        """A taken message of node ``index`` that must not be handled again: a failed
        processing, dead-lettered at once, whatever attempts are left."""
        engine = self.geode.engine
        engine.in_hand -= 1
        engine.dead_letter(index, parcel, error, parcel.attempts + 1)
        summary.failed += 1
        summary.dead_letters += 1

    def replied(self, request: Message) -> None:
        """``request`` was answered by hand (`Geode.reply`): if it is a request its handler
        is handling, its handler's None is no reply; a second reply to it raises
        (`replied_before`), also to the same message taken again (after a nack)."""
        self.answering.discard(id(request))
        request.__dict__[ANSWERED] = True
        kept = self.replied_to
        kept[request.source, request.id] = None  # type: ignore[index]
        if len(kept) > REPLIED_KEPT:
            del kept[next(iter(kept))]

    def gave_up(self, src: int, request_id: int) -> None:
        """A request of local node ``src`` stopped waiting without its reply (timed out,
        cancelled or refused): a reply that comes after is late (`unhandled`)."""
        kept = self.given_up
        kept[src, request_id] = None
        if len(kept) > REPLIED_KEPT:
            del kept[next(iter(kept))]

    def unhandled(self, index: int, message: Message) -> Exception:
        """Why run() dead-letters ``message``, which no handler of node ``index`` takes: a
        reply that no request() waits for is said to be one (a handler would not help)."""
        node = self.geode.names[index]
        asked = message.reply_to
        if asked is None:
            return LookupError(
                f"no handler for {message.type} on {node}: register one with "
                f"@geode.on({message.type})"
            )
        if (index, asked) in self.given_up:
            del self.given_up[index, asked]
            return TimeoutError(
                f"late reply from {message.source} to request {asked} of {node}: its "
                "request() had stopped waiting (timed out, interrupted or cancelled); a "
                f"receive() at {node} before run() takes such a reply (reply_to={asked})"
            )
        return LookupError(
            f"reply from {message.source} to message {asked} of {node}, which no request() "
            f"waits for; a receive() at {node} before run() takes such a reply "
            f"(reply_to={asked})"
        )

    def replied_before(self, request: Message) -> bool:
        """Whether ``request`` was answered already: by its handler, or by hand."""
        return bool(request.__dict__.get(ANSWERED)) or (
            (request.source, request.id) in self.replied_to
        )

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
