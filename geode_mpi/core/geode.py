"""The Geode: this rank's nodes, point-to-point send and receive, and the progress loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from geode_mpi import codec
from geode_mpi.core.filters import TypeFilter, matcher, type_label
from geode_mpi.core.placement import Placement, node_names
from geode_mpi.core.registry import register, unregister
from geode_mpi.errors import (
    ClosedError,
    DecodeError,
    NodeNotLocalError,
    ReceiveTimeout,
    SendTimeout,
    check_timeout,
)
from geode_mpi.message import Message
from geode_mpi.queues import Inbox, Match, Parcel
from geode_mpi.transport import Backoff, SendTicket, Transport, open_world

ID_BITS = 40  # a message id is (source node index << ID_BITS) | per-node counter
_tuple_new = tuple.__new__  # builds a NamedTuple without its Python-level __new__
POLL_EVERY_SENDS = 8  # isend runs the progress engine on every 8th call (a power of two)


class SendHandle:
    """A send in progress, returned by `Geode.isend` (and, completed, by `Geode.send`).

    Attributes:
        id: the message's job-unique id.
        seq: its sequence number on the (source, dest) pair.
        source: the sending node.
        dest: the destination node.
    """

    __slots__ = ("_geode", "_stamp", "_ticket")

    def __init__(self, geode: Geode, ticket: SendTicket, stamp: codec.Stamp) -> None:
        self._geode = geode
        self._ticket = ticket
        self._stamp = stamp

    @property
    def id(self) -> int:
        """The message's job-unique id."""
        return self._stamp.id

    @property
    def seq(self) -> int:
        """Its sequence number on the (source, dest) pair."""
        return self._stamp.seq

    @property
    def source(self) -> str:
        """The sending node."""
        return self._geode._names[self._stamp.source]

    @property
    def dest(self) -> str:
        """The destination node."""
        return self._geode._names[self._stamp.dest]

    def done(self) -> bool:
        """True once the message's data may be reused (drives progress once if not yet)."""
        if not self._ticket.done:
            self._geode._progress()
        return self._ticket.done

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the message's data may be reused.

        Raises:
            SendTimeout: not done within ``timeout`` seconds; the message stays in flight.
        """
        timeout = check_timeout(timeout)
        ticket = self._ticket
        if not self._geode._wait_for(lambda: ticket.done, timeout):
            raise SendTimeout(self.id, self.source, self.dest, timeout or 0.0)

    def __repr__(self) -> str:
        state = "done" if self._ticket.done else "in flight"
        return f"<SendHandle id={self.id} {self.source}->{self.dest} seq={self.seq} {state}>"


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
    """

    def __init__(
        self,
        nodes: int | Sequence[str] | None = None,
        *,
        transport: Transport | None = None,
        comm: Any = None,
    ) -> None:
        self._transport = transport if transport is not None else open_world(comm)
        self.rank: int = self._transport.rank
        self.size: int = self._transport.size
        names = node_names(nodes, self.size)
        self._transport.check_same(repr(names).encode(), "the node names")
        self._placement = Placement(names, self.size)
        self._names = names
        self._index_of = {name: k for k, name in enumerate(names)}
        self._local = self._placement.hosted_by(self.rank)
        self._inboxes = {index: Inbox() for index in self._local}
        self._seq: dict[tuple[int, int], int] = {}
        self._counter = dict.fromkeys(self._local, 0)
        self._closed = False
        self._sealed = False  # True once close() began: nothing may be sent from then on
        self._sends = 0
        self._transport.attach(self._on_delivery)
        register(self)

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
        self, message: Any, source: str | int | None = None, dest: str | int | None = None
    ) -> SendHandle | None:
        """Start sending; return a handle at once.

        Do not modify arrays in the message until ``handle.done()`` is True (or after
        ``handle.wait()``): they are sent from their own memory.

        Args:
            message: a Message, or any picklable value (wrapped in a Message).
            source: the sending node (default: this rank's node). If another rank hosts it,
                nothing happens here and None is returned.
            dest: the destination node, by name or index.

        Returns:
            A SendHandle, or None when this rank does not host ``source``.

        Raises:
            UnknownNodeError: source or dest is not a node of this job.
            EncodeError: the message cannot be encoded; nothing was sent.
            ClosedError: this Geode is closed.
        """
        if self._sealed:
            raise ClosedError("isend")
        placement = self._placement
        src = self.rank if source is None else placement.index(source, "source")
        try:
            dst = self._index_of.get(dest)  # type: ignore[arg-type]
        except TypeError:  # unhashable: not a node name; let index() say so
            dst = None
        if dst is None:
            if dest is None:
                raise TypeError("send() needs a dest: send(message, dest='node1')")
            dst = placement.index(dest, "dest")
        if src not in self._inboxes:
            return None
        msg = message if isinstance(message, Message) else Message(message)
        key = (src, dst)
        seq = self._seq.get(key, 0)
        count = self._counter[src]
        stamp = _tuple_new(codec.Stamp, ((src << ID_BITS) | count, seq, time.time(), src, dst))
        meta, frames = codec.encode(msg, stamp)
        transport = self._transport
        ticket = transport.send(dst % self.size, meta, frames)
        self._seq[key] = seq + 1
        self._counter[src] = count + 1
        self._sends += 1
        if not self._sends & POLL_EVERY_SENDS - 1:
            # A rank that only sends still drains what arrives; polling on every send would
            # add a probe to the latency of each small message.
            transport.progress()
        return SendHandle(self, ticket, stamp)

    def send(
        self,
        message: Any,
        source: str | int | None = None,
        dest: str | int | None = None,
        *,
        timeout: float | None = None,
    ) -> SendHandle | None:
        """Send a message; return when its data may be reused.

        ``send(msg, "node1", "node2")`` sends from node1 on the rank that hosts it and does
        nothing on other ranks; ``send(msg, dest="node2")`` sends from this rank's node.

        Args:
            message: a Message, or any picklable value (wrapped in a Message).
            source: the sending node (default: this rank's node).
            dest: the destination node, by name or index.
            timeout: seconds to wait for the send to complete (None: no limit).

        Returns:
            The completed SendHandle (with the message's id and seq), or None when this rank
            does not host ``source``.

        Raises:
            UnknownNodeError: source or dest is not a node of this job.
            EncodeError: the message cannot be encoded; nothing was sent.
            SendTimeout: the send did not complete in time; the message stays in flight.
            ClosedError: this Geode is closed.
        """
        if self._sealed:
            raise ClosedError("send")
        if timeout is not None:
            timeout = check_timeout(timeout)
        handle = self.isend(message, source, dest)
        if handle is not None and not handle._ticket.done:
            handle.wait(timeout)
        return handle

    # -- receiving -------------------------------------------------------------------------

    def receive(
        self,
        node: str | int | None = None,
        *,
        source: str | int | None = None,
        type: TypeFilter = None,
        timeout: float | None = None,
    ) -> Message:
        """Take the oldest matching message from a node's queue, waiting for one if needed.

        Messages from one source come out in the order they were sent.

        Args:
            node: the receiving node (default: this rank's node); must be hosted here.
            source: only messages from this node.
            type: only messages of this Message class (or subclasses), or this class name.
            timeout: seconds to wait (None: no limit; 0: do not wait).

        Raises:
            ReceiveTimeout: nothing matching arrived in time (also a TimeoutError).
            NodeNotLocalError: another rank hosts ``node``.
            UnknownNodeError: ``node`` or ``source`` is not a node of this job.
            DecodeError: the message arrived but cannot be decoded here.
            ClosedError: the Geode is closed and nothing matching is queued.
        """
        if timeout is not None:
            timeout = check_timeout(timeout)
        index = self.rank if node is None else self._local_index(node, "receive")
        inbox = self._inboxes[index]
        match = (
            None
            if source is None and type is None
            else matcher(None if source is None else self._placement.index(source, "source"), type)
        )
        found = self._take(inbox, match, timeout)
        if found is not None:
            return codec.decode(found.meta, found.frames, self._names)
        if self._closed:
            raise ClosedError("receive")
        raise ReceiveTimeout(
            self._placement.names[index],
            timeout or 0.0,
            None if source is None else self._placement.names[self._placement.index(source)],
            type_label(type),
            len(inbox),
            waited=self._transport.delivers_later,
        )

    def try_receive(
        self,
        node: str | int | None = None,
        *,
        source: str | int | None = None,
        type: TypeFilter = None,
    ) -> Message | None:
        """Like `receive`, but return None at once when nothing matching is queued."""
        index = self._local_index(node, "try_receive")
        if not self._closed:
            self._progress()
        parcel = self._inboxes[index].pop(
            matcher(None if source is None else self._placement.index(source, "source"), type)
        )
        return None if parcel is None else self._decode(parcel)

    def pending(self, node: str | int | None = None) -> int:
        """How many messages wait in a local node's queue."""
        if not self._closed:
            self._progress()
        return len(self._inboxes[self._local_index(node, "pending")])

    # -- lifecycle -------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Deliver everything in flight, then stop sending.

        Collective with several ranks: every rank calls it (leaving a ``with`` block does, and so
        does normal interpreter exit). It returns once every message sent anywhere in the job has
        reached its destination's queue; queued messages stay receivable afterwards.

        Raises:
            GeodeTimeoutError: not finished within ``timeout`` seconds (says what is missing).
        """
        if self._closed:
            return
        timeout = check_timeout(timeout)
        self._sealed = True  # from here nothing may be sent: the counts are being exchanged
        self._transport.close(timeout)
        self._closed = True
        unregister(self)

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
            self.close()
        else:
            # Another rank may never reach close(): do not wait for it while an error unwinds.
            self._closed = self._sealed = True
            unregister(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<Geode rank {self.rank}/{self.size} node={self.node} "
            f"local={list(self.local_nodes)} {state}>"
        )

    # -- internals -------------------------------------------------------------------------

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

    def _matcher(self, source: str | int | None, type_filter: TypeFilter) -> Match | None:
        index = None if source is None else self._placement.index(source, "source")
        return matcher(index, type_filter)

    def _on_delivery(self, rank: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> None:
        source, dest = codec.route(meta)
        inbox = self._inboxes.get(dest)
        if inbox is None:
            raise DecodeError(
                f"rank {self.rank} received a message from node index {source} for node index "
                f"{dest}, which it does not host: do all ranks use the same nodes?"
            )
        inbox.push(_tuple_new(Parcel, (source, meta, frames, nbytes)))

    def _decode(self, parcel: Parcel) -> Message:
        return codec.decode(parcel.meta, parcel.frames, self._names)

    def _progress(self) -> bool:
        return self._transport.progress()

    def _take(self, inbox: Inbox, match: Match | None, timeout: float | None) -> Parcel | None:
        if self._closed:
            return inbox.pop(match)
        transport = self._transport
        transport.progress()
        found = inbox.pop(match)
        if found is not None or timeout == 0 or not transport.delivers_later:
            return found
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = Backoff()
        while True:
            if transport.spin(backoff.slice(transport.busy)):
                found = inbox.pop(match)
                if found is not None:
                    return found
                backoff.reset()
            if deadline is not None and time.monotonic() >= deadline:
                return None
            backoff.pause(transport.busy)

    def _wait_for(self, done: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._transport.wait(done, deadline)
