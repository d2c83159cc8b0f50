"""The Geode: this rank's nodes, point-to-point send and receive, and the progress loop."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from geode_mpi import codec
from geode_mpi.codec import header
from geode_mpi.core.channels import Channels
from geode_mpi.core.checkpointing import Checkpointer
from geode_mpi.core.filters import TypeFilter, matcher, order_key, type_label
from geode_mpi.core.groups import Group, Sequencer
from geode_mpi.core.handles import SendHandle
from geode_mpi.core.observe import (
    finish_job,
    start_observing,
    start_watchdog,
    stop_watchdog,
    trace_receive,
    trace_send,
)
from geode_mpi.core.placement import ID_BITS, Placement, node_names
from geode_mpi.core.processing import Handler, HandlerKey, Processor, RunSummary, Stop
from geode_mpi.core.registry import note_closed, register, unregister
from geode_mpi.core.termination import term_grace as term_grace_of
from geode_mpi.core.topics import Topic
from geode_mpi.core.workqueues import WorkQueue
from geode_mpi.delivery import DeadLetter, Engine, NodeStats, QueueConfig
from geode_mpi.delivery.config import node_configs
from geode_mpi.delivery.pairs import PairOut
from geode_mpi.errors import (
    ClosedError,
    DecodeError,
    GeodeTimeoutError,
    NodeNotLocalError,
    ReceiveTimeout,
    RestartDirError,
    check_timeout,
)
from geode_mpi.message import Message
from geode_mpi.queues import Match, Parcel
from geode_mpi.tracing import TRACER, now_us
from geode_mpi.transport import Backoff, Transport, open_world
from geode_mpi.transport.gate import locked, other_threads, senders_may_run
from geode_mpi.transport.watchdog import hang_timeout

_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__
# Hot-path names, bound once.
_Stamp = codec.Stamp
_encode = codec.encode
_decode = codec.decode
_TRACKED = codec.FLAG_TRACKED
_NO_REPLY = codec.NO_REPLY
_WAITED = codec.FLAG_WAITED
_TOPIC = codec.FLAG_TOPIC
_FROM_STREAM = codec.FLAG_TOPIC | codec.FLAG_WORK  # from a topic's or a work queue's stream
POLL_EVERY_SENDS = 32  # isend runs the progress engine on every 32nd call (a power of two)
POLL_EVERY_RECEIVES = 16  # a receive that finds a message queued polls on every 16th call
FIRST_SPIN = 20e-6  # a receive that must wait first spins this long, with nothing else set up
log = logging.getLogger("geode_mpi")
_NONE: deque[Any] = deque(maxlen=0)  # always empty: "no fast receive path" (see _plain_queue)
_P = ParamSpec("_P")
_R = TypeVar("_R")


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
    ) -> None:
        hang = hang_timeout()  # a bad setting is refused before anything starts
        grace = term_grace_of(term_grace)
        if restart or (restart is None and os.environ.get("GEODE_RESTART") == "1"):
            check_restart_dir(checkpoint_dir, os.environ.get("GEODE_RESTART_DIR"))
        self._transport = transport if transport is not None else open_world(comm)
        # Every public call holds the gate; send, isend and receive skip it while no other
        # thread exists (see _serialised and docs/point-to-point.md, "Threads").
        self._gate = self._transport.gate
        self._owned = self._gate.owned
        self.rank: int = self._transport.rank
        self.size: int = self._transport.size
        names = node_names(nodes, self.size)
        self._placement = Placement(names, self.size)
        configs = node_configs(self._placement.names, self._placement.index, queue, queues)
        resend_after = check_timeout(resend_after, "resend_after")
        self._transport.check_same(
            repr((names, configs, acks, resend_after)).encode(),
            "the node names and delivery settings",
        )
        self._names = names
        self._index_of = {name: k for k, name in enumerate(names)}
        # dest as given -> (node index, rank, pair) for sends from this rank's node on pairs
        # without credits: what _send would otherwise look up on every message
        self._routes: dict[Any, tuple[int, int, PairOut]] = {}
        self._local = self._placement.hosted_by(self.rank)
        self._acks = bool(acks)
        self._engine = Engine(
            self._transport,
            names,
            self._placement.rank_of,
            self._local,
            configs,
            resend_after,
            self._decode,
        )
        self._inboxes = self._engine.inboxes
        self._queued = {index: inbox.waiting for index, inbox in self._inboxes.items()}
        # This rank's node's queue while receiving from it may take the fast path (automatic
        # acks, no window, not closed); an empty deque otherwise.
        self._plain_queue = self._queued[self.rank] if self.rank in self._engine.plain else _NONE
        self._counter = dict.fromkeys(self._local, 0)
        self._closed = False
        self._sealed = False  # True once close() began: nothing may be sent from then on,
        self._serving = False  # except while close() still serves the other ranks (handlers)
        self._all_closing = False  # close() saw every rank call close()
        self._sends = 0
        self._receives = 0
        self._unfinished_checks = 0  # SendHandle.done() calls that found their send unfinished
        self._processor = Processor(self)
        self._channels = Channels(self)  # its topics and work queues
        self._sequencer = Sequencer(self)
        self._engine.on_forward = self._sequencer.forward
        self._checkpointer: Checkpointer | None = None
        self.restored_state: dict[str, Any] | None = None
        directory = checkpoint_dir or os.environ.get("GEODE_CHECKPOINT_DIR") or None
        if restart is None:
            restart = os.environ.get("GEODE_RESTART") == "1"
        if directory is not None:
            self._checkpointer = Checkpointer(
                self,
                directory,
                keep_checkpoints,
                checkpoint_every,
                checkpoint_every_messages,
                grace,
            )
            if restart:
                self.restored_state = self._checkpointer.restore()
        elif restart:
            raise ValueError("restart needs a checkpoint_dir (or GEODE_CHECKPOINT_DIR)")
        self._finished = False  # close() gathered --stats / --trace
        self._arrived: Callable[[], bool] | None = None  # close()'s barrier for them
        TRACER.start(self.rank, self.size, names)
        self._watchdog = start_watchdog(self, hang)  # --hang-timeout
        start_observing(self)  # --stats / --trace: what to leave if the job fails
        register(self)

    # -- checkpoints -----------------------------------------------------------------------

    @locked
    def checkpoint(
        self, state: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> int:
        """Save the whole job's message state, and ``state``, as one consistent checkpoint.

        Collective: every rank calls it, at the same point of its work. It drains the job (every
        message sent before reaches its queue), then each rank writes its file; it returns the
        checkpoint's epoch once the checkpoint is complete on disk.

        Args:
            state: the job's own data to save beside the queues (str keys; numpy arrays and
                plain values as they are, anything else pickled); read it back after a restart
                from `restored_state`.
            timeout: seconds for the drain (None: no limit).

        Raises:
            ValueError: no checkpoint directory was given.
            CheckpointError: writing failed, or explicitly acked messages are still in hand.
        """
        if self._checkpointer is None:
            raise ValueError("checkpoint() needs Geode(checkpoint_dir=...) or GEODE_CHECKPOINT_DIR")
        return self._checkpointer.take(state, timeout)

    @locked
    def maybe_checkpoint(
        self, state: Mapping[str, Any] | None = None, timeout: float | None = None
    ) -> int | None:
        """Take a checkpoint if one is due; call it once per step of the job's loop.

        Collective (every rank calls it equally often): due when ``checkpoint_every`` seconds
        passed on rank 0, or ``checkpoint_every_messages`` were sent on some rank, since the last
        checkpoint, or when any rank got SIGTERM (a batch system's time limit): then the
        checkpoint is the last one, the Geode closes, and the job exits with status 0 (restart
        it with ``--restart``). Costs one small collective when nothing is due.

        Returns:
            The new checkpoint's epoch, or None when none was due.
        """
        if self._checkpointer is None:
            raise ValueError(
                "maybe_checkpoint() needs Geode(checkpoint_dir=...) or GEODE_CHECKPOINT_DIR"
            )
        return self._checkpointer.maybe(state, timeout)

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

    # -- nodes -----------------------------------------------------------------------------

    @property
    def node(self) -> str:
        """This rank's own node: ``nodes[rank]``."""
        return self._placement.names[self.rank]

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node of the job, in index order."""
        return self._placement.names

    @property
    def local_nodes(self) -> tuple[str, ...]:
        """The nodes this rank hosts (all of them in the embedded world)."""
        return tuple(self._placement.names[index] for index in self._local)

    def hosts(self, node: str | int) -> bool:
        """True if this rank hosts ``node``."""
        return self._placement.index(node) in self._inboxes

    def rank_of(self, node: str | int) -> int:
        """The rank that hosts ``node``."""
        return self._placement.rank_of(self._placement.index(node))

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

        Returns:
            A SendHandle (done at once when another rank hosts ``source``).

        Raises:
            UnknownNodeError: source or dest is not a node of this job.
            EncodeError: the message cannot be encoded; nothing was sent.
            QueueFull: dest's queue is full and its policy is ``raise`` (nothing was sent).
            SendTimeout: dest's queue stayed full for ``timeout`` seconds (nothing was sent).
            ClosedError: this Geode is closed.
        """
        if other_threads() and not self._owned():
            return self._serialised(self._send, message, source, dest, ack, timeout)
        return self._send(message, source, dest, ack, timeout)

    def _send(
        self,
        message: Any,
        source: str | int | None,
        dest: str | int | None,
        ack: bool,
        timeout: float | None,
        reply_to: int = codec.NO_REPLY,
        flags: int = 0,
        batch: bool = True,
        via: codec.Route | None = None,  # a sequencer's or dispatcher's: where it goes on
    ) -> SendHandle:
        if self._sealed and not self._serving:
            raise ClosedError("isend")
        route = None
        if source is None:
            try:
                route = self._routes.get(dest)
            except TypeError:  # unhashable: not a node name; the general path says so
                route = None
        if route is not None:  # this rank's node to a dest sent to before, without credits
            src = self.rank
            dst, rank, pair = route
        else:
            placement = self._placement
            src = self.rank if source is None else placement.index(source, "source")
            try:
                index = self._index_of.get(dest)  # type: ignore[arg-type]
            except TypeError:  # unhashable: not a node name; let index() say so
                index = None
            if index is None:
                if dest is None:
                    raise TypeError("send() needs a dest: send(message, dest='node1')")
                index = placement.index(dest, "dest")
            dst = index
            if src not in self._inboxes:  # its own rank sends it
                return SendHandle.elsewhere(self, src, dst)
            engine = self._engine
            found = engine.pairs_out.get((src, dst))
            if found is not None and (found.credits is None or found.credits > 0):
                pair = found
            else:
                if timeout is None:
                    pair = engine.reserve(src, dst, None, None)
                else:
                    timeout = check_timeout(timeout)
                    pair = engine.reserve(src, dst, time.monotonic() + (timeout or 0.0), timeout)
            rank = dst % self.size
            if source is None and pair.credits is None:
                self._routes[dest] = (dst, rank, pair)  # no credits now means none ever
        traced = TRACER.on
        begun = now_us() if traced else 0.0
        msg = message if isinstance(message, Message) else Message(message)
        engine = self._engine
        seq = pair.next_seq
        count = self._counter[src]
        stamp = _tuple_new(_Stamp, ((src << ID_BITS) | count, seq, time.time(), src, dst))
        tracked = self._acks or ack
        if tracked:
            flags |= _TRACKED | _WAITED if ack else _TRACKED
        meta, frames = _encode(msg, stamp, flags, reply_to, via)
        ticket = self._transport.send(rank, meta, frames, batch)
        self._counter[src] = count + 1
        engine.sent(src, pair, meta, frames, rank, tracked)
        if traced:
            trace_send(self, stamp, msg, meta, frames, begun)
        self._sends += 1
        if not self._sends & POLL_EVERY_SENDS - 1:
            # A rank that only sends still drains what arrives; polling on every send would
            # add a probe to the latency of each small message.
            engine.poll()
        return SendHandle(self, ticket, stamp, pair if tracked else None, ack)

    def send(
        self,
        message: Any,
        source: str | int | None = None,
        dest: str | int | None = None,
        *,
        ack: bool = False,
        timeout: float | None = None,
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
        if (ack or other_threads()) and not self._owned():  # ack: handlers may run here
            return self._serialised(self.send, message, source, dest, ack=ack, timeout=timeout)
        if self._sealed and not self._serving:
            raise ClosedError("send")
        deadline = None
        if timeout is not None:
            timeout = check_timeout(timeout)
            deadline = time.monotonic() + (timeout or 0.0)
        handle = self._send(message, source, dest, ack, timeout, _NO_REPLY, 0, False)
        if not handle._complete():
            handle._wait(deadline, timeout)
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
        topic: Topic | str | None = None,
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
            topic: only messages published on this topic (a Topic or its name).

        Raises:
            ReceiveTimeout: nothing matching arrived in time (also a TimeoutError).
            NodeNotLocalError: another rank hosts ``node``.
            UnknownNodeError: ``node`` or ``source`` is not a node of this job.
            DecodeError: the message arrived but cannot be decoded here.
            ClosedError: the Geode is closed and nothing matching is queued.
        """
        if other_threads() and not self._owned():
            return self._serialised(
                self.receive,
                node,
                source=source,
                type=type,
                timeout=timeout,
                order=order,
                topic=topic,
            )
        if (
            self._plain_queue
            and node is None
            and source is None
            and type is None
            and timeout is None
            and order is None
            and topic is None
        ):
            # The commonest receive: this rank's node, a message already queued, automatic
            # acks, no window: take it and decode it without the general machinery.
            engine = self._engine
            parcel = engine.take_plain(self.rank)
            if parcel is not None:
                self._receives += 1
                if not self._receives & POLL_EVERY_RECEIVES - 1:
                    engine.poll()
                try:
                    message = _decode(parcel.meta, parcel.frames, self._names)
                    if parcel.flags & _FROM_STREAM:
                        self._stream_fields(message, parcel, self.rank)
                    if TRACER.on:
                        trace_receive(self.rank, message, "receive")
                    return message
                except DecodeError as exc:
                    engine.dead_letter(self.rank, parcel, exc, parcel.attempts + 1, False)
                    raise
        if timeout is not None:
            timeout = check_timeout(timeout)
        index = self.rank if node is None else self._local_index(node, "receive")
        match = (
            None
            if source is None and type is None and topic is None
            else self._matcher(source, type, topic)
        )
        found = self._take(index, match, None if order is None else order_key(order), timeout)
        if found is not None:
            return self._deliver(index, found)
        inbox = self._inboxes[index]
        if self._closed:
            raise ClosedError("receive")
        raise ReceiveTimeout(
            self._placement.names[index],
            timeout or 0.0,
            None if source is None else self._placement.names[self._placement.index(source)],
            type_label(type),
            len(inbox),
            waited=self._transport.delivers_later or senders_may_run(),
        )

    @locked
    def try_receive(
        self,
        node: str | int | None = None,
        *,
        source: str | int | None = None,
        type: TypeFilter = None,
        order: str | None = None,
        topic: Topic | str | None = None,
    ) -> Message | None:
        """Like `receive`, but return None at once when nothing matching is queued."""
        index = self._local_index(node, "try_receive")
        if not self._closed:
            self._progress()
        found = self._engine.take(
            index,
            self._matcher(source, type, topic),
            order_key(order),
            False,
        )
        return None if found is None else self._deliver(index, found)

    @locked
    def flush(self) -> None:
        """Send now the small messages `isend` may be holding to batch, and pending acks.

        Any geode_mpi call that waits does this too; call it before blocking in MPI calls of
        your own (or in anything else that does not call geode_mpi) right after an `isend`.
        """
        if not self._closed:
            self._engine.flush()

    @locked
    def stats(self, node: str | int | None = None) -> NodeStats:
        """Counters of a local node (default: this rank's node): messages, bytes, acks,
        retries, duplicates dropped, dead letters, queue depth and peak, credit waits."""
        return self._engine.snapshot(self._local_index(node, "stats"))

    @locked
    def dead_letters(self, node: str | int | None = None) -> list[DeadLetter]:
        """Messages a local node could not process in ``max_attempts`` tries, oldest first."""
        return list(self._engine.dead[self._local_index(node, "dead_letters")])

    @locked
    def pending(self, node: str | int | None = None) -> int:
        """How many messages wait in a local node's queue."""
        if not self._closed:
            self._progress()
        return len(self._inboxes[self._local_index(node, "pending")])

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
        index = None if node is None else self._placement.index(node)

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
        return self._serialised(self._run, node, count, until, timeout, quiescent)

    def _run(
        self,
        node: str | int | None,
        count: int | None,
        until: Callable[[], bool] | None,
        timeout: float | None,
        quiescent: bool | None,
    ) -> RunSummary:
        self._check_open("run")
        served = list(self._local) if node is None else [self._local_index(node, "run")]
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if quiescent is None:
            quiescent = count is None and until is None
        return self._processor.run(served, count, until, deadline, quiescent)

    @locked
    def reply(self, request: Message, value: Any, *, timeout: float | None = None) -> None:
        """Send ``value`` back to the sender of a received ``request`` as its reply."""
        self._reply(request, value, timeout, False)

    def _reply(self, request: Message, value: Any, timeout: float | None, batch: bool) -> None:
        # The run loop's replies may be batched: the loop flushes them whenever it is idle.
        if request.id is None or request.source is None or request.dest is None:
            raise ValueError(f"reply() needs a received message, got {request!r}")
        self._send(value, request.dest, request.source, False, timeout, request.id, 0, batch)

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
        src = self._local_index(source, "request")
        # Sent as waited for: its node's rank serves it in whatever wait it is in.
        handle = self._send(message, src, dest, True, timeout, _NO_REPLY, 0, False)
        wanted = handle._stamp.id
        found = self._processor.await_reply(src, handle._stamp.dest, wanted, deadline)
        if found is not None:
            return self._deliver(src, found)
        raise ReceiveTimeout(
            handle.source,
            timeout or 0.0,
            handle.dest,
            f"reply to message {wanted}",
            len(self._inboxes[src]),
            waited=self._transport.delivers_later,
        )

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
        indices = [self._placement.index(member, "member") for member in members]
        if not indices:
            raise ValueError("a group needs at least one member")
        if len(set(indices)) != len(indices):
            raise ValueError(f"group members must be distinct, got {list(members)!r}")
        chosen = indices[0] if sequencer is None else self._placement.index(sequencer, "sequencer")
        name = "+".join(self._names[index] for index in indices)
        return Group(self, name, indices, chosen)

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

        Raises:
            UnknownNodeError: a publisher, subscriber or the sequencer is not a node.
            ValueError: the name is taken, no publishers, a node listed twice, retain < 0.
            WorldMismatchError: ranks called it with different arguments.
        """
        return self._channels.topic(name, publishers, subscribers, retain, total_order, sequencer)

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
    def stop(self, node: str | int, *, source: str | int | None = None) -> None:
        """Send a `Stop` message: ``node``'s run() loop ends when it gets there (in order
        after what ``source`` sent it before)."""
        self._send(Stop(), source, node, False, None, _NO_REPLY, 0, False)

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
        if self._unreceived():  # receivable still: said at exit if nobody takes them
            note_closed(self)

    def _end(self, timeout: float | None = None) -> None:
        """Close as the job's end for this Geode: then say what its nodes never received."""
        self._close(timeout)
        self._report_unreceived()

    def _close(self, timeout: float | None) -> None:
        if self._closed:
            return
        timeout = check_timeout(timeout)
        self._sealed = True  # from here the job sends nothing (its handlers may, until ...)
        if not self._all_closing and self._transport.delivers_later:
            started = time.monotonic()
            self._serve_until_all_close(timeout)
            if timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 0.0)
        # ... every rank is here: the counts of what was sent are exchanged next.
        self._engine.flush()  # acks and credits owed go out before the counts are taken
        if not self._finished:  # --stats / --trace, gathered while the transport still runs
            started = time.monotonic()
            gathered = finish_job(self, timeout)
            self._finished = True
            if gathered and timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 0.0)
        self._transport.close(timeout)
        stop_watchdog(self._watchdog, free=True)
        self._engine.closed = True
        self._closed = True
        self._plain_queue = _NONE
        if self._checkpointer is not None:
            self._checkpointer.close()
        unregister(self)

    def _serve_until_all_close(self, timeout: float | None) -> None:
        """Serve requests and hand out work-queue tasks until every rank is in close(): a rank
        still waiting for a reply or a task needs this one (a barrier posted once, so a close
        retried after a timeout waits on the same one)."""
        if self._arrived is None:
            self._arrived = self._transport.all_entered()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._serving = True
        try:
            self._all_closing = self._engine.wait(self._arrived, deadline)
        finally:
            self._serving = False
        if not self._all_closing:
            raise GeodeTimeoutError(
                f"close() on rank {self.rank} timed out after {timeout:g} s: waiting for the "
                "other ranks to call close()"
            )

    def _unreceived(self) -> dict[str, Counter[str]]:
        """The messages queued at this rank's nodes, by node and type."""
        return {
            self._names[index]: Counter(
                codec.short_name(codec.peek(parcel.meta).class_name) for parcel in inbox
            )
            for index, inbox in self._inboxes.items()
            if len(inbox)
        }

    def _report_unreceived(self) -> None:
        left = self._unreceived()
        if not left:
            return
        parts = []
        for node, types in left.items():
            kinds = ", ".join(f"{count} {name}" for name, count in types.most_common())
            parts.append(f"{node}: {sum(types.values())} message(s) ({kinds})")
        log.warning(
            "the job ends with messages never received: %s (receive() them, or run() their "
            "handlers, before the end)",
            "; ".join(parts),
        )

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._closed

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
            self._closed = self._sealed = True
            self._plain_queue = _NONE
            stop_watchdog(self._watchdog, free=False)
            unregister(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Geode rank {self.rank}/{self.size} node={self.node} "
            f"local={list(self.local_nodes)} {state}>"
        )

    # -- internals -------------------------------------------------------------------------

    def _serialised(self, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``call(*args, **kwargs)`` holding the gate: the hot paths' way in once other
        threads exist (the rest of the public calls always hold it, see `locked`)."""
        gate = self._gate
        gate.enter()
        try:
            return call(*args, **kwargs)
        finally:
            gate.release()

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise ClosedError(operation)

    def _local_index(self, node: str | int | None, call: str) -> int:
        if node is None:
            return self.rank
        index = self._placement.index(node)
        if index not in self._inboxes:
            name = self._placement.names[index]
            raise NodeNotLocalError(call, name, self.rank, self._placement.rank_of(index))
        return index

    def _matcher(
        self, source: str | int | None, type_filter: TypeFilter, topic: Topic | str | None = None
    ) -> Match | None:
        if topic is not None and source is None and type_filter is None:
            return self._channels.topic_named(topic).match  # made once per topic
        index = None if source is None else self._placement.index(source, "source")
        wire = None if topic is None else self._channels.topic_named(topic).wire
        return matcher(index, type_filter, wire)

    def _decode(self, parcel: Parcel, index: int | None = None) -> Message:
        """Decode a queued parcel; ``index``: the node that takes it (None: only looking)."""
        message = codec.decode(parcel.meta, parcel.frames, self._names)
        if parcel.flags & _FROM_STREAM:
            self._stream_fields(message, parcel, index)
        return message

    def _stream_fields(self, message: Message, parcel: Parcel, index: int | None) -> None:
        """A topic message as its subscriber sees it (its topic, itself as dest), or a work
        queue's task as its consumer does (its queue, the dispatcher as source; taking it for
        the first time asks for the next one)."""
        state = message.__dict__
        if parcel.flags & _TOPIC:
            state["topic"] = self._engine.topics.names.get(header.topic_number(parcel.meta))
            state["dest"] = None if index is None else self._names[index]
            return
        queue = self._channels.work_queues.get(parcel.source)
        if queue is None:  # a damaged flag: not from a work queue's stream
            raise DecodeError(
                f"message {message.id} from node index {parcel.source} is flagged as a work "
                "queue's task, but no work queue has that stream"
            )
        if index is not None and not parcel.attempts:
            queue.taken(index, message)
        else:
            state.update(work_queue=queue.name, source=queue.dispatcher)

    def _deliver(self, index: int, found: tuple[Parcel, Any]) -> Message:
        """Decode a taken parcel; one that cannot be decoded goes to the dead letters."""
        parcel, receipt = found
        try:
            message = self._decode(parcel, index)
        except DecodeError as exc:
            if receipt is not None:
                self._engine.in_hand -= 1
            # Taken without a receipt it already counts as processed: record it all the same.
            self._engine.dead_letter(index, parcel, exc, parcel.attempts + 1, receipt is not None)
            raise
        if receipt is not None:
            message.__dict__["_receipt"] = receipt
        if TRACER.on:
            trace_receive(index, message, "receive")
        return message

    def _progress(self) -> bool:
        return self._engine.poll()

    def _take(
        self, index: int, match: Match | None, key: Any, timeout: float | None
    ) -> tuple[Parcel, Any] | None:
        engine = self._engine
        if self._closed:
            return engine.take(index, match, key, False)
        self._receives += 1
        found = engine.take(index, match, key, False) if self._queued[index] else None
        if found is not None:
            # Taken without polling MPI first; every POLL_EVERY_RECEIVES-th receive polls
            # anyway, to keep what arrives (and acks) moving while a backlog is drained.
            if not self._receives & POLL_EVERY_RECEIVES - 1:
                engine.poll()
            return found
        transport = self._transport
        if timeout == 0 or not (
            transport.delivers_later or (other_threads() and senders_may_run())
        ):
            engine.poll()
            found = engine.take(index, match, key, False)
            if found is None and timeout != 0 and self._inboxes[index].next_ready():
                return self._take_retry(index, match, key, timeout)
            return found
        # Nothing queued: wait, spinning on MPI's probe first (a poll here would only probe
        # the same empty queue once more). A reply in a ping-pong comes within this first
        # spin, before any of the waiting machinery below is set up.
        if (
            not engine.forwards
            and not transport.busy
            and transport.spin(FIRST_SPIN)
            and (found := engine.take(index, match, key, False)) is not None
        ):
            return found
        started = time.perf_counter()
        try:
            return self._wait_take(index, match, key, timeout, started)
        finally:
            self._waited(index, started, "wait: receive")

    def _take_retry(
        self, index: int, match: Match | None, key: Any, timeout: float | None
    ) -> tuple[Parcel, Any] | None:
        """One process, nothing else can arrive: wait out the back-off of a failed message
        put back for a retry, if it ends within ``timeout``, and take what is then ready."""
        inbox = self._inboxes[index]
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.perf_counter()
        try:
            while delay := inbox.next_ready():
                if deadline is not None and time.monotonic() + delay > deadline:
                    return None  # it comes due after the timeout: nothing can arrive before
                time.sleep(delay)
                found = self._engine.take(index, match, key, False)
                if found is not None:
                    return found
            return None
        finally:
            self._waited(index, started, "wait: receive")

    def _wait_take(
        self, index: int, match: Match | None, key: Any, timeout: float | None, started: float
    ) -> tuple[Parcel, Any] | None:
        engine = self._engine
        transport = self._transport
        deadline = None if timeout is None else time.monotonic() + timeout
        gate = self._gate
        backoff = Backoff(gate=gate)  # lets other threads in while this one waits
        turns = gate.turns
        inbox = self._inboxes[index]
        while True:
            if engine.waited:  # requests to this rank's nodes are answered while it waits
                self._processor.serve_waited()
                found = engine.take(index, match, key, False)
                if found is not None:
                    return found
            forwarded = bool(engine.forwards)
            if forwarded:
                # A sequencer's forwards may land in this very queue (its node is a member):
                # look before spinning, or they would wait for the next arrival from MPI.
                engine.forward()
            if (
                forwarded
                or gate.turns != turns  # other threads ran: one may have delivered it
                or transport.spin(backoff.slice(transport.busy))
                or inbox.next_ready() == 0
            ):
                turns = gate.turns
                found = engine.take(index, match, key, False)
                if found is not None:
                    return found
                backoff.reset()
            if engine.resend_after is not None:
                engine.poll()
            engine.flush_after(started)  # the senders may be waiting for acks or credits
            if deadline is not None and time.monotonic() >= deadline:
                return None
            backoff.pause(transport.busy)
            if self._closed:  # by another thread, while this one paused
                return None
            if not (transport.delivers_later or senders_may_run()):
                # One process, and the threads that could have sent to it are gone.
                return engine.take(index, match, key, False)

    def _waited(self, index: int, started: float, what: str) -> None:
        """Count the time node ``index`` spent waiting since ``started`` (perf_counter)."""
        seconds = time.perf_counter() - started
        self._engine.stats[index].wait_seconds += seconds
        if TRACER.on:
            TRACER.span(what, index, now_us() - seconds * 1e6)

    def _wait_until(self, done: Callable[[], bool], deadline: float | None) -> bool:
        return self._engine.wait(done, deadline)


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
