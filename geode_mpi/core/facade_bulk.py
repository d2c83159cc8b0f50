"""The Geode's bulk calls: isend_many, a batch sent as many messages in one call, and
receive_many, the messages queued now in one list (issue 17)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.gate import other_threads
from geode_mpi.codec.runs import RunItem
from geode_mpi.core.facade import Facade
from geode_mpi.core.filters import TypeFilter
from geode_mpi.core.handles import SendHandle
from geode_mpi.core.handles_batch import BatchHandle
from geode_mpi.core.handles_run import RunHandle
from geode_mpi.core.placement import NODE_KEYS
from geode_mpi.core.runtime import NO_FAST_QUEUE
from geode_mpi.core.topics import Topic
from geode_mpi.delivery.run_cursor import RunCursor
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.errors import (
    ClosedError,
    DecodeError,
    GeodeError,
    SendTimeout,
    check_timeout,
    whole,
)
from geode_mpi.message import Message
from geode_mpi.queues import Parcel
from geode_mpi.tracing import TRACER

if TYPE_CHECKING:
    from geode_mpi.core.subscriptions import Subscription

MANY = 64  # receive_many's default limit: a run's messages (delivery/runs.py `RUN_MAX`)


class Bulk(Facade):
    """The Geode's bulk send and receive (`Geode` inherits them)."""

    # A DecodeError met after other messages were taken, by receiving node index: that node's
    # next call raises it (the message itself went to the dead letters, as `receive` does).
    _bulk_errors: dict[int, BaseException] | None = None

    if TYPE_CHECKING:
        receive: Callable[..., Message]  # (core/facade_receiving.py)

    def isend_many(
        self, items: Iterable[Any], dest: str | int | None = None, *, timeout: float | None = None
    ) -> BatchHandle:
        """Start sending each item of ``items`` to ``dest`` as its own message, in order; return
        one handle for the whole batch at once.

        Each item is what `isend` would send (a Message, or any picklable value wrapped in
        one): its own id and seq, deduplicated, acknowledged and counted as if sent by
        `isend` in a loop, under the same queue policy and credits. What a loop of `isend`
        pays per message once (the call, its checks, a handle) it pays once a batch: small
        bare values (texts, bytes, numbers) join the destination's run in slices. Anything
        else (arrays, large data, a full ``block`` queue's wait) is sent as `isend` sends it.
        For ``ack``, ``priority``, ``ttl`` or ``compress``, or another ``source``, use `isend`.

        Do not modify the items until ``handle.done()`` is True (or after ``handle.wait()``).

        Args:
            items: the messages' data (any iterable; it is read once, to the end, first).
            dest: the destination node, by name or index.
            timeout: with a full ``block`` queue at ``dest``, how long the whole batch may
                wait for room.

        Returns:
            A BatchHandle (``len(handle)``: the number of messages).

        Raises:
            UnknownNodeError: dest is not a node of this job.
            EncodeError: an item cannot be encoded.
            QueueFull: dest's queue is full and its policy is ``raise``.
            SendTimeout: dest's queue stayed full for ``timeout`` seconds (for the whole batch;
                the item it stopped at was not sent).
            ClosedError: this Geode is closed.
            DecodeError: a poll between sends met a damaged arrival.
            (Each of the last five says in its text where the batch stopped; its ``sent``
            attribute is how many items were sent: ``items[error.sent:]`` were not.)
        """
        timeout = check_timeout(timeout)
        runtime = self._runtime
        if other_threads() and not runtime.owned():
            return runtime.serialised(self._isend_many, items, dest, timeout)
        return self._isend_many(items, dest, timeout)

    def _isend_many(self, items: Iterable[Any], dest: Any, timeout: float | None) -> BatchHandle:
        """`isend_many` holding the gate (if other threads exist)."""
        runtime = self._runtime
        batch: Sequence[Any] = items if items.__class__ in (list, tuple) else [*items]
        count = len(batch)
        try:
            runtime.check_sending("isend_many")
        except GeodeError as error:  # (ClosedError: nothing of the batch went)
            error.sent = 0
            raise
        if dest is None:
            raise TypeError("isend_many() needs a dest: isend_many(items, dest='node1')")
        if dest.__class__ not in NODE_KEYS:  # (found by the lanes as an equal int: `key`)
            dest = runtime.placement.key(dest, "dest")
        if not count:
            runtime.placement.index(dest, "dest")  # (an unknown dest is an error, even so)
            return BatchHandle([], 0)
        lanes = runtime.path.dests
        deadline = None if timeout is None else time.monotonic() + timeout
        handles: list[SendHandle] = []
        at = 0
        while at < count:
            try:
                lane = lanes.get(dest)
            except TypeError:  # unhashable: not a node name; the general path says so
                lane = None
            run = None if lane is None else lane.pair.run
            if run is not None and not runtime.sealed and not TRACER.on:
                first = len(run.payloads)
                joined = run.join_many(batch, at)
                if joined:
                    handles.append(RunHandle(runtime, run, first + joined - 1))
                    at += joined
                    before = runtime.sends
                    runtime.sends = before + joined
                    try:
                        runtime.joined_many(before, before + joined)
                    except GeodeError as error:  # (a poll's: what arrived, after the sends)
                        raise _partly_sent(error, batch, at, False) from None
                    continue
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            item = batch[at]
            try:
                handles.append(runtime.send_plain(item, dest, left, True))
            except GeodeError as error:
                # (not `runtime.sends`: what handlers sent while it waited for room counts too)
                if error.after_send is not item:  # (the item did not go)
                    if error.__class__ is SendTimeout and timeout is not None:
                        # (it waited what was left of the batch's timeout: name the timeout)
                        error = SendTimeout(-1, error.source, error.dest, timeout, False)
                    raise _partly_sent(error, batch, at, True) from None
                raise _partly_sent(error, batch, at + 1, False) from None  # (its poll's)
            at += 1
        return BatchHandle(handles, count)

    def receive_many(
        self,
        node: str | int | None = None,
        *,
        limit: int = MANY,
        source: str | int | None = None,
        type: TypeFilter = None,
        timeout: float | None = None,
        topic: Topic | Subscription | str | None = None,
    ) -> list[Message]:
        """Take the oldest matching messages queued now, at most ``limit``, waiting for the
        first as `receive` does: a loop that handles many messages spends less a message
        than one that calls `receive` for each (a run's messages come out together).

        Each message is one `receive` would have returned, in the same order, counted and
        acknowledged the same way (on a queue with explicit acks, call ``ack()`` on each).
        It waits only for the first; the others are those already there.

        Args:
            node: the receiving node (default: this rank's node); must be hosted here.
            limit: the most messages returned (>= 1).
            source: only messages from this node.
            type: only messages of this Message class (or subclasses), or this class name.
            timeout: seconds to wait for the first (None: no limit; 0: do not wait).
            topic: only messages published on this topic (or a pattern's topics).

        Returns:
            One to ``limit`` messages, oldest first.

        Raises:
            TypeError: ``limit`` is not an int.
            ValueError: ``limit`` is less than 1, or ``timeout`` is negative.
            ReceiveTimeout, NodeNotLocalError, UnknownNodeError, DecodeError, ClosedError:
                as for `receive` (a DecodeError met after the first message is raised by the
                next call: the messages taken before it are returned first).
        """
        if limit.__class__ is not int:  # (checked before any state is touched)
            counted = whole(limit)  # a numpy integer is a count too
            if counted is None:
                raise TypeError(f"limit must be an int >= 1, got {limit!r}")
            limit = counted
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        timeout = check_timeout(timeout)
        runtime = self._runtime
        if other_threads() and not runtime.owned():
            return runtime.serialised(
                self.receive_many,
                node,
                limit=limit,
                source=source,
                type=type,
                timeout=timeout,
                topic=topic,
            )
        index = self.rank if node is None else runtime.local_index(node, "receive_many")
        errors = self._bulk_errors
        if errors and index in errors:
            raise errors.pop(index)
        unfiltered = source is None and type is None and topic is None
        fast = runtime.plain_queue is not NO_FAST_QUEUE and node is None and unfiltered
        taken: list[Message] = []
        if fast:
            self._take_runs(taken, limit)
        if not taken:
            try:
                message = self.receive(node, source=source, type=type, timeout=timeout, topic=topic)
            except ClosedError as exc:  # (named for this call, not the receive it made)
                raise ClosedError("receive_many", exc.closer, exc.unfinished) from None
            taken.append(message)
        match = None if unfiltered else self._matcher(source, type, topic)
        engine = runtime.engine
        while len(taken) < limit:
            if fast and self._take_runs(taken, limit):
                continue
            # What try_receive takes (a plain queue: `take_plain`), without its poll.
            found: tuple[Parcel, Any] | None
            if fast:
                parcel = engine.take_plain(index)
                if parcel is None:
                    break  # nothing else queued now
                frames: Any = parcel.frames
                if frames.__class__ is RunItem and frames.message is not None:
                    taken.append(frames.message)  # (a run's, built as it arrived: as receive)
                    if TRACER.on:
                        trace_receive(index, frames.message, "receive")
                    continue
                found = (parcel, None)
            else:
                found = engine.take(index, match, None, False)
                if found is None:
                    break
            try:
                taken.append(runtime.deliver(index, found))
            except DecodeError as exc:  # (dead-lettered, as by receive: the next call raises)
                self._keep_error(index, exc)
                break
        return taken

    def _take_runs(self, taken: list[Message], limit: int) -> bool:
        """Append to ``taken`` the messages of the runs at the head of this rank's node's
        queue (a plain take, `Engine.take_runs`), up to ``limit`` in all; True if any."""
        runtime = self._runtime
        queue = runtime.plain_queue
        engine = runtime.engine
        before = len(taken)
        while queue and len(taken) < limit:
            head = queue[0].frames
            if head.__class__ is not RunCursor:
                break
            got = engine.take_runs(self.rank, head, limit - len(taken))
            if not got:
                break
            taken += got
        count = len(taken) - before
        if not count:
            return False
        runtime.receives += count
        try:
            engine.poll()  # (once a bulk take: acks go out, arrivals come in)
        except DecodeError as exc:  # (what was taken is returned; the next call raises it)
            self._keep_error(self.rank, exc)
        if TRACER.on:
            for message in taken[before:]:
                trace_receive(self.rank, message, "receive")
        return True

    def _keep_error(self, index: int, error: BaseException) -> None:
        """Keep ``error`` for node ``index``'s next `receive_many`."""
        if self._bulk_errors is None:
            self._bulk_errors = {}
        self._bulk_errors.setdefault(index, error)


def _partly_sent(error: GeodeError, batch: Sequence[Any], sent: int, failed: bool) -> GeodeError:
    """``error``, met by an `isend_many` batch once its first ``sent`` items were sent (by
    the next item, if ``failed``; else by a poll after them), saying so (and ``sent``)."""
    error.sent = sent
    said = str(error).removesuffix("; nothing was sent")  # (of the item: the rest says it)
    count = len(batch)
    done = f"items 0..{sent - 1} were sent" if sent else "no item was sent"
    if failed:
        text = f"isend_many: item {sent} of {count} ({type(batch[sent]).__name__}): {said}"
        rest = f"item {sent} and the {count - sent - 1} after it were not"
    else:
        text = f"isend_many: after item {sent - 1} of {count} was sent: {said}"
        rest = f"the {count - sent} after it were not"
    error.args = (f"{text} ({done}; {rest})",)
    return error
