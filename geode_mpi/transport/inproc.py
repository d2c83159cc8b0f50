"""The in-process transport: ranks that live in one process (the embedded world, unit tests)."""

from __future__ import annotations

from collections.abc import Sequence

from geode_mpi.errors import WorldMismatchError
from geode_mpi.transport.base import Frame, SendTicket, Transport, copy_frame
from geode_mpi.transport.gate import Gate


class InProcHub:
    """A set of connected in-process endpoints, one per simulated rank.

    Delivery is synchronous: `send` copies the frames and hands them to the destination's sink
    before it returns, so a single thread can drive several simulated ranks.

    Args:
        size: the number of simulated ranks (1 for the embedded world).
    """

    def __init__(self, size: int = 1) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        self.size = size
        # One lock for all its endpoints: a send on one runs the receiving endpoint's sink.
        self.gate = Gate()
        self.endpoints = [InProcTransport(self, rank) for rank in range(size)]
        self._agreed: dict[str, bytes] = {}
        self.streams: dict[int, tuple[int, tuple[int, ...]]] = {}  # key -> (root, members)

    def endpoint(self, rank: int) -> InProcTransport:
        """The transport of simulated rank ``rank``."""
        if not 0 <= rank < self.size:
            raise ValueError(f"rank must be in 0..{self.size - 1}, got {rank!r}")
        return self.endpoints[rank]

    def agree(self, value: bytes, what: str, rank: int) -> None:
        first = self._agreed.setdefault(what, value)
        if first != value:
            raise WorldMismatchError(f"rank {rank} disagrees with rank 0 about {what}")


class InProcTransport(Transport):
    """One endpoint of an `InProcHub`."""

    name = "in-process"
    delivers_later = False

    def __init__(self, hub: InProcHub, rank: int) -> None:
        super().__init__()
        self.hub = hub
        self.rank = rank
        self.size = hub.size
        self.gate = hub.gate

    def send(
        self, dest: int, meta: bytes, frames: Sequence[Frame], batch: bool = False
    ) -> SendTicket:
        copies = [copy_frame(frame) for frame in frames]
        nbytes = len(meta) + sum(frame.nbytes for frame in copies)
        target = self.hub.endpoints[dest]
        target.deliver(self.rank, memoryview(meta), copies, nbytes)
        return SendTicket(dest, nbytes, done=True)

    def open_stream(self, key: int, root: int, members: Sequence[int]) -> None:
        stream = (root, tuple(sorted(set(members) - {root})))
        if self.hub.streams.setdefault(key, stream) != stream:
            raise WorldMismatchError(f"rank {self.rank} disagrees about broadcast stream {key}")

    def broadcast(self, key: int, meta: bytes, frames: Sequence[Frame]) -> SendTicket:
        root, members = self.hub.streams[key]
        if root != self.rank:
            raise ValueError(f"rank {self.rank} is not the root of broadcast stream {key}")
        nbytes = 0
        for member in members:
            copies = [copy_frame(frame) for frame in frames]
            nbytes = len(meta) + sum(frame.nbytes for frame in copies)
            self.hub.endpoints[member].deliver(self.rank, memoryview(meta), copies, nbytes)
        return SendTicket(root, nbytes, done=True)

    def close_stream(self, key: int, timeout: float | None = None) -> None:
        return None  # everything was delivered inside broadcast()

    def progress(self) -> bool:
        return False

    @property
    def busy(self) -> bool:
        return False

    def check_same(self, value: bytes, what: str) -> None:
        self.hub.agree(value, what, self.rank)

    def close(self, timeout: float | None = None) -> None:
        return None
