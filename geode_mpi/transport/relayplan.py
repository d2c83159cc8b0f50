"""A relay's plan, with no MPI: its shape, routes and chunks, and the head that carries it.

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

See `geode_mpi.transport.relay` for how the chunks move, docs/wire-format.md for the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from geode_mpi.base import collective
from geode_mpi.errors import DecodeError

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
