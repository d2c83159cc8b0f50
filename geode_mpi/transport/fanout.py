"""Topic streams as point-to-point fan-outs: a table of who roots and who receives each stream.

A stream is bookkeeping only, the same on each rank that takes part: its root rank and its
member ranks. Broadcasting on it sends the envelope (and its large frames) to every member over
the transport's one communicator, on the point-to-point tags. Opening one creates no
communicator and sends nothing; an idle wait has nothing per stream to poll, since stream
traffic arrives like any other message; and MPI's non-overtaking rule on each (root, member)
path keeps a stream's messages in the order broadcast.

Closing a stream (before its topic's subscribers change) sends each member an *end marker* on
`TAG_STREAM` behind the stream's messages; a member's close waits for it, and for every
message from the root before it to reach the sink. See docs/wire-format.md.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from geode_mpi.errors import DecodeError

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


class FanoutTable:
    """The streams this rank roots or receives, and the end markers that have arrived.

    Args:
        rank: this rank.
    """

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self._streams: dict[int, tuple[int, tuple[int, ...]]] = {}  # key -> (root, members)
        self._ends: dict[int, int] = {}  # key -> end markers arrived and not yet waited for

    def __len__(self) -> int:
        return len(self._streams)

    def open(self, key: int, root: int, members: Sequence[int]) -> None:
        """Record stream ``key`` if this rank is its root or one of its members.

        Raises:
            ValueError: the stream is already open here.
        """
        others = tuple(sorted(set(members) - {root}))
        if self.rank != root and self.rank not in others:
            return
        if key in self._streams:
            raise ValueError(f"broadcast stream {key} is already open")
        self._streams[key] = (root, others)

    def get(self, key: int) -> tuple[int, tuple[int, ...]] | None:
        """(root, members) of stream ``key``, or None if this rank is not in it."""
        return self._streams.get(key)

    def members(self, key: int) -> tuple[int, ...]:
        """The ranks a broadcast on ``key`` goes to (this rank must be its root).

        Raises:
            ValueError: the stream is not open here, or this rank is not its root.
        """
        stream = self._streams.get(key)
        if stream is None:
            raise ValueError(f"broadcast stream {key} is not open on rank {self.rank}")
        if stream[0] != self.rank:
            raise ValueError(f"rank {self.rank} is not the root of broadcast stream {key}")
        return stream[1]

    def remove(self, key: int) -> None:
        del self._streams[key]

    def ended(self, key: int) -> None:
        """An end marker of stream ``key`` arrived (perhaps before this rank closes it)."""
        self._ends[key] = self._ends.get(key, 0) + 1

    def take_end(self, key: int) -> bool:
        """Consume one arrived end marker of ``key``; False if none has arrived yet."""
        count = self._ends.get(key, 0)
        if not count:
            return False
        if count == 1:
            del self._ends[key]
        else:
            self._ends[key] = count - 1
        return True

    def clear(self) -> None:
        self._streams.clear()
        self._ends.clear()
