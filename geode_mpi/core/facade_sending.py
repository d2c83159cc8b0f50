"""The Geode's point-to-point sends, `send` and `isend`, and their fast cases (the hot path)."""

from __future__ import annotations

import time
from typing import Any

from geode_mpi import codec
from geode_mpi.base.gate import other_threads
from geode_mpi.codec.compression import Compression, setting
from geode_mpi.core.facade import Facade
from geode_mpi.core.handles import SendHandle
from geode_mpi.core.handles_run import RunHandle
from geode_mpi.core.placement import NODE_KEYS
from geode_mpi.core.runtime import POLL_EVERY_SENDS
from geode_mpi.errors import check_flag, check_timeout
from geode_mpi.message import Message
from geode_mpi.tracing import TRACER

# Hot-path names, bound once.
_NO_REPLY = codec.NO_REPLY
_SECONDS = (int, float)  # a timeout's types (a bool is refused by `check_timeout`)
_NODE_KEYS = NODE_KEYS  # a node's name or index (not a bool, nor a numpy int: those go on)


class SendCalls(Facade):
    """The Geode's sends (`Geode` inherits them)."""

    def isend(
        self,
        message: Any,
        source: str | int | None = None,
        dest: str | int | None = None,
        *,
        ack: bool = False,
        timeout: float | None = None,
        compress: str | Compression | None = None,
        priority: int = 0,
        ttl: float | None = None,
    ) -> SendHandle:
        """Start sending; return a handle at once.

        Do not modify arrays in the message until ``handle.done()`` is True (or after
        ``handle.wait()``): they are sent from their own memory. A small message may be held
        back for up to 100 microseconds to go out with the next ones in one MPI message;
        it goes at the next geode_mpi call that waits, `flush`, or ``handle.wait()``.

        Args:
            message: a Message, or any picklable value (wrapped in a Message).
            source: the sending node (default: this rank's node). If another rank hosts it,
                that rank sends the message: here nothing happens, and the handle is done at
                once (``handle.local`` is False).
            dest: the destination node, by name or index.
            ack: the handle completes only once the receiver has acknowledged the message.
            timeout: with a full ``block`` queue at ``dest``, how long to wait for room.
            compress: this message's compression, over the Geode's (see `Geode`).
            priority: an int (i32); ``dest`` takes higher priorities first, FIFO within one
                priority and source (docs/delivery.md, "Priority and expiry").
            ttl: seconds the message may live, counted from this send (and at most ``ttl``
                after its arrival at ``dest``); after that ``dest`` drops it (counted in
                ``stats().expired``) instead of handing it out. None: no limit.

        Returns:
            A SendHandle (done at once when another rank hosts ``source``).

        Raises:
            UnknownNodeError: source or dest is not a node of this job.
            EncodeError: the message cannot be encoded; nothing was sent.
            QueueFull: dest's queue is full and its policy is ``raise`` (nothing was sent).
            SendTimeout: dest's queue stayed full for ``timeout`` seconds (nothing was sent).
            ClosedError: this Geode is closed.
        """
        runtime = self._runtime
        if dest.__class__ not in _NODE_KEYS:  # (found by the lanes as an equal int: `key`)
            dest = runtime.placement.key(dest, "dest")
        if timeout is not None:  # (every isend's, not only its pair's first)
            timeout = check_timeout(timeout)
        if (
            compress is None
            and not priority
            and ttl is None
            and (source is None or (source.__class__ in _NODE_KEYS and source in self._own))
            and ack is False
        ):  # (naming this rank's own node as the source is the same as not naming it)
            if not other_threads():
                # The commonest isend: it joins the open run of its dest's lane (one lookup;
                # a dest sent to before, without credits), else `send_plain` as before.
                try:
                    lane = runtime.path.dests.get(dest)
                except TypeError:  # unhashable: not a node name; the general path says so
                    lane = None
                if (
                    lane is not None
                    and (run := lane.pair.run) is not None
                    and not runtime.sealed
                    and not TRACER.on
                    and (at := run.join(message)) >= 0
                ):
                    sends = runtime.sends = runtime.sends + 1
                    if not sends & POLL_EVERY_SENDS - 1:
                        runtime.joined_poll(sends, message)
                    return RunHandle(runtime, run, at)
                return runtime.send_plain(message, dest, timeout, True)
            if not runtime.owned():
                return runtime.serialised(runtime.send_plain, message, dest, timeout, True)
            return runtime.send_plain(message, dest, timeout, True)
        if ack is not True and ack is not False:  # ("no" is not False)
            ack = check_flag(ack, "ack")
        if other_threads() and not runtime.owned():
            chosen = None if compress is None else setting(compress)
            return runtime.serialised(
                runtime.send,
                message,
                source,
                dest,
                ack,
                timeout,
                via=codec.qos_route(priority, ttl),
                compress=chosen,
            )
        if compress is None and not priority and ttl is None:
            return runtime.send(message, source, dest, ack, timeout)
        chosen = None if compress is None else setting(compress)
        via = codec.qos_route(priority, ttl)
        return runtime.send(message, source, dest, ack, timeout, via=via, compress=chosen)

    def send(
        self,
        message: Any,
        source: str | int | None = None,
        dest: str | int | None = None,
        *,
        ack: bool = False,
        timeout: float | None = None,
        compress: str | Compression | None = None,
        priority: int = 0,
        ttl: float | None = None,
    ) -> SendHandle:
        """Send a message; return when its data may be reused (with ``ack``: once processed).

        ``send(msg, "node1", "node2")`` sends from node1 on the rank that hosts it and does
        nothing on other ranks (there it returns a handle that is already done);
        ``send(msg, dest="node2")`` sends from this rank's node.

        Args:
            message: a Message, or any picklable value (wrapped in a Message).
            source: the sending node (default: this rank's node).
            dest: the destination node, by name or index.
            ack: also wait until the receiver has acknowledged (processed) the message.
            timeout: seconds to wait in all (None: no limit).
            compress: this message's compression, over the Geode's (see `Geode`).
            priority: an int; ``dest`` takes higher priorities first (see `isend`).
            ttl: seconds the message may live before ``dest`` drops it (see `isend`).

        Returns:
            The completed SendHandle (with the message's id and seq; on a rank that does not
            host ``source``, a done handle whose ``local`` is False and id and seq None).

        Raises:
            UnknownNodeError: source or dest is not a node of this job.
            EncodeError: the message cannot be encoded; nothing was sent.
            QueueFull: dest's queue is full and its policy is ``raise``; nothing was sent.
            SendTimeout: dest's queue stayed full for ``timeout`` seconds: nothing was sent
                (``error.in_flight`` False; send it again); or the data was not released in
                time: the message stays in flight (``in_flight`` True; do not send it again).
            AckTimeout: (with ``ack``) no acknowledgement in time; the message stays in the
                outbox and may still be processed, once.
            ClosedError: this Geode is closed.
        """
        runtime = self._runtime
        if dest.__class__ not in _NODE_KEYS:  # (found by the lanes as an equal int: `key`)
            dest = runtime.placement.key(dest, "dest")
        threads = other_threads()  # (asked once: the fast case and the fallback both need it)
        if (
            (source is None or (source.__class__ in _NODE_KEYS and source in self._own))
            and (timeout is None or (timeout.__class__ in _SECONDS and timeout >= 0))
            and ack is False
            and compress is None
            and not priority
            and ttl is None
            and not threads
        ):
            # The commonest send (from this rank's own node, named or not, with or without a
            # timeout), to a dest sent to before without credits: its lane (stamp, encode, MPI
            # send, records; delivery/direct.py), with nothing else in between.
            try:
                lane = runtime.path.dests.get(dest)
            except TypeError:  # unhashable: not a node name; the general path says so
                lane = None
            if lane is not None and not runtime.sealed and not TRACER.on:
                if timeout is not None:  # (before anything is sent: 10**400 overflows here)
                    timeout = check_timeout(timeout)
                # Plain data goes the express way (`Lane.express`: no Message built for it)
                kind = message.__class__
                if kind is Message:
                    sent = lane.express(message.data, message)
                    if sent is None and "_headers" in message.__dict__:  # (as a subclass's)
                        sent = lane.express_named(message)
                elif kind is str or not isinstance(message, Message):  # (a str: the commonest)
                    sent = lane.express(message, None)
                else:  # a subclass: its class name packed once per lane and class
                    sent = lane.express_named(message)
                if sent is None:
                    sent = lane.send(message if isinstance(message, Message) else Message(message))
                ticket, stamp = sent
                runtime.sends += 1
                if not runtime.sends & POLL_EVERY_SENDS - 1:
                    runtime.poll_after(message)  # (see `Runtime.send`)
                handle = SendHandle(runtime, ticket, stamp, lane.pair if lane.tracked else None)
                if not ticket.done:
                    if timeout is None:
                        handle.wait_until(None, None, "send")
                    else:  # (as the general path's below)
                        handle.wait_until(time.monotonic() + timeout, timeout, "send")
                return handle
        if ack is not True and ack is not False:  # ("no" is not False)
            ack = check_flag(ack, "ack")
        if (ack or threads) and not runtime.owned():  # ack: handlers may run here
            return runtime.serialised(
                self.send,
                message,
                source,
                dest,
                ack=ack,
                timeout=timeout,
                compress=compress,
                priority=priority,
                ttl=ttl,
            )
        if runtime.sealed and not runtime.serving:  # (inline: the hot path)
            raise runtime.closed_error("send")
        deadline = None
        if timeout is not None:
            timeout = check_timeout(timeout)
            deadline = time.monotonic() + (timeout or 0.0)
        plain = compress is None and not priority and ttl is None
        if plain and source is None and not ack:  # (the hot path)
            handle = runtime.send_plain(message, dest, timeout, False)
        elif plain:
            handle = runtime.send(message, source, dest, ack, timeout, _NO_REPLY, 0, False)
        else:
            chosen = None if compress is None else setting(compress)
            via = codec.qos_route(priority, ttl)
            handle = runtime.send(
                message, source, dest, ack, timeout, _NO_REPLY, 0, False, via, chosen
            )
        if not handle.complete():
            handle.wait_until(deadline, timeout, "send")
        return handle
