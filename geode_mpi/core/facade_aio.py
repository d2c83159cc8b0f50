"""The Geode's asyncio calls: areceive, messages, asend, arequest (docs/asyncio.md)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from geode_mpi import codec
from geode_mpi.codec.compression import Compression, setting
from geode_mpi.core import aio
from geode_mpi.core.facade import Facade
from geode_mpi.core.filters import TypeFilter, order_key
from geode_mpi.core.handles import SendHandle
from geode_mpi.core.processing import RequestFailed, Stop, is_stop_name
from geode_mpi.core.runtime import FIRST_SPIN, Runtime
from geode_mpi.core.topics import Topic
from geode_mpi.errors import SendTimeout, check_timeout
from geode_mpi.message import Message
from geode_mpi.queues import Match, Parcel

_NO_REPLY = codec.NO_REPLY
_REQUEST = codec.REQUEST


class Asyncio(Facade):
    """The Geode's asyncio calls (`Geode` inherits them)."""

    # -- asyncio (docs/asyncio.md) ---------------------------------------------------------

    async def areceive(
        self,
        node: str | int | None = None,
        *,
        source: str | int | None = None,
        type: TypeFilter = None,
        timeout: float | None = None,
        order: str | None = None,
        topic: Topic | str | None = None,
    ) -> Message:
        """`receive` for asyncio: the event loop keeps running while it waits.

        Arguments as for `receive`. One poller per event loop drives MPI progress for every
        coroutine that awaits (never a blocking call, no spinning while idle). Cancelling the
        awaiting task (``asyncio.wait_for``, ``task.cancel()``) takes nothing from the queue.
        In one process it waits for other coroutines to send (it ends only at ``timeout``).

        Raises:
            ReceiveTimeout: nothing matching arrived in time (also a TimeoutError).
            ClosedError: the Geode is closed (now, or while waiting: then naming the closing
                thread, as for `receive`) and nothing matching is queued.
            NodeNotLocalError, UnknownNodeError, DecodeError: as for `receive`.
        """
        runtime = self._runtime
        index = runtime.local_index(node, "areceive")
        timeout = check_timeout(timeout)
        unfiltered = source is None and type is None and topic is None
        match = None if unfiltered else self._matcher(source, type, topic)
        key = None if order is None else order_key(order)
        was_open = not runtime.closed  # (a close() in another thread may end its await)
        # (with a source only: with none, a callback of this loop may send, unseen: `aio.take`)
        ends = source is not None and timeout != 0 and topic is None
        ends = ends and runtime.transport.delivers_later
        found = await aio.take(
            runtime, index, match, key, timeout, FIRST_SPIN, ends=ends, source=source
        )
        if found is not None:
            return aio.locked(runtime, runtime.deliver, index, found)
        raise self._nothing_came("areceive", index, timeout, source, type, True, was_open)

    def messages(
        self,
        node: str | int | None = None,
        *,
        source: str | int | None = None,
        type: TypeFilter = None,
        topic: Topic | str | None = None,
    ) -> AsyncIterator[Message]:
        """Every message of a local node as it arrives, for ``async for``.

        ``async for msg in geode.messages("node1"):`` ends when a `Stop` reaches the node
        (`stop`; the Stop itself is not yielded), or once the Geode is closed and nothing
        matching is left. Filters as for `receive`; a ``type`` or ``topic`` filter does not
        keep a Stop out (it ends the loop), a ``source`` filter does: a loop of one source's
        messages ends at that source's Stop, and leaves another's queued. As `run` does, it
        leaves in the queue the reply that a request from the node awaits (`arequest`, or
        `request` in another thread). Breaking out of the loop leaves the remaining messages queued.

        Raises:
            NodeNotLocalError, UnknownNodeError: at once; DecodeError: from the iteration
                that met the message; ClosedError: from the iteration that found nothing
                queued once a close() of another thread ended unfinished (naming it).
        """
        runtime = self._runtime
        index = runtime.local_index(node, "messages")
        unfiltered = source is None and type is None and topic is None
        match = None if unfiltered else self._matcher(source, type, topic)
        if match is not None:
            match = _or_stop(match, None if source is None else self._matcher(source, None))
        awaited = self._processor.awaited
        return aio.messages(runtime, index, match, runtime.deliver, _is_stop, FIRST_SPIN, awaited)

    async def asend(
        self,
        message: Any,
        source: str | int | None = None,
        dest: str | int | None = None,
        *,
        ack: bool = False,
        timeout: float | None = None,
        compress: str | Compression | None = None,
    ) -> SendHandle:
        """`send` for asyncio: send, then ``await handle.wait_async(timeout)``.

        When ``dest``'s queue has a capacity and no room for this sender (policy ``block``),
        it first awaits room; in one process, room comes once another coroutine receives.

        Raises:
            As `send` (SendTimeout: not sent when ``in_flight`` is False, else still in
            flight; AckTimeout: the message stays in its outbox; ClosedError: named
            ``asend``, and the thread whose close() began while it awaited room, the send
            or its ack).
        """
        runtime = self._runtime
        if dest is None:  # (said here: send's own words would name send())
            raise TypeError("asend() needs a dest: asend(message, dest='node1')")
        runtime.check_sending("asend")  # (not the isend it goes through: named here)
        timeout = check_timeout(timeout)
        deadline = aio.deadline_of(timeout)
        src = self.rank if source is None else runtime.placement.index(source, "source")
        waited = False  # (for room)
        if dest is not None and src in runtime.inboxes:  # (else isend says what is wrong)
            dst = runtime.placement.index(dest, "dest")
            pair = aio.locked(runtime, runtime.engine.pair_out, src, dst)
            waited = not (pair.credits is None or pair.credits > 0)
            if waited and not await aio.room(runtime, pair, src, dst, deadline):
                raise SendTimeout(-1, runtime.names[src], runtime.names[dst], timeout or 0.0, False)
        chosen = None if compress is None else setting(compress)
        # as send() sends: at once, not held back for a batch
        args = (message, source, dest, ack, timeout, _NO_REPLY, 0, False, None, chosen)
        handle = aio.locked(runtime, _send, runtime, "asend", args, None, waited)
        if handle.complete():
            return handle
        await handle.wait_until_async(deadline, timeout, "asend")
        return handle

    async def arequest(
        self,
        message: Any,
        dest: str | int,
        *,
        source: str | int | None = None,
        timeout: float | None = None,
    ) -> Message:
        """`request` for asyncio: send ``message`` to ``dest`` and await its reply.

        While it waits, this rank serves the requests sent to its nodes that have a handler
        (so coroutines of one process may request from each other's nodes), as every wait
        does.

        Raises:
            ReceiveTimeout: no reply within ``timeout`` seconds.
            HandlerError: dest's handler failed for good (as for `request`).
            NotProcessed: dest will not process it (as for `request`).
            ClosedError: the Geode is closed, or close() began in another thread while it
                awaited (naming that thread, as for `request`).
            NodeNotLocalError: another rank hosts ``source``.
        """
        runtime = self._runtime
        timeout = check_timeout(timeout)
        runtime.check_sending("arequest")  # (not the isend it goes through: named here)
        deadline = aio.deadline_of(timeout)
        src = runtime.local_index(source, "arequest")
        awaited = self._processor.awaited  # run() and messages() leave the reply for it
        args = (message, src, dest, True, timeout, _REQUEST, 0, False)
        handle = aio.locked(runtime, _send, runtime, "arequest", args, awaited)
        wanted = handle.id
        assert wanted is not None, "a request's source is local: this rank sent it"
        dst = runtime.placement.index(handle.dest)

        def is_reply(parcel: Parcel) -> bool:
            return parcel.reply_to == wanted and parcel.source == dst

        def refused() -> bool:  # dest said it will not process the request: no reply comes
            return handle.lost is not None

        found = None
        try:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            found = await aio.take(
                runtime, src, is_reply, None, left, FIRST_SPIN, refused, "arequest"
            )
        finally:
            awaited.discard(wanted)
            if found is None:  # (a reply that comes later is late: `Processor.unhandled`)
                self._processor.gave_up(src, wanted)
        if found is not None:
            reply = aio.locked(runtime, runtime.deliver, src, found)
            if isinstance(reply, RequestFailed):
                raise reply.error()
            return reply
        runtime.check_open("arequest")
        handle.check_processed()  # refused: dest's rank is closing, or it was dropped
        raise self._no_reply(handle, timeout, True)


def _send(
    runtime: Runtime,
    call: str,
    args: tuple[Any, ...],
    awaited: set[int] | None = None,
    waited: bool = False,
) -> SendHandle:
    """``runtime.send(*args)`` for ``call``, holding the gate: `ClosedError` names ``call``
    once close() began (not the isend it goes through), and the closer if ``call`` awaited
    room meanwhile (``waited``). ``awaited``: a request's, where its id goes before another
    thread may take its reply (`Processor.awaited`)."""
    if waited:
        aio.check_closing(runtime, call)
    runtime.check_sending(call)
    handle = runtime.send(*args)
    if awaited is not None and handle.id is not None:
        awaited.add(handle.id)
    return handle


def _is_stop(message: Message) -> bool:
    return isinstance(message, Stop)


def _or_stop(match: Match, sender: Match | None) -> Match:
    """``match``, or a `Stop` (a subclass too) from ``sender`` (a source filter's match; None:
    from any node): a `messages()` loop filtered by type or topic ends at a Stop, as an
    unfiltered one does; one filtered by source ends at that source's Stop only (draining one
    producer of several until its own Stop leaves the others' messages and Stops queued). The
    test is by class name (`is_stop_name`: a dict lookup), on every message the filter
    leaves."""

    def wanted(parcel: Parcel) -> bool:
        if match(parcel):
            return True
        return is_stop_name(codec.class_name_of(parcel.meta)) and (sender is None or sender(parcel))

    return wanted
