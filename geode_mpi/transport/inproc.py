"""Transports of simulated ranks in one process: the in-process one (the embedded world, unit
tests), and the base that tests/faulty.py's lossy one shares with it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from geode_mpi.base.gate import Gate
from geode_mpi.errors import WorldMismatchError
from geode_mpi.transport.base import Frame, SendTicket, TransportBase
from geode_mpi.transport.digest import digest as blake2b_digest
from geode_mpi.transport.rooted import RootedAlone
from geode_mpi.transport.sealed import keep_or_copy, lease, nbytes_of, process_memory

if TYPE_CHECKING:
    import numpy as np
else:
    from geode_mpi.base.ondemand import on_first_use

    np = on_first_use("numpy", globals(), "np")


class Hub(Protocol):
    """What a `LocalTransport` asks of the hub that connects it to its simulated peers."""

    size: int

    def post(self, source: int, dest: int, meta: bytes, frames: Sequence[Frame]) -> int:
        """Move one envelope towards ``dest``'s sink; its size in bytes."""
        ...

    def settle(self) -> None:
        """Deliver everything in flight, to every rank."""

    def agree(self, value: bytes, what: str, rank: int) -> None:
        """Raise `WorldMismatchError` unless ``value`` is the first one given for ``what``."""

    def stream(self, key: int, rank: int, root: int, members: Sequence[int]) -> None:
        """Record stream ``key`` (every rank must name the same root and members)."""

    def members(self, key: int, rank: int) -> tuple[int, ...]:
        """The members of stream ``key``, whose root must be ``rank``."""
        ...

    def end(self, key: int) -> None:
        """Deliver everything in flight, and forget stream ``key``."""


class LocalHub:
    """What hubs of simulated ranks share: the size, agreement, the topic streams' table.

    Args:
        size: the number of simulated ranks.
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        self.size = size
        # (what, k) -> [the digest of the first rank's k-th value for what, ranks that gave one]
        self._agreed: dict[tuple[str, int], list[Any]] = {}
        self._asked: dict[tuple[str, int], int] = {}  # (what, rank) -> its agreements so far
        self.streams: dict[int, tuple[int, tuple[int, ...]]] = {}  # key -> (root, members)

    def check_rank(self, rank: int, argument: str = "rank") -> None:
        if not (isinstance(rank, int) and 0 <= rank < self.size):
            raise ValueError(f"{argument} must be in 0..{self.size - 1}, got {rank!r}")

    def agree(self, value: bytes, what: str, rank: int) -> None:
        # A digest, not the value: a hub outlives its Geodes' agreements, and a settings text
        # runs to megabytes with many nodes.
        # Each rank's k-th agreement about ``what`` is compared with the other ranks' k-th
        # (a topic's subscribers may change many times), and forgotten once all gave theirs.
        digest = blake2b_digest(value, 16)
        count = self._asked.get((what, rank), 0)
        self._asked[(what, rank)] = count + 1
        key = (what, count)
        entry = self._agreed.setdefault(key, [digest, 0])
        entry[1] += 1
        if entry[1] == self.size:
            del self._agreed[key]
        if entry[0] != digest:
            raise WorldMismatchError(f"rank {rank} disagrees with rank 0 about {what}")

    def stream(self, key: int, rank: int, root: int, members: Sequence[int]) -> None:
        self.check_rank(root, "root")
        stream = (root, tuple(sorted(set(members) - {root})))
        if self.streams.setdefault(key, stream) != stream:
            raise WorldMismatchError(f"rank {rank} disagrees about broadcast stream {key}")

    def members(self, key: int, rank: int) -> tuple[int, ...]:
        if key not in self.streams:
            raise ValueError(f"broadcast stream {key} is not open")
        root, members = self.streams[key]
        if root != rank:
            raise ValueError(f"rank {rank} is not the root of broadcast stream {key}")
        return members

    def end(self, key: int) -> None:
        self.settle()  # what a member's close waits for: everything broadcast before the end
        self.streams.pop(key, None)  # the first rank to close it: the others find nothing

    def settle(self) -> None:
        """Deliver everything in flight, to every rank (nothing, unless delivery is later)."""


class InProcHub(LocalHub):
    """A set of connected in-process endpoints, one per simulated rank.

    Delivery is synchronous: `send` copies the frames and hands them to the destination's sink
    before it returns, so a single thread can drive several simulated ranks.

    Args:
        size: the number of simulated ranks (1 for the embedded world).
    """

    def __init__(self, size: int = 1) -> None:
        super().__init__(size)
        # One lock for all its endpoints: a send on one runs the receiving endpoint's sink.
        self.gate = Gate()
        self.endpoints = [InProcTransport(self, rank) for rank in range(size)]

    def endpoint(self, rank: int) -> InProcTransport:
        """The transport of simulated rank ``rank``."""
        self.check_rank(rank)
        return self.endpoints[rank]

    def post(self, source: int, dest: int, meta: bytes, frames: Sequence[Frame]) -> int:
        if not frames:  # a small message: no comprehension and generator to run (~1%)
            self.endpoints[dest].deliver(source, memoryview(meta), (), len(meta))
            return len(meta)
        copies = [keep_or_copy(frame) for frame in frames]  # (sealed: a read-only view)
        nbytes = len(meta) + sum(frame.nbytes for frame in copies)
        self.endpoints[dest].deliver(source, memoryview(meta), copies, nbytes)
        return nbytes


class LocalTransport(RootedAlone, TransportBase):
    """One endpoint of a hub of simulated ranks that one thread drives: every capability,
    with collectives that need no waiting (the hub sees every rank), and a gather that only
    a world of one rank can make (a rank cannot wait for peers that share its thread)."""

    def __init__(self, hub: Hub, rank: int) -> None:
        super().__init__()
        self.hub = hub
        self.rank = rank
        self.size = hub.size

    # -- point-to-point (progress, busy, close: see the subclasses) --------------------------

    def send(
        self, dest: int, meta: bytes, frames: Sequence[Frame], batch: bool = False
    ) -> SendTicket:
        if not 0 <= dest < self.size:
            raise ValueError(f"dest must be a rank in 0..{self.size - 1}, got {dest!r}")
        return SendTicket(dest, self.hub.post(self.rank, dest, meta, frames), done=True)

    # -- topic streams: one copy per member, through the hub --------------------------------

    def open_streams(self, streams: Sequence[tuple[int, int]], members: Sequence[int]) -> None:
        for key, root in streams:
            self.hub.stream(key, self.rank, root, members)

    def broadcast(self, key: int, meta: bytes, frames: Sequence[Frame]) -> SendTicket:
        nbytes = 0
        for member in self.hub.members(key, self.rank):
            nbytes = self.hub.post(self.rank, member, meta, frames)
        return SendTicket(self.rank, nbytes, done=True)

    def close_stream(
        self, key: int, timeout: float | None = None, joining: Sequence[int] = ()
    ) -> None:
        self.hub.end(key)  # (a hub delivers at once, in the caller's thread: none to wait for)

    def zero_copy_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray[Any, Any]:
        kind = np.dtype(dtype)
        return lease(process_memory(nbytes_of(shape, kind)), shape, kind)

    # -- collectives ------------------------------------------------------------------------

    def check_same(self, value: bytes, what: str) -> None:
        self.hub.agree(value, what, self.rank)

    def allgather(self, value: Any) -> list[Any]:
        if self.size == 1:
            return [value]
        raise RuntimeError(
            f"allgather needs every rank's value at once, but the {self.size} ranks of the "
            f"{self.name} transport share one thread: use MPI for collectives across ranks"
        )

    def drain(
        self, timeout: float | None = None, pending: Callable[[], bool] | None = None
    ) -> bool:
        self.hub.settle()
        return pending is not None and pending()

    def all_entered(self) -> Callable[[], bool]:
        return lambda: True  # the ranks are not separate processes: nobody to wait for

    def private_comm(self) -> None:
        return None


class InProcTransport(LocalTransport):
    """One endpoint of an `InProcHub`: `send` delivers before it returns (see `InProcHub.post`)."""

    name = "in-process"
    delivers_later = False

    def __init__(self, hub: InProcHub, rank: int) -> None:
        super().__init__(hub, rank)
        self.hub: InProcHub = hub
        self.gate = hub.gate

    def close(self, timeout: float | None = None) -> None:
        return None
