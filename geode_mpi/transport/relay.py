"""Large topic frames down a pipelined relay chain or tree of the stream's member ranks.

Sent by the root to every member in turn, a large array costs the root one copy per member
(with MPICH's shared memory and no single-copy path, the root copies each one into the shared
cells itself). Above `RELAY_MIN` bytes, a broadcast to more than `FANOUT` members relays its
large frames instead: the root sends them to its children in a tree over the stream's member
ranks (the heap layout of `geode_mpi.base.collective`, over ``(root, *members)``), and every
member forwards each *chunk* to its own children as soon as the chunk has arrived, while the
next one arrives (pipelined). The tree is a chain (one child each) when the relay has at least
as many chunks as members, so that the pipeline fills in a fraction of its length; else a
binary tree (`FANOUT` children), whose depth grows as log2 of the members (`fanout_of`).

Order is kept by sending the envelope itself from the root to every member, as for any other
broadcast (`TAG_RELAYED`): per (root, member) MPI keeps it in order with everything else the root
sends that member, and the member's arrival queue holds later messages from the root until the
relayed frames are complete. Only the frames come from the parent, on their own tags:

- a *head* (`TAG_RELAY_HEAD`): which relay (root, number), its frames' sizes, the members, the
  chunk size and the chunk tag, so a member can place and forward chunks before its envelope
  has arrived;
- the chunks, in order, on the chunk tag the head names. A rank that forwards two relays to
  one child at once gives each its own tag (`CHUNK_TAG` + a slot), so chunks never interleave
  on one tag; MPI keeps each tag's chunks in order behind their head.

A member posts every chunk's receive, straight into its slice of the frame's buffer, as soon
as the head arrives, and forwards each chunk once it is complete: MPI then moves the data
during any call, and no chunk waits for Python to probe it. (Probed one by one instead, a
forwarding member's probe loop kept finding the next chunk of a 16 MiB relay and forwarded
nothing until the last had arrived: no pipeline at all.) The head comes before its chunks
from the same parent, so a probe that matches any tag always finds it first.

A member's relay is done once every chunk has arrived *and* has gone on to its children: its
envelope is delivered only then, so a member waiting in receive(), run() or close() keeps
forwarding, and close() and drain() (which wait for every envelope) leave nothing in flight.
See docs/wire-format.md, "Relayed frames".
"""

from __future__ import annotations

import struct
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

# A broadcast whose out-of-band frames hold this many bytes or more is relayed (when the stream
# has more than FANOUT members). Below it the root's copies are cheap and a relay's extra hops
# (each forwarding member must be polling) cost more than they save. At 1 and 2 MiB it is
# close: at 4 ranks on 2 cores under chrt, direct sends and relays both took 0.6-0.9 of raw
# Bcast's time; at normal priority on a quiet machine, direct sends 1.26-1.36, relays
# 0.66-1.11. See benchmarks/README.md.
RELAY_MIN = 2**20
# Children per member at most: the root sends at most two copies whatever the number of
# members. A chain (one child) when a relay has at least as many chunks as members: at 4 and 8
# ranks on 2 cores, 4 to 64 MiB down a chain took 0.53-0.75 of raw Bcast's time, down a binary
# tree 0.7-1.2 (the root copying twice and bounding the pipeline's rate).
FANOUT = 2
# Chunk size: large enough that the Python work per chunk (a probe, a receive, a send per
# child; some 20-40 us) is small beside its copy, small enough to fill the pipeline quickly.
CHUNK = 512 * 1024
# A relay travels in at most this many chunks (a larger one in larger chunks): what a head from
# a damaged or foreign sender can make a member set up is bounded (docs/wire-format.md).
MAX_CHUNKS = 1 << 16
MIN_CHUNK = 4096

_PREFIX = struct.Struct("<4sIq")  # magic, 0, relay number: before a relayed envelope
_HEAD = struct.Struct("<4siqiiii")  # magic, root, number, chunk, tag, frames, members
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
    """Children per member of a relay of ``chunks`` chunks to ``members`` members: a chain
    when its pipeline fills within its length, else `FANOUT`. (Every rank in the relay derives
    it from the head, which names the sizes, the chunk size and the members.)"""
    return 1 if chunks >= members else FANOUT


def tree(root: int, members: Sequence[int], rank: int, fanout: int = FANOUT) -> list[int]:
    """The ranks ``rank`` forwards to in the relay tree of ``root`` and ``members``."""
    order = (root, *members)
    at = order.index(rank)
    return [order[v] for v in collective.children(at, len(order), 0, fanout)]


def chunk_size(total: int) -> int:
    """The chunk size of a relay of ``total`` bytes: `CHUNK`, or more for one that would
    otherwise travel in more than `MAX_CHUNKS` chunks (a multiple of 4 KiB)."""
    least = -(-total // MAX_CHUNKS)
    return max(CHUNK, -(-least // 4096) * 4096)


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
) -> bytes:
    """A relay's head: see the module docstring. ``frames``: (size, page offset) each."""
    parts = [_HEAD.pack(_MAGIC, root, number, chunk, tag, len(frames), len(members))]
    parts += [_FRAME.pack(size, offset) for size, offset in frames]
    parts.append(struct.pack(f"<{len(members)}i", *members))
    return b"".join(parts)


def unpack_head(
    buffer: bytes | bytearray | memoryview, source: int, size: int
) -> tuple[int, int, int, int, list[tuple[int, int]], list[int]]:
    """(root, number, chunk, tag, frames, members) of a head from ``source``, in a job of
    ``size`` ranks.

    Raises:
        DecodeError: not a relay head of this geode_mpi, or one this rank cannot take part in
            (ranks outside the job, a tag out of range, more than `MAX_CHUNKS` chunks).
    """
    if len(buffer) >= _HEAD.size:
        magic, root, number, chunk, tag, n_frames, n_members = _HEAD.unpack_from(buffer)
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
                return root, number, chunk, tag, frames, members
    raise DecodeError(f"rank {source} sent a relay head geode_mpi cannot read")


class _Relay:
    """One relayed message passing through this rank: its buffers, the chunks received, and
    how many have gone on to the children."""

    __slots__ = ("buffers", "children", "chunks", "forwarded", "received", "recvs", "sends")

    def __init__(self, buffers: list[Frame], chunk: int) -> None:
        self.buffers = buffers
        self.chunks = [
            buffers[f][a:b] for f, a, b in chunk_plan([b.nbytes for b in buffers], chunk)
        ]
        self.children: list[tuple[int, int]] = []  # (rank, chunk tag)
        self.received = 0  # chunks complete, in order
        self.forwarded = 0  # chunks sent on to every child
        self.recvs: list[MPI.Request] = []  # every chunk's receive (a member's), by chunk
        self.sends: list[MPI.Request] = []  # sends to the children not yet complete

    @property
    def done(self) -> bool:
        return self.forwarded == len(self.chunks) and not self.sends


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
        self, members: Sequence[int], frames: Sequence[Frame], offsets: Sequence[int]
    ) -> tuple[int, list[MPI.Request]]:
        """Root a relay of ``frames`` (contiguous uint8) to ``members``: post the head and
        every chunk to this rank's children now. Returns its number and the requests."""
        number = self._next
        self._next += 1
        self.count += 1
        described = [
            (frame.nbytes, offset % 4096 // 16 * 16)
            for frame, offset in zip(frames, offsets, strict=True)
        ]
        chunk = chunk_size(sum(frame.nbytes for frame in frames))
        relay = _Relay(list(frames), chunk)
        relay.children = self._children(relay, self.rank, members)
        isend = self._comm.Isend
        requests = []
        for child, tag in relay.children:
            head = pack_head(self.rank, number, chunk, tag, described, members)
            requests.append(isend(head, child, TAG_RELAY_HEAD))
            requests += [isend([chunk, MPI.BYTE], child, tag) for chunk in relay.chunks]
        return number, requests

    def _children(self, relay: _Relay, root: int, members: Sequence[int]) -> list[tuple[int, int]]:
        """This rank's children in ``relay``'s tree, each with a free chunk tag."""
        fanout = fanout_of(len(relay.chunks), len(members))
        return self._tags(tree(root, members, self.rank, fanout))

    def _tags(self, children: list[int]) -> list[tuple[int, int]]:
        """A chunk tag for each child that no relay still being forwarded to it uses."""
        taken = {
            pair
            for relay in self.moving
            if relay.forwarded < len(relay.chunks)
            for pair in relay.children
        }
        chosen = []
        for child in children:
            slot = next((s for s in range(SLOTS) if (child, CHUNK_TAG + s) not in taken), None)
            if slot is None:
                raise RuntimeError(f"more than {SLOTS} relays to rank {child} at once")
            chosen.append((child, CHUNK_TAG + slot))
        return chosen

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
        root, number, chunk, tag, frames, members = unpack_head(buffer, source, self.size)
        if self.rank not in members:
            raise DecodeError(f"rank {source} sent a relay head of a tree without this rank")
        if (root, number) in self._live:
            raise DecodeError(f"rank {source} sent the head of relay {number} of {root} twice")
        try:  # reserved, not touched: only the chunks that arrive take memory
            buffers = [self._pool.take(size, offset) for size, offset in frames]
        except MemoryError as exc:
            total = sum(size for size, _ in frames)
            raise DecodeError(f"rank {source} sent a relay head of {total} bytes") from exc
        self.count += 1
        relay = _Relay(buffers, chunk)
        relay.children = self._children(relay, root, members)
        self._live[(root, number)] = relay
        self.moving.append(relay)
        irecv = self._comm.Irecv
        relay.recvs = [irecv([piece, MPI.BYTE], source, tag) for piece in relay.chunks]
        for child, child_tag in relay.children:
            head = pack_head(root, number, chunk, child_tag, frames, members)
            relay.sends.append(self._comm.Isend(head, child, TAG_RELAY_HEAD))

    def advance(self) -> bool:
        """Forward the chunks that have arrived; True if any relay finished here.

        Raises:
            DecodeError: a parent sent a chunk of another size than its head announced.
        """
        finished = False
        status = self._status
        isend = self._comm.Isend
        for relay in self.moving:
            recvs, chunks = relay.recvs, relay.chunks
            # Each chunk goes on as soon as it is complete, before the next is tested: every
            # Test moves data, and testing on first kept a forwarding member here until the
            # last chunk had arrived, its children waiting.
            while relay.received < len(recvs) and self._arrived(relay, status):
                piece = chunks[relay.received]
                if status.Get_count(MPI.BYTE) != piece.nbytes:
                    self._drop(relay)
                    raise DecodeError(
                        f"rank {status.Get_source()} sent a relayed chunk of "
                        f"{status.Get_count(MPI.BYTE)} bytes, not {piece.nbytes}"
                    )
                relay.received += 1
                relay.sends += [isend([piece, MPI.BYTE], c, tag) for c, tag in relay.children]
                relay.forwarded += 1
            if relay.sends and MPI.Request.Testall(relay.sends):
                relay.sends = []
            finished = finished or relay.done
        if finished:
            self.moving = [relay for relay in self.moving if not relay.done]
        return finished

    def _arrived(self, relay: _Relay, status: MPI.Status) -> bool:
        """Whether the relay's next chunk is complete (its status in ``status``)."""
        try:
            return relay.recvs[relay.received].Test(status)
        except MPI.Exception as exc:  # a chunk longer than announced (MPI_ERR_TRUNCATE)
            self._drop(relay)
            raise DecodeError(
                f"a relayed chunk did not fit where its head placed it: {exc}"
            ) from exc

    def _drop(self, relay: _Relay) -> None:
        """Give up a relay whose parent sent a chunk its head did not announce: its other
        receives are cancelled (what the parent sends on is then a chunk without a head), and
        it never completes (its envelope, if one comes, waits for ever, as for a lost one)."""
        for request in relay.recvs[relay.received + 1 :]:
            request.Cancel()
            request.Free()
        relay.recvs = relay.recvs[: relay.received]
        self.moving = [other for other in self.moving if other is not relay]

    def sends(self) -> list[MPI.Request]:
        """Every send in flight for a relay here (what a spin may test and complete)."""
        found = []
        for relay in self.moving:
            found += relay.sends
        return found

    def receives(self) -> list[MPI.Request]:
        """The next chunk receive of each relay here: what a spin watches without completing
        it (`MPI.Request.Get_status` of each: `Get_status_any` is MPI 4.1, which Open MPI 5.0
        lacks), so that `advance` reads its status."""
        return [
            relay.recvs[relay.received]
            for relay in self.moving
            if relay.received < len(relay.recvs)
        ]

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
