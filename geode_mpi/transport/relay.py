"""Large topic frames relayed among a stream's member ranks: split, or down a chain or tree.

Sent by the root to every member in turn, a large array costs the root one copy per member;
from `SPLIT_MIN` bytes a broadcast to several members relays its large frames instead, split
among the members or down a chain or tree (`shape_for`; the shapes, routes, chunk sizes and
the head are in `geode_mpi.transport.relayplan`, with no MPI). This module moves them.

Order is kept by sending the envelope itself from the root to every member, as for any other
broadcast (`TAG_RELAYED`): per (root, member) MPI keeps it in order with everything else the root
sends that member, and the member's arrival queue holds later messages from the root until the
relayed frames are complete. Only the frames travel between members, on their own tags:

- a *head* (`TAG_RELAY_HEAD`), from each rank that sends this member chunks (its *parents*: in a
  chain or tree its one parent; in a split the root and every other member that owns a chunk):
  which relay (root, number), its shape, its frames' sizes, the members, the chunk size and the
  tag the chunks from that parent come on, so a member can place and forward chunks before its
  envelope has arrived. Every rank derives from a head which chunks come from which parent and
  go on to which children (`routes`); a head from a rank that is not a parent, or a second one
  from the same parent, is refused;
- the chunks, in order, on the chunk tag the parent's head names. A rank that forwards two
  relays to one child at once gives each its own tag (`CHUNK_TAG` + a slot), so chunks never
  interleave on one tag; MPI keeps each tag's chunks in order behind their head.

A member posts the receives of every chunk a parent sends it, straight into the chunk's slice of
the frame's buffer, as soon as that parent's head arrives, and forwards each chunk once it is
complete: MPI then moves the data during any call, and no chunk waits for Python to probe it.
(Probed one by one instead, a forwarding member's probe loop kept finding the next chunk of a
16 MiB relay and forwarded nothing until the last had arrived: no pipeline at all.) A parent's
head comes before its chunks, so a probe that matches any tag always finds it first.

A member's relay is done once every chunk has arrived *and* has gone on to its children: its
envelope is delivered only then, so a member waiting in receive(), run() or close() keeps
forwarding, and close() and drain() (which wait for every envelope) leave nothing in flight.
See docs/wire-format.md, "Relayed frames".
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from mpi4py import MPI

from geode_mpi.errors import DecodeError
from geode_mpi.transport.base import Frame
from geode_mpi.transport.pool import BufferPool
from geode_mpi.transport.relayplan import (
    CHUNK_TAG,
    PREFIX_BYTES,
    SLOTS,
    SPLIT,
    TAG_RELAY_HEAD,
    TAG_RELAYED,
    Head,
    chunk_plan,
    chunk_size,
    fanout_of,
    pack_head,
    read_prefix,
    relayed_envelope,
    routes,
    shape_for,
    unpack_head,
)

# What the MPI transport takes from here (the plan's own names are in relayplan).
__all__ = [
    "PREFIX_BYTES",
    "TAG_RELAYED",
    "TAG_RELAY_HEAD",
    "Relays",
    "read_prefix",
    "relayed_envelope",
    "shape_for",
]


class _Relay:
    """One relayed message passing through this rank: its buffers, where each chunk comes
    from and goes on to, the receives posted and the chunks forwarded."""

    __slots__ = (
        "buffers",
        "children",
        "chunks",
        "forwarded",
        "head",
        "heard",
        "incoming",
        "missing",
        "order",
        "received",
        "routes",
        "sends",
        "sources",
    )

    def __init__(
        self, buffers: list[Frame], head: Head, sources: list[int], routes: list[list[int]]
    ) -> None:
        self.buffers = buffers
        self.head = head
        self.chunks = [
            buffers[f][a:b] for f, a, b in chunk_plan([b.nbytes for b in buffers], head.chunk)
        ]
        self.sources = sources
        self.routes = routes
        # The chunks this rank sends on, in the order it sends them (each child receives its
        # chunks from this rank in chunk order, on one tag).
        self.order = [index for index, route in enumerate(self.routes) if route]
        self.children: dict[int, int] = {}  # child rank -> its chunk tag
        self.heard: set[int] = set()  # the parents whose heads have arrived
        # Per parent, the chunk receives posted and not yet complete, in chunk order
        # (chunk index, request): MPI completes them in that order.
        self.incoming: dict[int, deque[tuple[int, MPI.Request]]] = {}
        self.received = [source < 0 for source in sources]  # by chunk
        self.missing = self.received.count(False)
        self.forwarded = 0  # of `order`
        self.sends: list[MPI.Request] = []  # sends to the children not yet complete

    @property
    def done(self) -> bool:
        return self.forwarded == len(self.order) and not self.missing and not self.sends

    @property
    def forwarding(self) -> bool:
        return self.forwarded < len(self.order)


class Relays:
    """The relays this rank roots, receives and forwards.

    Args:
        comm: the transport's communicator.
        pool: where received frames land.
    """

    def __init__(self, comm: MPI.Intracomm, pool: BufferPool) -> None:
        self._comm = comm
        self._pool = pool
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._next = 0  # this rank's next relay number
        self._live: dict[tuple[int, int], _Relay] = {}  # (root, number) -> relay, until collected
        self._status = MPI.Status()
        # Relays with chunks or sends still in flight here: a plain list, since every poll of
        # the transport asks whether it is empty.
        self.moving: list[_Relay] = []
        self.count = 0  # relays this rank has rooted or received (for tests and diagnostics)

    def __len__(self) -> int:
        return len(self._live)

    def start(
        self,
        shape: int,
        members: Sequence[int],
        frames: Sequence[Frame],
        offsets: Sequence[int],
    ) -> tuple[int, list[MPI.Request]]:
        """Root a relay of ``frames`` (contiguous uint8) to ``members`` in ``shape``
        (`shape_for`): post every head and chunk to this rank's children now. Returns its
        number and the requests."""
        number = self._next
        self._next += 1
        self.count += 1
        described = [
            (frame.nbytes, offset % 4096 // 16 * 16)
            for frame, offset in zip(frames, offsets, strict=True)
        ]
        total = sum(frame.nbytes for frame in frames)
        chunk = chunk_size(total, shape, len(members))
        if shape != SPLIT:
            shape = fanout_of(
                len(chunk_plan([frame.nbytes for frame in frames], chunk)), len(members)
            )
        head = Head(self.rank, number, chunk, 0, shape, described, list(members))
        count = len(chunk_plan([frame.nbytes for frame in frames], chunk))
        relay = _Relay(list(frames), head, *routes(shape, self.rank, members, self.rank, count))
        self._assign(relay)
        isend = self._comm.Isend
        requests = [
            isend(
                pack_head(self.rank, number, chunk, tag, described, members, shape),
                child,
                TAG_RELAY_HEAD,
            )
            for child, tag in relay.children.items()
        ]
        children = relay.children
        for piece, route in zip(relay.chunks, relay.routes, strict=True):
            requests += [isend([piece, MPI.BYTE], child, children[child]) for child in route]
        return number, requests

    def _assign(self, relay: _Relay) -> None:
        """A chunk tag for each of ``relay``'s children that no relay still being forwarded
        to it from this rank uses."""
        taken = {
            (child, tag)
            for other in self.moving
            if other.forwarding
            for child, tag in other.children.items()
        }
        wanted = {child: 0 for index in relay.order for child in relay.routes[index]}
        for child in wanted:
            slot = next((s for s in range(SLOTS) if (child, CHUNK_TAG + s) not in taken), None)
            if slot is None:
                raise RuntimeError(f"more than {SLOTS} relays to rank {child} at once")
            relay.children[child] = CHUNK_TAG + slot

    def take(self, message: MPI.Message, status: MPI.Status) -> None:
        """Receive a probed head. A probed chunk is one no head announced (a member posts
        every announced chunk's receive with its head): refused."""
        source, tag = status.Get_source(), status.Get_tag()
        if tag == TAG_RELAY_HEAD:
            buffer = bytearray(status.Get_count(MPI.BYTE))
            message.Recv(buffer)
            self._head(source, buffer)
            return
        message.Recv(bytearray(status.Get_count(MPI.BYTE)))  # (so that its send completes)
        raise DecodeError(f"rank {source} sent a relayed chunk (tag {tag}) no relay head announced")

    def _head(self, source: int, buffer: bytearray) -> None:
        head = unpack_head(buffer, source, self.size)
        if self.rank not in head.members:
            raise DecodeError(f"rank {source} sent a relay head of a tree without this rank")
        relay = self._live.get((head.root, head.number))
        if relay is None:
            count = len(chunk_plan([size for size, _ in head.frames], head.chunk))
            sources, sends_to = routes(head.shape, head.root, head.members, self.rank, count)
            if source in sources:
                relay = self._open(source, head, sources, sends_to)
        elif not head.same_relay(relay.head):
            raise DecodeError(
                f"rank {source} sent a head of relay {head.number} of {head.root} unlike its other"
            )
        if relay is None or source not in relay.sources or source in relay.heard:
            raise DecodeError(
                f"rank {source} sent the head of relay {head.number} of {head.root} unasked "
                "(not this rank's parent there, or twice)"
            )
        relay.heard.add(source)
        irecv = self._comm.Irecv
        relay.incoming[source] = deque(
            (index, irecv([piece, MPI.BYTE], source, head.tag))
            for index, piece in enumerate(relay.chunks)
            if relay.sources[index] == source
        )

    def _open(
        self, source: int, head: Head, sources: list[int], sends_to: list[list[int]]
    ) -> _Relay:
        """Set up a relay on its first head (from any of this rank's parents in it): its
        buffers, and a head to each of this rank's children, so that they post their receives
        before the chunks come."""
        try:  # reserved, not touched: only the chunks that arrive take memory
            buffers = [self._pool.take(size, offset) for size, offset in head.frames]
        except MemoryError as exc:
            total = sum(size for size, _ in head.frames)
            raise DecodeError(f"rank {source} sent a relay head of {total} bytes") from exc
        self.count += 1
        relay = _Relay(buffers, head, sources, sends_to)
        self._assign(relay)
        self._live[(head.root, head.number)] = relay
        self.moving.append(relay)
        for child, tag in relay.children.items():
            message = pack_head(
                head.root, head.number, head.chunk, tag, head.frames, head.members, head.shape
            )
            relay.sends.append(self._comm.Isend(message, child, TAG_RELAY_HEAD))
        return relay

    def advance(self) -> bool:
        """Forward the chunks that have arrived; True if any relay finished here.

        Raises:
            DecodeError: a parent sent a chunk of another size than its head announced.
        """
        finished = False
        status = self._status
        for relay in self.moving:
            for queue in relay.incoming.values():
                # Each chunk goes on as soon as it is complete, before the next is tested:
                # every Test moves data, and testing on first kept a forwarding member here
                # until the last chunk had arrived, its children waiting.
                while queue and self._arrived(relay, queue[0][1], status):
                    index = queue.popleft()[0]
                    piece = relay.chunks[index]
                    if status.Get_count(MPI.BYTE) != piece.nbytes:
                        self._drop(relay, None)
                        raise DecodeError(
                            f"rank {status.Get_source()} sent a relayed chunk of "
                            f"{status.Get_count(MPI.BYTE)} bytes, not {piece.nbytes}"
                        )
                    relay.received[index] = True
                    relay.missing -= 1
                    self._forward(relay)
            if relay.sends and MPI.Request.Testall(relay.sends):
                relay.sends = []
            finished = finished or relay.done
        if finished:
            self.moving = [relay for relay in self.moving if not relay.done]
        return finished

    def _forward(self, relay: _Relay) -> None:
        """Send on the chunks that have arrived, in order."""
        order, received = relay.order, relay.received
        isend = self._comm.Isend
        children = relay.children
        while relay.forwarded < len(order) and received[order[relay.forwarded]]:
            index = order[relay.forwarded]
            piece = relay.chunks[index]
            relay.sends += [
                isend([piece, MPI.BYTE], child, children[child]) for child in relay.routes[index]
            ]
            relay.forwarded += 1

    def _arrived(self, relay: _Relay, request: MPI.Request, status: MPI.Status) -> bool:
        """Whether a chunk receive is complete (its status in ``status``)."""
        try:
            return bool(request.Test(status))
        except MPI.Exception as exc:  # a chunk longer than announced (MPI_ERR_TRUNCATE)
            self._drop(relay, request)
            raise DecodeError(
                f"a relayed chunk did not fit where its head placed it: {exc}"
            ) from exc

    def _drop(self, relay: _Relay, failed: MPI.Request | None) -> None:
        """Give up a relay whose parent sent a chunk its head did not announce: its other
        receives (all but ``failed``) are cancelled (what its parents send on is then a chunk
        without a head), and it never completes (its envelope, if one comes, waits for ever,
        as for a lost one)."""
        for queue in relay.incoming.values():
            for _, request in queue:
                if request is not failed:
                    request.Cancel()
                    request.Free()
        relay.incoming = {}
        self.moving = [other for other in self.moving if other is not relay]

    def sends(self) -> list[MPI.Request]:
        """Every send in flight for a relay here (what a spin may test and complete)."""
        found = []
        for relay in self.moving:
            found += relay.sends
        return found

    def receives(self) -> list[MPI.Request]:
        """The next chunk receive from each parent of each relay here: what a spin watches
        without completing it (`MPI.Request.Get_status` of each: `Get_status_any` is MPI 4.1,
        which Open MPI 5.0 lacks), so that `advance` reads its status."""
        return [queue[0][1] for relay in self.moving for queue in relay.incoming.values() if queue]

    def collect(self, root: int, number: int) -> list[Frame] | None:
        """The frames of relay ``number`` from ``root`` once it is done here (and forget it),
        else None."""
        relay = self._live.get((root, number))
        if relay is None or not relay.done:
            return None
        del self._live[(root, number)]
        return relay.buffers

    def summary(self) -> str:
        return f"{len(self.moving)} relayed message(s) moving" if self.moving else ""
