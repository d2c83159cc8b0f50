"""Topic streams as point-to-point fan-outs: a table of who roots and who receives each stream.

A stream is bookkeeping only, the same on each rank that takes part: its root rank and its
member ranks. Broadcasting on it sends the envelope (and its large frames) to every member over
the transport's one communicator, on the point-to-point tags. Opening one creates no
communicator and sends nothing; an idle wait has nothing per stream to poll, since stream
traffic arrives like any other message; and MPI's non-overtaking rule on each (root, member)
path keeps a stream's messages in the order broadcast. A small broadcast (no out-of-band
frame) joins each member's batch, as a batched point-to-point send does, so a stream of small
publishes costs each member one MPI message per batch, not one per message; its ticket
(`FanTicket`) is done once every member's batch has gone out.

Closing a stream (before its topic's subscribers change) sends each member an *end marker* on
`TAG_STREAM` behind the stream's messages. On a member the marker joins the root's arrival queue
and holds everything behind it: the member's close waits until every message from the root
before the marker has reached the sink, and what the root sends after it (the reopened
stream's messages, for the new subscribers) waits until the member reopens the stream, so that
nothing is delivered to the old subscribers after they changed. See docs/wire-format.md.

Large broadcasts on a stream of two members or more are relayed among them: split into a piece
per member, or down a chain or tree (transport/relay.py). A rank that forwards must keep
polling, so a blocking collective could leave a member waiting for a relay through a rank
blocked in it: once any such stream has been opened (every rank opens every stream, so all
agree), the transport's collectives first wait for every rank to arrive, polling meanwhile
(`FanoutTable.relaying`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from geode_mpi.errors import DecodeError
from geode_mpi.transport.base import SendTicket

_END = struct.Struct("<4sq")  # magic, stream key
_MAGIC = b"GDFE"
END_BYTES = _END.size


def end_marker(key: int) -> bytes:
    """The end marker of stream ``key``, sent by its root to each member."""
    return _END.pack(_MAGIC, key)


def read_end_marker(buffer: bytes | bytearray | memoryview, source: int) -> int:
    """The stream key an end marker from rank ``source`` names.

    Raises:
        DecodeError: not an end marker of this geode_mpi.
    """
    if len(buffer) != END_BYTES:
        raise DecodeError(
            f"rank {source} sent a stream end marker of {len(buffer)} bytes, not {END_BYTES}: "
            "are all ranks running the same geode_mpi?"
        )
    magic, key = _END.unpack_from(buffer)
    if magic != _MAGIC:
        raise DecodeError(f"rank {source} sent a stream end marker with magic {magic!r}")
    return int(key)


class FanTicket(SendTicket):
    """The ticket of a small broadcast waiting in its members' batches (one batch ticket per
    member rank): done once every one of them is, held while any of them is."""

    __slots__ = ("parts",)

    def __init__(self, dest: int, nbytes: int, parts: list[SendTicket]) -> None:
        self.dest = dest
        self.nbytes = nbytes
        self.state = None
        self.parts = parts

    @property
    def done(self) -> bool:
        # A loop: a third of all()'s time over a generator (this is read at every check).
        for part in self.parts:  # noqa: SIM110
            if not part.done:
                return False
        return True

    @done.setter
    def done(self, value: bool) -> None:
        raise AttributeError("a broadcast's ticket is done once its members' batches are")

    @property
    def held(self) -> bool:
        for part in self.parts:  # noqa: SIM110
            if part.held:
                return True
        return False

    @held.setter
    def held(self, value: bool) -> None:
        raise AttributeError("a broadcast's ticket is held while its members' batches are")


class _Members:
    """The member ranks streams were opened with, worked out once for all the streams of one
    `FanoutTable.open`: as a set, and the ranks a root here sends to (when first asked)."""

    __slots__ = ("_others", "members", "ranks")

    def __init__(self, members: Sequence[int]) -> None:
        self.members = members
        self.ranks = frozenset(members)
        self._others: tuple[int, ...] | None = None

    def others(self, rank: int) -> tuple[int, ...]:
        """The member ranks but ``rank`` (this rank, the root), sorted."""
        if self._others is None:
            others = tuple(sorted(self.ranks - {rank}))
            members = self.members
            # (sorted, and without this rank: the given tuple itself, not a copy)
            self._others = members if type(members) is tuple and others == members else others
        return self._others


class FanoutTable:
    """The streams this rank roots or receives, and the end markers that have arrived.

    A topic opens one stream per publisher, all with the same member ranks, in one `open`:
    each entry keeps only what differs per stream. A stream this rank roots keeps the ranks
    its broadcasts go to, one tuple shared by the streams of one `open` rooted here; one it
    receives keeps nothing but its root (its members matter only to the root); one it is not
    in, only its root.

    Args:
        rank: this rank.
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank
        # key -> the ranks a broadcast goes to (streams rooted here), () (streams received)
        self._streams: dict[int, tuple[int, ...]] = {}
        # key -> root, of every stream opened on any rank (every rank opens every stream):
        # an end marker may reach a rank that joins a stream before it is a member
        self._roots: dict[int, int] = {}
        self._held: dict[int, int] = {}  # key -> root: closed here, its end marker still queued
        self.relaying = False  # whether a stream that relays has been opened (on every rank)
        self.closed = False  # the transport is closing: end markers hold nothing any more

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, streams: Iterable[tuple[int, int]], members: Sequence[int]) -> None:
        """Record each of ``streams`` (key, root) that this rank roots or is a member of, all
        with the member ranks ``members`` (worked out once, for all of them).

        Raises:
            ValueError: a stream is already open here.
        """
        given = _Members(members)
        ranks = given.ranks
        rank = self.rank
        for key, root in streams:
            # (a split relays to 2 members on)
            self.relaying = self.relaying or len(ranks) - (root in ranks) > 1
            self._roots[key] = root
            if rank != root and rank not in ranks:
                continue
            if key in self._streams:
                raise ValueError(f"broadcast stream {key} is already open")
            self._streams[key] = given.others(rank) if rank == root else ()

    def get(self, key: int) -> tuple[int, tuple[int, ...]] | None:
        """(root, the ranks this rank broadcasts to on it: none unless it is the root) of
        stream ``key``, or None if this rank is not in it."""
        others = self._streams.get(key)
        return None if others is None else (self._roots[key], others)

    def root_of(self, key: int) -> int | None:
        """The root of stream ``key``, member here or not (None: never opened)."""
        return self._roots.get(key)

    def members(self, key: int) -> tuple[int, ...]:
        """The ranks a broadcast on ``key`` goes to (this rank must be its root).

        Raises:
            ValueError: the stream is not open here, or this rank is not its root.
        """
        others = self._streams.get(key)
        if others is None:
            raise ValueError(f"broadcast stream {key} is not open on rank {self.rank}")
        if self._roots[key] != self.rank:
            raise ValueError(f"rank {self.rank} is not the root of broadcast stream {key}")
        return others

    def remove(self, key: int) -> None:
        del self._streams[key]

    def hold(self, key: int, root: int) -> None:
        """Stream ``key`` from ``root`` closed here; its end marker stays queued until reopened."""
        self._held[key] = root

    def release(self, key: int) -> int | None:
        """The root whose queued end marker of ``key`` may go now (None if none is held)."""
        return self._held.pop(key, None)

    def clear(self) -> None:
        """The transport closes: forget every stream, and let every end marker go."""
        self.closed = True
        self._streams.clear()
        self._held.clear()
