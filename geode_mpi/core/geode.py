"""The Geode: the public face of a job on this rank (its runtime does the work)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.base.backoff import CLOSING_YIELD
from geode_mpi.base.gate import locked, other_threads, senders_may_run
from geode_mpi.codec.compression import Compression, setting
from geode_mpi.codec.runs import RunItem
from geode_mpi.core import aio
from geode_mpi.core.channels import Channels
from geode_mpi.core.checkpointing import Checkpointer
from geode_mpi.core.filters import TypeFilter, matcher, order_key, type_label
from geode_mpi.core.groups import Group, Sequencer
from geode_mpi.core.handles import SendHandle
from geode_mpi.core.observe import (
    Observed,
    finish_job,
    start_observing,
    start_watchdog,
    stop_watchdog,
)
from geode_mpi.core.placement import Placement, node_names
from geode_mpi.core.processing import Handler, HandlerKey, Processor, RunSummary, Stop
from geode_mpi.core.registry import note_closed, register, unregister
from geode_mpi.core.runtime import (
    FIRST_SPIN,
    NO_FAST_QUEUE,
    POLL_EVERY_RECEIVES,
    POLL_EVERY_SENDS,
    Runtime,
)
from geode_mpi.core.termination import term_grace as term_grace_of
from geode_mpi.core.topics import Subscription, Topic
from geode_mpi.core.workqueues import WorkQueue
from geode_mpi.delivery import DeadLetter, NodeStats, QueueConfig
from geode_mpi.delivery.cache import CacheStats, budget_of, share
from geode_mpi.delivery.config import node_configs
from geode_mpi.delivery.runs import RunCursor
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.delivery.waiting import wait_for
from geode_mpi.errors import (
    ClosedError,
    DecodeError,
    GeodeTimeoutError,
    ReceiveTimeout,
    RestartDirError,
    SendTimeout,
    check_timeout,
)
from geode_mpi.message import Message
from geode_mpi.queues import Match, Parcel
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

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.core.executor import GeodeExecutor
else:  # a job that never asks for a zero-copy array never needs numpy here
    from geode_mpi.base.ondemand import on_first_use

    np = on_first_use("numpy", globals(), "np")

# Hot-path names, bound once.
_decode = codec.decode
_NO_REPLY = codec.NO_REPLY
_FROM_STREAM = codec.FLAG_TOPIC | codec.FLAG_WORK  # from a topic's or a work queue's stream


class Geode:
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

    # -- checkpoints -----------------------------------------------------------------------

    @locked
    def checkpoint(
        self,
        state: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        *,
        node_state: Mapping[str | int, Any] | None = None,
    ) -> int:
        """Save the whole job's message state, and ``state``, as one consistent checkpoint.

        Collective: every rank calls it, at the same point of its work. It drains the job (every
        message sent before reaches its queue), then each rank writes its file; it returns the
        checkpoint's epoch once the checkpoint is complete on disk.

        Args:
            state: the job's own data to save beside the queues (str keys; numpy arrays and
                plain values as they are, anything else pickled); read it back after a restart
                from `restored_state`.
            timeout: seconds for the whole call (None: no limit).
            node_state: each of this rank's nodes' own data, by node name (any value `state`
                takes); it moves with its node on a restart on another number of ranks: read
                it back from `restored_node_state` on the node's new rank.

        Raises:
            ValueError: no checkpoint directory was given, or ``node_state`` names a node of
                another rank.
            CheckpointError: writing failed, or explicitly acked messages are still in hand.
            GeodeTimeoutError: not complete within ``timeout``.
        """
        if self._checkpointer is None:
            raise ValueError("checkpoint() needs Geode(checkpoint_dir=...) or GEODE_CHECKPOINT_DIR")
        return self._checkpointer.take(state, timeout, node_state)

    @locked
    def maybe_checkpoint(
        self,
        state: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        *,
        node_state: Mapping[str | int, Any] | None = None,
    ) -> int | None:
        """Take a checkpoint if one is due; call it once per step of the job's loop.

        Collective (every rank calls it equally often): due when ``checkpoint_every`` seconds
        passed on rank 0, or ``checkpoint_every_messages`` were sent on some rank, since the last
        checkpoint, or when any rank got SIGTERM (a batch system's time limit): then the
        checkpoint is the last one, the Geode closes, and the job exits with status 0 (restart
        it with ``--restart``). Costs one small collective when nothing is due. Arguments as
        for `checkpoint`.

        Returns:
            The new checkpoint's epoch, or None when none was due.
        """
        if self._checkpointer is None:
            raise ValueError(
                "maybe_checkpoint() needs Geode(checkpoint_dir=...) or GEODE_CHECKPOINT_DIR"
            )
        return self._checkpointer.maybe(state, timeout, node_state)

    @property
    def last_checkpoint(self) -> dict[str, Any] | None:
        """What the last checkpoint of this Geode cost: its epoch, seconds in all and for the
        drain, and bytes written (all ranks, and this rank's file); None before the first."""
        return None if self._checkpointer is None else self._checkpointer.report

    @property
    def restored_epoch(self) -> int | None:
        """The epoch this Geode restarted from (None: it started afresh)."""
        checkpointer = self._checkpointer
        return None if checkpointer is None or self.restored_state is None else checkpointer.epoch

    def restored_node_state(self, node: str | int, default: Any = None) -> Any:
        """The state ``node`` (hosted by this rank) had at the checkpoint this Geode restarted
        from (`checkpoint`'s ``node_state``), on whichever rank hosts it now; ``default`` when
        none was saved for it."""
        index = self._runtime.placement.index(node)
        checkpointer = self._checkpointer
        saved = {} if checkpointer is None else checkpointer.node_state
        return saved.get(index, default)

    # -- nodes -----------------------------------------------------------------------------

    @property
    def node(self) -> str:
        """This rank's own node: ``nodes[rank]``."""
        return self._runtime.placement.names[self.rank]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node of the job, in index order."""
        return self._runtime.placement.names

    @property
    def local_nodes(self) -> tuple[str, ...]:
        """The nodes this rank hosts (all of them in the embedded world)."""
        return tuple(self._runtime.placement.names[index] for index in self._runtime.local)

    def hosts(self, node: str | int) -> bool:
        """True if this rank hosts ``node``."""
        return self._runtime.placement.index(node) in self._runtime.inboxes

    def rank_of(self, node: str | int) -> int:
        """The rank that hosts ``node``."""
        return self._runtime.placement.rank_of(self._runtime.placement.index(node))

    @property
    def transport(self) -> Transport:
        """The transport this Geode sends through."""
        return self._transport

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
        if other_threads() and not runtime.owned():
            if compress is None and not priority and ttl is None and source is None and not ack:
                return runtime.serialised(runtime.send_plain, message, dest, timeout, True)
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
        if compress is None and not priority and ttl is None:  # (the hot path)
            if source is None and not ack:
                return runtime.send_plain(message, dest, timeout, True)
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
        if (
            source is None
            and timeout is None
            and not ack
            and compress is None
            and not priority
            and ttl is None
            and not other_threads()
        ):
            # The commonest send, to a dest sent to before without credits: its lane (stamp,
            # encode, MPI send, records; delivery/direct.py), with nothing else in between.
            try:
                lane = runtime.path.dests.get(dest)
            except TypeError:  # unhashable: not a node name; the general path says so
                lane = None
            if lane is not None and not runtime.sealed and not TRACER.on:
                ticket, stamp = lane.send(
                    message if isinstance(message, Message) else Message(message)
                )
                runtime.sends += 1
                if not runtime.sends & POLL_EVERY_SENDS - 1:
                    runtime.engine.poll()  # (see `Runtime.send`)
                handle = SendHandle(runtime, ticket, stamp, lane.pair if lane.tracked else None)
                if not ticket.done:
                    handle.wait_until(None, None)
                return handle
        if (ack or other_threads()) and not runtime.owned():  # ack: handlers may run here
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
            and node is None
            and source is None
            and type is None
            and timeout is None
            and order is None
            and topic is None
        ):
            # The commonest receive: this rank's node, automatic acks, no window: a message
            # already queued, or one that comes within the first spin (a ping-pong's reply),
            # is taken and decoded without the general machinery.
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
                        engine.poll()
            else:
                spun_for = runtime.spin_plain()
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

    @locked
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

    @locked
    def flush(self) -> None:
        """Send now the small messages `isend` and `Topic.publish` may be holding to batch, and
        pending acks.

        Any geode_mpi call that waits does this too, and every collective call; call it before
        blocking in MPI calls of your own (or in anything else that does not call geode_mpi)
        right after an `isend` or a publish.
        """
        if not self._runtime.closed:
            self._runtime.engine.flush()

    @locked
    def stats(self, node: str | int | None = None) -> NodeStats:
        """Counters of a local node (default: this rank's node): messages, bytes, acks,
        retries, duplicates dropped, dead letters, queue depth and peak, credit waits."""
        return self._runtime.engine.snapshot(self._runtime.local_index(node, "stats"))

    share = staticmethod(share)  # a read-only copy sent to each rank only once (cache.md)

    @locked
    def zero_copy_array(
        self, shape: int | Sequence[int], dtype: Any = "float64"
    ) -> np.ndarray[Any, Any]:
        """An uninitialised array that a topic publishes to this machine's subscribers without
        a copy: it lives in this rank's part of the node's shared segment (in-process memory
        in the embedded world). Fill it, then publish it, or any part of it that is contiguous.

        Publishing hands it over: from then on it is read-only, for you too (write new data
        into a new one); each subscriber on this machine gets a read-only view of the same
        memory, which stays taken while anyone holds a view of it. Subscribers on other
        machines get copies, as for any array; a point-to-point send copies it too and leaves
        it writable. See docs/topics.md, "Zero-copy arrays".

        Args:
            shape: the array's shape (an int for one dimension).
            dtype: its numpy dtype (default float64); not one of Python objects.

        Returns:
            A writable, C-contiguous numpy array. Ordinary memory (a publish then copies it
            once) if it is under 256 KiB, before the first `topic` (the segment is made
            then), with ``GEODE_SHARED_BYTES=0``, or when this rank's part is full: the
            first time it is full or missing, a `RuntimeWarning` says so.

        Raises:
            ClosedError: this Geode is closed.
            TypeError: ``dtype`` holds Python objects.
            ValueError: a negative dimension.
        """
        if self._runtime.closed:
            raise ClosedError("zero_copy_array")
        dims = (shape,) if isinstance(shape, int) else tuple(int(extent) for extent in shape)
        return self._runtime.transport.zero_copy_array(dims, dtype)

    @locked
    def cache_stats(self) -> CacheStats:
        """This rank's payload cache counters: hits, bytes saved, stores, evictions, bytes
        held (see `share`)."""
        return self._runtime.engine.path.cache.stats()

    @locked
    def dead_letters(self, node: str | int | None = None) -> list[DeadLetter]:
        """Messages a local node could not process in ``max_attempts`` tries, oldest first."""
        return list(self._runtime.engine.dead[self._runtime.local_index(node, "dead_letters")])

    @locked
    def pending(self, node: str | int | None = None) -> int:
        """How many messages wait in a local node's queue (expired ones dropped first)."""
        inbox = self._runtime.inboxes[self._runtime.local_index(node, "pending")]
        if not self._runtime.closed:
            self._runtime.poll()
            inbox.purge()
        return len(inbox)

    # -- processing ------------------------------------------------------------------------

    def on(self, type: HandlerKey, node: str | int | None = None) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of messages of ``type``.

        ``run()`` calls it with each such message (of that class or a subclass, unless a more
        specific handler exists); a return value other than None is sent back to the message's
        source as a reply. A handler that raises fails the delivery: the message is delivered
        again after a back-off, then goes to the dead letters.

        Args:
            type: a Message subclass, or a class name.
            node: only for this node (default: every node this rank hosts).
        """
        index = None if node is None else self._runtime.placement.index(node)

        def register_handler(handler: Handler) -> Handler:
            with self._gate:
                self._processor.add(type, index, handler)
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
        count nor until is given) when the whole job is quiescent: no node anywhere has a
        message to process and none is in flight. Waiting for quiescence is collective: every
        rank calls run().

        Args:
            node: serve only this local node (default: every node this rank hosts).
            count: stop after this many messages (handled or failed).
            until: stop once this returns True (checked after each round).
            timeout: stop after this many seconds.
            quiescent: stop when the job is quiescent.

        Returns:
            A RunSummary: messages processed, failures, replies, dead letters, why it ended.
        """
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
        """Send ``value`` back to the sender of a received ``request`` as its reply."""
        self._runtime.reply(request, value, timeout, False)

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
        the type it returned (a Message subclass instance arrives as that class).

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
            NodeNotLocalError: another rank hosts ``source`` (guard the call with
                ``geode.hosts(source)``, or leave ``source`` out).
        """
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        src = self._runtime.local_index(source, "request")
        # Sent as waited for: its node's rank serves it in whatever wait it is in.
        handle = self._runtime.send(message, src, dest, True, timeout, _NO_REPLY, 0, False)
        wanted = handle.id
        assert wanted is not None, "a request's source is local: this rank sent it"
        dst = self._runtime.placement.index(handle.dest)
        found = self._processor.await_reply(src, dst, wanted, deadline)
        if found is not None:
            return self._runtime.deliver(src, found)
        raise self._no_reply(handle, timeout, self._transport.delivers_later)

    def group(self, members: Sequence[str | int], *, sequencer: str | int | None = None) -> Group:
        """A group of nodes that see the messages sent to it in one total order.

        Every message sent with ``group.send()`` goes through the ``sequencer`` node (default:
        the first member), which forwards it to every member; all members, the sender too if
        it is one, receive the group's messages in the same order. The cost: one extra hop,
        and the sequencer's work per message and member. Creating a group involves no
        communication: create it the same way wherever it is used.

        Raises:
            UnknownNodeError: a member or the sequencer is not a node of this job.
            ValueError: no members, or the same member twice.
        """
        indices = [self._runtime.placement.index(member, "member") for member in members]
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
    def topic(
        self,
        name: str,
        publishers: Sequence[str | int],
        subscribers: Sequence[str | int],
        *,
        retain: int = 0,
        total_order: bool = False,
        sequencer: str | int | None = None,
        compress: str | Compression | None = None,
    ) -> Topic:
        """Create a topic: what its publishers publish, each subscriber receives once.

        Collective: every rank calls it with the same arguments, in the same order as its other
        topics (each topic is a set of MPI broadcast streams, built here).

        Args:
            name: the topic's name (unique in the job).
            publishers: the nodes that may publish on it.
            subscribers: the nodes that receive what is published (may include publishers).
            retain: keep each publisher's last ``retain`` messages, for nodes that subscribe
                later: they get those first.
            total_order: every subscriber sees the messages of all publishers in one order
                (they go through the ``sequencer``, default the first publisher); otherwise
                each publisher's messages keep their order (one broadcast stream each).
            sequencer: the node that orders a total-order topic.
            compress: the topic's compression, over the Geode's (see `Geode`): each message
                is compressed once, whatever the number of subscribers.

        Raises:
            UnknownNodeError: a publisher, subscriber or the sequencer is not a node.
            ValueError: the name is taken, no publishers, a node listed twice, retain < 0.
            WorldMismatchError: ranks called it with different arguments.
        """
        chosen = setting(compress)
        made = self._channels.topic(name, publishers, subscribers, retain, total_order, sequencer)
        made.compress = chosen
        return made

    @locked
    def subscribe(
        self,
        nodes: str | int | Sequence[str | int],
        pattern: str | None = None,
        *,
        prefix: str | None = None,
    ) -> Subscription:
        """Subscribe nodes to every topic whose name matches a glob or starts with a prefix:
        the topics that exist now and those created later.

        Collective: every rank calls it with the same arguments, in the same order as its
        topics. The existing topics it matches add the nodes as `Topic.subscribe` does (their
        retained messages first); a topic created later includes them from its start. A node
        already subscribed to a topic, by name or by another pattern, still gets each of its
        messages once.

        Args:
            nodes: the subscribing node, or several.
            pattern: a glob over topic names (``fnmatch``, case-sensitive): ``"sim.*"``,
                ``"sim.?.temp"``, ``"*"`` (every topic).
            prefix: instead of a pattern, a name prefix, as ZeroMQ's subscriptions:
                ``prefix="sim."``.

        Returns:
            The `Subscription` of that pattern; ``receive(topic=subscription)`` takes only
            the messages of the topics it matches.

        Raises:
            UnknownNodeError: a node that is not a node of this job.
            ValueError: neither or both of pattern and prefix, an empty one, no nodes or a
                node twice.
            WorldMismatchError: ranks called it with different arguments.
        """
        return self._channels.subscribe(nodes, pattern, prefix)

    @locked
    def unsubscribe(
        self,
        nodes: str | int | Sequence[str | int],
        pattern: str | None = None,
        *,
        prefix: str | None = None,
    ) -> None:
        """Undo `subscribe` for these nodes (collective): they leave every topic the pattern
        matches, except the ones they subscribed to by name or through another pattern, and
        the topics created later no longer include them. Messages already delivered stay
        in their queues.

        Raises:
            UnknownNodeError: a node that is not a node of this job.
            ValueError: a node that did not subscribe to this pattern (the error names the
                patterns there are), or the mistakes `subscribe` refuses.
            WorldMismatchError: ranks called it with different arguments.
        """
        self._channels.unsubscribe(nodes, pattern, prefix)

    @locked
    def work_queue(
        self,
        name: str,
        consumers: Sequence[str | int],
        *,
        dispatcher: str | int | None = None,
        producers: Sequence[str | int] | None = None,
        prefetch: int = 1,
    ) -> WorkQueue:
        """Create a work queue: each task put on it is processed by exactly one consumer.

        Collective: every rank calls it with the same arguments, in the same order as its
        other work queues and topics. See `WorkQueue`.

        Args:
            name: the queue's name (unique among work queues).
            consumers: the nodes that process its tasks.
            dispatcher: the node that holds the tasks and hands them out (default: the first
                node); its rank hands them out whenever it waits in geode_mpi, `close` too.
            producers: the nodes that will call ``finish()`` (default: every node); `get`
                returns None once all of them have and no task is left.
            prefetch: tasks a consumer asks for ahead (1: one waiting while it works on one).

        Raises:
            UnknownNodeError: a consumer, producer or the dispatcher is not a node.
            ValueError: the name is taken, no consumers, a consumer twice, prefetch < 1.
        """
        return self._channels.work_queue(name, consumers, dispatcher, producers, prefetch)

    @locked
    def executor(
        self,
        client: str | int | None = None,
        *,
        workers: Sequence[str | int] | None = None,
        prefetch: int = 1,
    ) -> GeodeExecutor:
        """A `concurrent.futures.Executor` over a work queue: ``submit`` and ``map`` run
        functions on the worker nodes (see `GeodeExecutor` and docs/executor.md).

        Collective: every rank calls it with the same arguments, in the same order as its
        work queues and topics, then enters ``with`` on the result. On the client's rank the
        block gets the executor; on the others, entering it runs tasks until the client's
        block ends, and gives None. In the embedded world it runs the tasks in a thread.

        Args:
            client: the node that submits tasks and gets their outcomes (default: the first
                node); it is the queue's dispatcher.
            workers: the nodes that run them (default: the first node of every rank but the
                client's; in a job of one rank, the first node but the client).
            prefetch: tasks a worker is handed ahead of the one it runs (1 hides the round
                trip to the client; no queued task is cancellable once handed out).

        Raises:
            UnknownNodeError: the client or a worker is not a node.
            ValueError: no workers, a worker twice, prefetch < 1.
            WorldMismatchError: ranks called it with different arguments.
            ThreadError: MPI runs below the 'serialized' thread level (the client's work is
                done in a thread).
        """
        from geode_mpi.core.executor import open_executor  # (concurrent.futures: on demand)

        return open_executor(self._runtime, self._channels, client, workers, prefetch)

    @locked
    def stop(self, node: str | int, *, source: str | int | None = None) -> None:
        """Send a `Stop` message: ``node``'s run() loop ends when it gets there (in order
        after what ``source`` sent it before)."""
        self._runtime.send(Stop(), source, node, False, None, _NO_REPLY, 0, False)

    # -- lifecycle -------------------------------------------------------------------------

    @locked
    def close(self, timeout: float | None = None) -> None:
        """Deliver everything in flight, then stop sending.

        Collective with several ranks: every rank calls it (leaving a ``with`` block does, and so
        does normal interpreter exit). Until every rank has called it, this rank keeps serving
        requests to its nodes and handing out its work queues' tasks (another rank may be
        waiting for them). It returns once every message sent anywhere in the job has reached
        its destination's queue; queued messages stay receivable afterwards.

        Messages still queued, never received, when the job ends are reported in a warning
        (logger ``geode_mpi``) naming each node, how many and of which types: at the end of a
        ``with`` block, at interpreter exit (and at the end of ``python -m geode_mpi``'s job),
        and, for a Geode closed by this method, at exit if they are still there then.

        Raises:
            GeodeTimeoutError: not finished within ``timeout`` seconds (says what is missing).
        """
        self._close(timeout)
        if self._runtime.unreceived():  # receivable still: said at exit if nobody takes them
            note_closed(self._report_unreceived)

    def _end(self, timeout: float | None = None) -> None:
        """Close as the job's end for this Geode: then say what its nodes never received."""
        self._close(timeout)
        self._report_unreceived()

    def _close(self, timeout: float | None) -> None:
        runtime = self._runtime
        if runtime.closed:
            return
        timeout = check_timeout(timeout)
        runtime.sealed = True  # from here the job sends nothing (its handlers may, until ...)
        if not runtime.all_closing and runtime.transport.delivers_later:
            started = time.monotonic()
            self._serve_until_all_close(timeout)
            if timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 0.0)
        # ... every rank is here: the counts of what was sent are exchanged next.
        runtime.engine.flush()  # acks and credits owed go out before the counts are taken
        if not runtime.finished:  # --stats / --trace, gathered while the transport still runs
            started = time.monotonic()
            gathered = finish_job(self._observed, timeout)
            runtime.finished = True
            if gathered and timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 0.0)
        runtime.transport.close(timeout)
        stop_watchdog(self._watchdog, free=True)
        runtime.engine.closed = True
        runtime.engine.path.cache.clear()  # its peers forget what they held from it alike
        runtime.closed = True
        runtime.plain_queue = NO_FAST_QUEUE
        if self._checkpointer is not None:
            self._checkpointer.close()
        unregister(self)

    def _serve_until_all_close(self, timeout: float | None) -> None:
        """Serve requests and hand out work-queue tasks until every rank is in close(): a rank
        still waiting for a reply or a task needs this one (a barrier posted once, so a close
        retried after a timeout waits on the same one)."""
        runtime = self._runtime
        if runtime.arrived is None:
            runtime.arrived = runtime.transport.all_entered()
        deadline = None if timeout is None else time.monotonic() + timeout
        runtime.serving = True
        try:
            # every rank is meant to be on its way here: a collective wait, not a lone one
            arrived = runtime.arrived
            runtime.all_closing = wait_for(runtime.engine, arrived, deadline, CLOSING_YIELD)
        finally:
            runtime.serving = False
        if not runtime.all_closing:
            raise GeodeTimeoutError(
                f"close() on rank {self.rank} timed out after {timeout:g} s: waiting for the "
                "other ranks to call close()"
            )

    def _report_unreceived(self) -> None:
        self._runtime.report_unreceived()

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._runtime.closed

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
            ClosedError: the Geode is closed (now, or while waiting) and nothing matching is
                queued.
            NodeNotLocalError, UnknownNodeError, DecodeError: as for `receive`.
        """
        runtime = self._runtime
        index = runtime.local_index(node, "areceive")
        timeout = check_timeout(timeout)
        unfiltered = source is None and type is None and topic is None
        match = None if unfiltered else self._matcher(source, type, topic)
        key = None if order is None else order_key(order)
        found = await aio.take(runtime, index, match, key, timeout, FIRST_SPIN)
        if found is not None:
            return aio.locked(runtime, runtime.deliver, index, found)
        raise self._nothing_came("areceive", index, timeout, source, type, True)

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
        matching is left. Filters as for `receive`. Breaking out of the loop leaves the
        remaining messages queued.

        Raises:
            NodeNotLocalError, UnknownNodeError: at once; DecodeError: from the iteration
                that met the message.
        """
        runtime = self._runtime
        index = runtime.local_index(node, "messages")
        unfiltered = source is None and type is None and topic is None
        match = None if unfiltered else self._matcher(source, type, topic)
        return aio.messages(runtime, index, match, runtime.deliver, _is_stop, FIRST_SPIN)

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
            As `send` (SendTimeout, AckTimeout: the message stays in flight or in its outbox).
        """
        runtime = self._runtime
        timeout = check_timeout(timeout)
        deadline = aio.deadline_of(timeout)
        src = self.rank if source is None else runtime.placement.index(source, "source")
        if dest is not None and src in runtime.inboxes:  # (else isend says what is wrong)
            dst = runtime.placement.index(dest, "dest")
            pair = aio.locked(runtime, runtime.engine.pair_out, src, dst)
            if not await aio.room(runtime, pair, deadline):
                raise SendTimeout(-1, runtime.names[src], runtime.names[dst], timeout or 0.0)
        chosen = None if compress is None else setting(compress)
        # as send() sends: at once, not held back for a batch
        args = (message, source, dest, ack, timeout, _NO_REPLY, 0, False, None, chosen)
        handle = aio.locked(runtime, runtime.send, *args)
        if handle.complete():
            return handle
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return await handle.wait_async(left)

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
            NodeNotLocalError: another rank hosts ``source``.
        """
        runtime = self._runtime
        timeout = check_timeout(timeout)
        deadline = aio.deadline_of(timeout)
        src = runtime.local_index(source, "arequest")
        handle = aio.locked(
            runtime, runtime.send, message, src, dest, True, timeout, _NO_REPLY, 0, False
        )
        wanted = handle.id
        assert wanted is not None, "a request's source is local: this rank sent it"
        dst = runtime.placement.index(handle.dest)

        def is_reply(parcel: Parcel) -> bool:
            return parcel.reply_to == wanted and parcel.source == dst

        awaited = self._processor.awaited  # run() leaves the reply for this coroutine
        awaited.add(wanted)
        try:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            found = await aio.take(runtime, src, is_reply, None, left, FIRST_SPIN)
        finally:
            awaited.discard(wanted)
        if found is not None:
            return aio.locked(runtime, runtime.deliver, src, found)
        runtime.check_open("arequest")
        raise self._no_reply(handle, timeout, True)

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

    def _no_reply(self, handle: SendHandle, timeout: float | None, waited: bool) -> ReceiveTimeout:
        """The error of a request (``handle``, sent by this rank) whose reply did not come."""
        src = self._runtime.placement.index(handle.source)
        return ReceiveTimeout(
            handle.source,
            timeout or 0.0,
            handle.dest,
            f"reply to message {handle.id}",
            len(self._runtime.inboxes[src]),
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
        if not runtime.receives & POLL_EVERY_RECEIVES - 1:
            runtime.engine.poll()
        if TRACER.on:
            trace_receive(rank, message, "receive")
    return message


def _is_stop(message: Message) -> bool:
    return isinstance(message, Stop)


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
