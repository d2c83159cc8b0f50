"""The Geode: the public face of a job on this rank (its runtime does the work)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from geode_mpi import codec
from geode_mpi.base.gate import locked, other_threads, senders_may_run
from geode_mpi.codec.compression import Compression, setting
from geode_mpi.codec.runs import RunItem
from geode_mpi.core.aio import POLL_EVERY_RUN_RECEIVES
from geode_mpi.core.channels import Channels
from geode_mpi.core.checkpointing import Checkpointer
from geode_mpi.core.facade_aio import Asyncio
from geode_mpi.core.facade_bulk import Bulk
from geode_mpi.core.facade_channels import ChannelCalls
from geode_mpi.core.facade_checkpoints import Checkpoints
from geode_mpi.core.facade_lifecycle import Lifecycle
from geode_mpi.core.facade_nodes import NodeCalls
from geode_mpi.core.facade_processing import Processing
from geode_mpi.core.filters import TypeFilter, matcher, order_key, type_label
from geode_mpi.core.groups import Sequencer
from geode_mpi.core.handles import RunHandle, SendHandle
from geode_mpi.core.observe import (
    Observed,
    start_observing,
    start_watchdog,
    stop_watchdog,
)
from geode_mpi.core.placement import Placement, node_names
from geode_mpi.core.processing import Processor
from geode_mpi.core.registry import register, unregister
from geode_mpi.core.runtime import (
    FIRST_SPIN,
    NO_FAST_QUEUE,
    POLL_EVERY_RECEIVES,
    POLL_EVERY_SENDS,
    Runtime,
)
from geode_mpi.core.subscriptions import Subscription
from geode_mpi.core.termination import term_grace as term_grace_of
from geode_mpi.core.topics import Topic
from geode_mpi.delivery import QueueConfig
from geode_mpi.delivery.cache import budget_of
from geode_mpi.delivery.config import node_configs
from geode_mpi.delivery.runs import RunCursor
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.errors import (
    ClosedError,
    DecodeError,
    ReceiveTimeout,
    RestartDirError,
    check_timeout,
)
from geode_mpi.message import Message
from geode_mpi.queues import Match
from geode_mpi.tracing import TRACER
from geode_mpi.transport import (
    Collectives,
    PointToPoint,
    Transport,
    hang_timeout,
    network_peers,
    open_world,
    require,
)

# Hot-path names, bound once.
_decode = codec.decode
_NO_REPLY = codec.NO_REPLY
_FROM_STREAM = codec.FLAG_TOPIC | codec.FLAG_WORK  # from a topic's or a work queue's stream
_SECONDS = (int, float)  # a timeout's types (a bool is refused by `check_timeout`)
_NODE_KEYS = (str, int)  # a node's name or index (not a bool, nor a numpy int: those go on)


class Geode(NodeCalls, Processing, ChannelCalls, Checkpoints, Lifecycle, Asyncio, Bulk):
    """This rank's view of a geode_mpi job: its nodes, and messages between all nodes.

    Creating a Geode is collective when the job runs on several MPI ranks: every rank creates
    it, with the same arguments, in the same order. With one rank (plain ``python job.py`` or
    ``mpiexec -n 1``) all nodes live in this process: the embedded world.

    Args:
        nodes: None for the defaults (``node0``..``node{N-1}`` for N ranks; ``node0``..``node3``
            in the embedded world), a node count, or a list of names. Node k lives on rank
            k mod N.
        transport: a transport to use instead of the one the launch implies (tests use
            `geode_mpi.transport.InProcHub` endpoints to simulate ranks in one process).
        comm: an MPI communicator to use instead of COMM_WORLD.
        acks: keep every sent message in its sender's outbox until the receiver acknowledges
            it (the default; what a checkpoint saves). False sends without tracking; a send
            with ``ack=True`` is tracked anyway.
        queue: the receive-queue settings of every node (default: no capacity limit, automatic
            acks, 3 attempts).
        queues: settings for particular nodes, by name or index, over ``queue``.
        resend_after: seconds after which a message not yet acknowledged is sent again
            (duplicates are dropped by the receiver). None (the default) never resends: MPI
            does not lose messages.
        checkpoint_dir: where `checkpoint` writes (default: the ``GEODE_CHECKPOINT_DIR``
            environment variable, else no checkpoints). One job per directory.
        keep_checkpoints: complete checkpoints to keep there (at least 2).
        restart: load the newest complete checkpoint there first (default: True when the job
            was started with ``python -m geode_mpi --restart``); see `restored_state`.
        checkpoint_every: seconds between the checkpoints `maybe_checkpoint` takes.
        checkpoint_every_messages: messages sent (on any rank) between them.
        term_grace: with a checkpoint directory, the seconds a SIGTERM leaves the process
            (default: ``GEODE_TERM_GRACE``, else 20): the next `maybe_checkpoint` writes a
            last checkpoint and exits 0; a blocking call still waiting after half of it
            raises `Terminated`; at its end the process exits with status 143.
        cache_bytes: the payload cache's budget: bytes of `share`d arrays each rank may hold
            from this one (default: ``GEODE_CACHE_BYTES``, else 64 MiB; 0 turns it off).
        compress: compress large arrays on their way (docs/compression.md): None or "off"
            (the default: topics and messages may still ask), "auto" (Blosc LZ4 towards
            ranks reached over the network path, for arrays of 256 KiB and more that it
            halves), or a codec with an optional level, "lz4", "zstd:3" (always). A topic's
            or a message's own ``compress=`` wins over it. Needs ``geode_mpi[compress]``.
    """

    def __init__(
        self,
        nodes: int | Sequence[str] | None = None,
        *,
        transport: Transport | None = None,
        comm: Any = None,
        acks: bool = True,
        queue: QueueConfig | None = None,
        queues: Mapping[str | int, QueueConfig] | None = None,
        resend_after: float | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        keep_checkpoints: int = 2,
        restart: bool | None = None,
        checkpoint_every: float | None = None,
        checkpoint_every_messages: int | None = None,
        term_grace: float | None = None,
        cache_bytes: int | None = None,
        compress: str | Compression | None = None,
    ) -> None:
        budget = budget_of(cache_bytes)
        hang = hang_timeout()  # a bad setting is refused before anything starts
        compressing = setting(compress)
        grace = term_grace_of(term_grace)
        if restart or (restart is None and os.environ.get("GEODE_RESTART") == "1"):
            check_restart_dir(checkpoint_dir, os.environ.get("GEODE_RESTART_DIR"))
        transport = transport if transport is not None else open_world(comm)
        # Collectives: the settings check below, close and checkpoints; topics ask for their
        # broadcast streams when one is created (`Channels.topic`).
        require(transport, PointToPoint, "Geode()")
        require(transport, Collectives, "Geode()")
        names = node_names(nodes, transport.size)
        placement = Placement(names, transport.size)
        configs = node_configs(placement.names, placement.index, queue, queues)
        resend_after = check_timeout(resend_after, "resend_after")
        transport.check_same(
            repr((names, configs, acks, resend_after)).encode(),
            "the node names and delivery settings",
        )
        self._runtime = runtime = Runtime(transport, placement, configs, acks, resend_after)
        runtime.engine.path.cache.budget = budget
        runtime.path.compress = compressing
        runtime.path.network = network_peers(transport)  # (what the transport found)
        self._transport = transport
        self._gate = runtime.gate  # what `locked` holds around the public calls
        self.rank: int = runtime.rank
        self.size: int = runtime.size
        # what `receive` may be told to mean this rank's own node: None, its name, its index
        self._own = (placement.names[self.rank], self.rank)
        self._processor = Processor(runtime)
        self._channels = Channels(runtime, self._processor)  # its topics and work queues
        self._sequencer = Sequencer(runtime, self._channels.to_owner)
        runtime.engine.on_forward = self._sequencer.forward
        self._checkpointer: Checkpointer | None = None
        self.restored_state: dict[str, Any] | None = None
        directory = checkpoint_dir or os.environ.get("GEODE_CHECKPOINT_DIR") or None
        if restart is None:
            restart = os.environ.get("GEODE_RESTART") == "1"
        if directory is not None:
            checkpointer = Checkpointer(
                runtime,
                directory,
                keep_checkpoints,
                checkpoint_every,
                checkpoint_every_messages,
                grace,
            )
            checkpointer.topics_made = self._channels.topics
            checkpointer.queues_made = self._channels.work_queues
            checkpointer.sequencer = self._sequencer
            checkpointer.close_geode = self.close
            self._checkpointer = self._channels.checkpointer = checkpointer
            if restart:
                self.restored_state = checkpointer.restore()
        elif restart:
            raise ValueError("restart needs a checkpoint_dir (or GEODE_CHECKPOINT_DIR)")
        TRACER.start(self.rank, self.size, names)
        self._watchdog = start_watchdog(runtime, hang)  # --hang-timeout
        self._observed = Observed(runtime, self._checkpointer)
        start_observing(self._observed)  # --stats / --trace: what to leave if the job fails
        register(self, self._end, self._report_unreceived)

    # -- sending ---------------------------------------------------------------------------

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
        if (
            compress is None
            and not priority
            and ttl is None
            and (source is None or (source.__class__ in _NODE_KEYS and source in self._own))
            and not ack
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
                        runtime.joined_poll(sends)
                    return RunHandle(runtime, run, at)
                return runtime.send_plain(message, dest, timeout, True)
            if not runtime.owned():
                return runtime.serialised(runtime.send_plain, message, dest, timeout, True)
            return runtime.send_plain(message, dest, timeout, True)
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
            SendTimeout: the send did not complete in time; the message stays in flight.
            AckTimeout: (with ``ack``) no acknowledgement in time; the message stays in the
                outbox and may still be processed, once.
            ClosedError: this Geode is closed.
        """
        runtime = self._runtime
        threads = other_threads()  # (asked once: the fast case and the fallback both need it)
        if (
            (source is None or (source.__class__ in _NODE_KEYS and source in self._own))
            and (timeout is None or (timeout.__class__ in _SECONDS and timeout >= 0))
            and not ack
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
                elif kind is str or not isinstance(message, Message):  # (a str: the commonest)
                    sent = lane.express(message, None)
                else:  # a subclass: its class name packed once per lane and class
                    sent = lane.express_named(message)
                if sent is None:
                    sent = lane.send(message if isinstance(message, Message) else Message(message))
                ticket, stamp = sent
                runtime.sends += 1
                if not runtime.sends & POLL_EVERY_SENDS - 1:
                    runtime.engine.poll()  # (see `Runtime.send`)
                handle = SendHandle(runtime, ticket, stamp, lane.pair if lane.tracked else None)
                if not ticket.done:
                    if timeout is None:
                        handle.wait_until(None, None)
                    else:  # (as the general path's below)
                        handle.wait_until(time.monotonic() + timeout, timeout)
                return handle
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
            raise ClosedError("send")
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
            handle.wait_until(deadline, timeout)
        return handle

    # -- receiving -------------------------------------------------------------------------

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
            ClosedError: the Geode is closed and nothing matching is queued.
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
        if (
            runtime.plain_queue is not NO_FAST_QUEUE
            and (node is None or (node.__class__ in _NODE_KEYS and node in self._own))
            and (
                timeout is None
                or (
                    timeout.__class__ in _SECONDS
                    and (timeout > 0 or (timeout == 0 and runtime.plain_queue))
                )
            )  # (before ``source``: a bad timeout is the general path's to report first)
            and (source is None or self._head_from(source))
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
                    want = -1 if source is None else runtime.placement.index(source)
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
        found = runtime.take(index, match, key, timeout, spun)
        if found is not None:
            return runtime.deliver(index, found)
        waited = runtime.transport.delivers_later or senders_may_run()
        raise self._nothing_came("receive", index, timeout, source, type, waited)

    def _head_from(self, source: str | int) -> bool:
        """Whether `receive(source=...)` may take its fast case: nothing is queued (the
        express take takes only a message from ``source``), or the message a plain take
        takes (nothing queued with a priority or ttl, held back or private: then the plain
        take is not the queue's head) is the oldest queued, and it is from ``source``.

        Raises:
            UnknownNodeError: ``source`` is not a node of this job.
        """
        runtime = self._runtime
        queue = runtime.plain_queue
        index = runtime.placement.index(source, "source")
        if not queue:
            return True  # (the express take then takes only a message from it)
        inbox = runtime.inboxes[self.rank]
        if inbox.ranked or inbox.held_back or inbox.private:
            return False
        return bool(queue[0].source == index)

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

    # -- lifecycle (close and its steps: core/facade_lifecycle.py) ------------------------

    def __enter__(self) -> Geode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._end()
        else:
            # Another rank may never reach close(): do not wait for it while an error unwinds.
            runtime = self._runtime
            runtime.closed = runtime.sealed = True
            runtime.plain_queue = NO_FAST_QUEUE
            stop_watchdog(self._watchdog, free=False)
            unregister(self)

    def __repr__(self) -> str:
        state = "closed" if self._runtime.closed else "open"
        return (
            f"<Geode rank {self.rank}/{self.size} node={self.node} "
            f"local={list(self.local_nodes)} {state}>"
        )

    # -- internals -------------------------------------------------------------------------

    def _nothing_came(
        self,
        call: str,
        index: int,
        timeout: float | None,
        source: str | int | None,
        type_filter: TypeFilter,
        waited: bool,
    ) -> ReceiveTimeout:
        """The error of a receive at node ``index`` that got nothing (`ClosedError` raised
        instead once the Geode is closed)."""
        runtime = self._runtime
        runtime.check_open(call)
        names = runtime.names
        return ReceiveTimeout(
            names[index],
            timeout or 0.0,
            None if source is None else names[runtime.placement.index(source)],
            type_label(type_filter),
            len(runtime.inboxes[index]),
            waited=waited,
        )

    def _matcher(
        self,
        source: str | int | None,
        type_filter: TypeFilter,
        topic: Topic | Subscription | str | None = None,
    ) -> Match | None:
        index = None if source is None else self._runtime.placement.index(source, "source")
        rest = matcher(index, type_filter)
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


def check_restart_dir(own: str | os.PathLike[str] | None, restart_dir: str | None) -> None:
    """Refuse a job whose own checkpoint_dir is not the directory of ``--restart DIR``.

    Raises:
        RestartDirError: both are given and are different directories.
    """
    if own is None or not restart_dir:
        return
    if os.path.realpath(own) != os.path.realpath(restart_dir):
        raise RestartDirError(
            f"--restart {restart_dir!r} names another directory than the job's own "
            f"checkpoint_dir {os.fspath(own)!r}: restart from the directory the job "
            "checkpoints into (or give --restart alone, which uses the job's own)"
        )
