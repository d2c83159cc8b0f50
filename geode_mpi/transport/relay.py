"""Large topic frames relayed among a stream's member ranks: split, or down a chain or tree.

Sent by the root to every member in turn, a large array costs the root one copy per member
(with MPICH's shared memory and no single-copy path, the root copies each one into the shared
cells itself, one destination after another). From `SPLIT_MIN` bytes a broadcast to several
members relays its large frames instead (`shape_for`), in one of three shapes:

- a *split* (2 to `SPLIT_MEMBERS` members, below `SPLIT_MAX` bytes): the frames are cut into one
  chunk per member; the root sends each member its chunk, and each member passes its chunk on
  to every other member. The root sends the frames once in all, every member about as much as
  it receives, and every chunk arrives in two steps (what MPI's broadcasts do for long
  messages: a scatter, then an allgather);
- a *chain* or a binary *tree* (larger relays, or more members): the root sends the chunks
  (`CHUNK` bytes) to its children in a tree over the stream's member ranks (the heap layout of
  `geode_mpi.base.collective`, over ``(root, *members)``), and every member forwards each chunk
  to its own children as soon as the chunk has arrived, while the next one arrives
  (pipelined). A chain (one child each) when the relay has at least as many chunks as members,
  so that the pipeline fills in a fraction of its length; else a binary tree (`FANOUT`
  children), whose depth grows as log2 of the members (`fanout_of`).

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

import struct
from collections import deque
from collections.abc import Sequence

from mpi4py import MPI

from geode_mpi.base import collective
from geode_mpi.errors import DecodeError
from geode_mpi.transport.base import Frame
from geode_mpi.transport.pool import BufferPool

TAG_RELAYED = 6  # an envelope whose large frames come down the relay tree
TAG_RELAY_HEAD = 8  # a relay's head, from a member's parent; this tag and above are relay traffic
CHUNK_TAG = 16  # chunks go on CHUNK_TAG + a slot (MPI promises tags up to 32767)
SLOTS = 4096

# Shapes (a head names its relay's): `CHAIN` and `TREE` are the children per member (`tree`);
# `SPLIT`: the frames cut into one piece per member, each piece sent by the root to its member,
# which passes it on to every other member (a scatter, then an all-to-all, as MPI broadcasts
# do for long messages). A split's root sends the frames once in all, and every member sends
# about as much as it receives, in two steps: at 3, 4 and 8 ranks on 2 cores (raw mpi4py,
# Python polling as here, `MPIR_CVAR_CH4_CMA_ENABLE=0`), 512 KiB to 2 MiB took 0.55-0.94 of
# `Bcast`'s time split, 0.88-1.49 down the binary tree, 0.98-2.27 sent directly by the root.
SPLIT = 0
CHAIN = 1
TREE = FANOUT = 2  # children per member at most, down a tree (see below)
# A broadcast to 2 to `SPLIT_MEMBERS` member ranks whose out-of-band frames hold `SPLIT_MIN`
# bytes or more and less than `SPLIT_MAX` is split; a larger one, or one to more members, is
# relayed down a chain or tree from `RELAY_MIN` bytes, to more than `FANOUT` members (from
# 4 MiB the chain's pipeline matches the split, and is what the larger sizes were tuned with);
# anything else goes straight from the root to each member (`shape_for`). Not from 512 KiB:
# there geode's split took 1.29 times the direct sends' time (ab.py, 4 ranks, 8 pairs; its
# heads and Python work per piece weigh more beside a smaller copy), at 1 and 2 MiB 0.91 and
# 0.84 times the binary tree's and chain's (benchmarks/README.md, "Relays, round 4").
SPLIT_MIN = 2**20
SPLIT_MAX = 4 * 2**20
SPLIT_MEMBERS = 8  # each member sends a piece to every other: O(members^2) messages in all
# Down a tree or chain: at 1 and 2 MiB, at 4 ranks on 2 cores under chrt, direct sends and
# relays both took 0.6-0.9 of raw Bcast's time; at normal priority on a quiet machine, direct
# sends 1.26-1.36, relays 0.66-1.11. See benchmarks/README.md.
RELAY_MIN = 2**20
# The root sends at most FANOUT copies down a tree whatever the number of members. A chain
# (one child) when a relay has at least as many chunks as members: at 4 and 8 ranks on 2
# cores, 4 to 64 MiB down a chain took 0.53-0.75 of raw Bcast's time, down a binary tree
# 0.7-1.2 (the root copying twice and bounding the pipeline's rate).
# On Open MPI a root's copies are cheap (its shared-memory sends; raw 1 MiB `Bcast` took 260 us
# there, 960 us on the MPICH wheel without single copy), and a relay's extra hops, each waiting
# for the forwarding member's Python loop, cost more than they save: at 3 and 4 ranks on 2 cores
# (the Open MPI 5.0 wheel, 1 to 16 MiB) relays took 1.24-1.73 of raw `Bcast`'s time, direct
# sends 0.46-0.91 (benchmarks/README.md, "Relays by MPI library").
OPEN_MPI_DIRECT_MEMBERS = 3
# Chunk size: large enough that the Python work per chunk (a probe, a receive, a send per
# child; some 20-40 us) is small beside its copy, small enough to fill the pipeline quickly.
CHUNK = 512 * 1024
# A relay travels in at most this many chunks (a larger one in larger chunks): what a head from
# a damaged or foreign sender can make a member set up is bounded (docs/wire-format.md).
MAX_CHUNKS = 1 << 16
MIN_CHUNK = 4096

_PREFIX = struct.Struct("<4sIq")  # magic, 0, relay number: before a relayed envelope
_HEAD = struct.Struct("<4siqiiiii")  # magic, root, number, chunk, tag, shape, frames, members
_FRAME = struct.Struct("<qq")  # size, page offset of each relayed frame
_MAGIC = b"GDRL"
PREFIX_BYTES = _PREFIX.size


def relayed_envelope(number: int, envelope: bytes) -> bytes:
    """The message a root sends each member for relay ``number``: a prefix, then the
    envelope (16 bytes in, so that its inline frames keep their alignment)."""
    return _PREFIX.pack(_MAGIC, 0, number) + envelope


def read_prefix(buffer: bytes | bytearray | memoryview, source: int) -> int:
    """The relay number a relayed envelope from ``source`` names.

    Raises:
        DecodeError: not a relayed envelope of this geode_mpi.
    """
    if len(buffer) < PREFIX_BYTES or _PREFIX.unpack_from(buffer)[0] != _MAGIC:
        raise DecodeError(f"rank {source} sent a relayed envelope geode_mpi cannot read")
    return int(_PREFIX.unpack_from(buffer)[2])


def fanout_of(chunks: int, members: int) -> int:
    """Children per member of a relay of ``chunks`` chunks to ``members`` members down a tree:
    a chain when its pipeline fills within its length, else `FANOUT`."""
    return CHAIN if chunks >= members else FANOUT


def shape_for(total: int, members: int, family: str | None = None) -> int | None:
    """How a broadcast of ``total`` out-of-band bytes to ``members`` member ranks travels: a
    relay shape (`SPLIT`, `CHAIN`, `TREE`), or None: straight from the root to each member.
    ``family``: the MPI library's (`geode_mpi.base.launch.library_family`); on Open MPI up to
    `OPEN_MPI_DIRECT_MEMBERS` members are always sent to directly."""
    if family == "openmpi" and members <= OPEN_MPI_DIRECT_MEMBERS:
        return None
    if 2 <= members <= SPLIT_MEMBERS and SPLIT_MIN <= total < SPLIT_MAX:
        return SPLIT
    if members > FANOUT and total >= RELAY_MIN:
        return fanout_of(-(-total // chunk_size(total)), members)
    return None


def tree(root: int, members: Sequence[int], rank: int, fanout: int = FANOUT) -> list[int]:
    """The ranks ``rank`` forwards to in the relay tree of ``root`` and ``members``."""
    order = (root, *members)
    at = order.index(rank)
    return [order[v] for v in collective.children(at, len(order), 0, fanout)]


def routes(
    shape: int, root: int, members: Sequence[int], rank: int, chunks: int
) -> tuple[list[int], list[list[int]]]:
    """Where each of a relay's ``chunks`` chunks comes to ``rank`` from (-1 at the root), and
    where ``rank`` sends it on."""
    if shape == SPLIT:
        owners = [members[index % len(members)] for index in range(chunks)]
        if rank == root:
            return [-1] * chunks, [[owner] for owner in owners]
        others = [member for member in members if member != rank]
        sources = [root if owner == rank else owner for owner in owners]
        return sources, [others if owner == rank else [] for owner in owners]
    order = (root, *members)
    above = collective.parent(order.index(rank), len(order), 0, shape)
    children = tree(root, members, rank, shape)
    return [-1 if above is None else order[above]] * chunks, [children] * chunks


def chunk_size(total: int, shape: int = CHAIN, members: int = 1) -> int:
    """The chunk size of a relay of ``total`` bytes: a split's, a piece per member (a
    multiple of 4 KiB); else `CHUNK`, or more for one that would otherwise travel in more than
    `MAX_CHUNKS` chunks (a multiple of 4 KiB)."""
    least = -(-total // (members if shape == SPLIT else MAX_CHUNKS))
    aligned = max(MIN_CHUNK, -(-least // 4096) * 4096)
    return aligned if shape == SPLIT else max(CHUNK, aligned)


def chunk_plan(sizes: Sequence[int], chunk: int) -> list[tuple[int, int, int]]:
    """(frame, start, stop) of every chunk, in the order they travel."""
    return [
        (index, start, min(start + chunk, size))
        for index, size in enumerate(sizes)
        for start in range(0, size, chunk)
    ]


def pack_head(
    root: int,
    number: int,
    chunk: int,
    tag: int,
    frames: Sequence[tuple[int, int]],
    members: Sequence[int],
    shape: int = TREE,
) -> bytes:
    """A relay's head: see the module docstring. ``frames``: (size, page offset) each."""
    parts = [_HEAD.pack(_MAGIC, root, number, chunk, tag, shape, len(frames), len(members))]
    parts += [_FRAME.pack(size, offset) for size, offset in frames]
    parts.append(struct.pack(f"<{len(members)}i", *members))
    return b"".join(parts)


class Head:
    """A relay's head as read (`unpack_head`)."""

    __slots__ = ("chunk", "frames", "members", "number", "root", "shape", "tag")

    def __init__(
        self,
        root: int,
        number: int,
        chunk: int,
        tag: int,
        shape: int,
        frames: list[tuple[int, int]],
        members: list[int],
    ) -> None:
        self.root = root
        self.number = number
        self.chunk = chunk
        self.tag = tag
        self.shape = shape
        self.frames = frames
        self.members = members

    def same_relay(self, other: Head) -> bool:
        """Whether two heads (from two parents) describe one relay alike."""
        return (self.chunk, self.shape, self.frames, self.members) == (
            other.chunk,
            other.shape,
            other.frames,
            other.members,
        )


def unpack_head(buffer: bytes | bytearray | memoryview, source: int, size: int) -> Head:
    """The head from ``source``, in a job of ``size`` ranks.

    Raises:
        DecodeError: not a relay head of this geode_mpi, or one this rank cannot take part in
            (ranks outside the job, a tag or shape out of range, more than `MAX_CHUNKS` chunks).
    """
    if len(buffer) >= _HEAD.size:
        magic, root, number, chunk, tag, shape, n_frames, n_members = _HEAD.unpack_from(buffer)
        end = _HEAD.size + _FRAME.size * n_frames
        if (
            magic == _MAGIC
            and n_frames >= 0
            and n_members >= 0
            and len(buffer) == end + 4 * n_members
            and 0 <= root < size
            and number >= 0
            and chunk >= MIN_CHUNK
            and CHUNK_TAG <= tag < CHUNK_TAG + SLOTS
            and shape in (SPLIT, CHAIN, TREE)
        ):
            frames = [
                _FRAME.unpack_from(buffer, _HEAD.size + _FRAME.size * i) for i in range(n_frames)
            ]
            members = list(struct.unpack_from(f"<{n_members}i", buffer, end))
            if (
                root not in members  # the root is no member of its own tree
                and len(set(members)) == n_members  # and no member is listed twice
                and all(0 <= member < size for member in members)
                and all(size > 0 and 0 <= offset < 4096 for size, offset in frames)
                and sum(-(-size // chunk) for size, _ in frames) <= MAX_CHUNKS
            ):
                return Head(root, number, chunk, tag, shape, frames, members)
    raise DecodeError(f"rank {source} sent a relay head geode_mpi cannot read")


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
