"""What the parts of `MPITransport` share: its tags, an arrival whose frames are still coming,
the state they use (declared), and the waits with a deadline of its collective steps."""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mpi4py import MPI

from geode_mpi.base.backoff import Backoff, together_backoff
from geode_mpi.errors import GeodeTimeoutError
from geode_mpi.transport.base import SendTicket, TransportBase
from geode_mpi.transport.rooted import RootedMPI

if TYPE_CHECKING:
    from geode_mpi.transport.base import Frame
    from geode_mpi.transport.fanout import FanoutTable, FanTicket
    from geode_mpi.transport.mpi_frames import _Held
    from geode_mpi.transport.pool import BufferPool
    from geode_mpi.transport.prepost import Leads
    from geode_mpi.transport.relay import Relays
    from geode_mpi.transport.shared import NodeShare
    from geode_mpi.transport.tally import Tally

TAG_ENVELOPE = 1
TAG_FRAME = 2
TAG_BATCH = 3  # several small envelopes in one MPI message (see MPITransport.send)
TAG_META = 4  # a message without frames, sent as its meta alone: no envelope to build
TAG_STREAM = 5  # a stream's end marker (see transport/fanout.py)
# What a batch's entry is (see _BATCH_ENTRY): an envelope, or a meta alone.
_AS_ENVELOPE = 0
_AS_META = 1
# Before each entry of a batch: its length and what it is (an envelope, or a meta alone),
# padded so that every entry starts 16-byte aligned.
_BATCH_ENTRY = struct.Struct("<IB11x")
_BYTE = MPI.BYTE
_ANY_SOURCE = MPI.ANY_SOURCE
_ANY_TAG = MPI.ANY_TAG


class _Arrival:
    """An envelope whose out-of-band frames are still being received."""

    __slots__ = ("frames", "meta", "nbytes", "relay", "requests", "sizes")

    def __init__(
        self,
        meta: memoryview,
        frames: list[Frame | memoryview | int],
        requests: list[MPI.Request],
        nbytes: int,
        relay: int = -1,
        sizes: list[int] | None = None,
    ) -> None:
        self.meta = meta
        # Its size (an int) where a relayed frame will be (see transport/relay.py).
        self.frames = frames
        self.requests = requests
        self.nbytes = nbytes
        # The number of the relay bringing its frames; -1: none; END - key: not a message but
        # stream key's end marker, which holds everything behind it (see transport/fanout.py)
        self.relay = relay
        # The sizes its envelope lists for frames received unprobed (FRAMES_AFTER), to check
        # once they are in; None: probed, their sizes checked before their receives.
        self.sizes = sizes


class MPIParts(RootedMPI, TransportBase):
    """The state `MPITransport.__init__` sets, declared for the parts it inherits (`Sending`,
    mpi_sending.py; `Batches`, mpi_batches.py; `Receiving`, mpi_receiving.py; `LeadArrivals`,
    mpi_leads.py; `Waiting`, mpi_waiting.py: progress and spins; `Streams`, mpi_streams.py:
    broadcast streams; `CollectiveSteps`, mpi_collective.py: the collective steps and close),
    which reach it and each other through ``self``; and their waits."""

    rank: int
    size: int
    inline_max: int
    sent_to: list[int]
    received_from: list[int]
    _active: list[SendTicket]
    _batches: dict[int, SendTicket]
    _arrivals: list[deque[_Arrival] | None]  # None: nothing from that source waited yet
    _frames_in: list[deque[_Held] | None]
    _waiting_sources: set[int]
    _closed: bool
    _tally: Tally
    _closing: MPI.Request | None
    _fanouts: FanoutTable
    _fan: FanTicket | None
    pool: BufferPool
    _relays: Relays
    shared: NodeShare
    family: str | None
    leads: Leads
    oversubscribed: bool
    frames_after: Callable[[int], bool]
    _status: MPI.Status
    _frame_status: MPI.Status
    _unposted: list[_Held]
    _early: list[_Held]
    _lazy: dict[int, int]
    _batch_since: float
    _next_test: int

    if TYPE_CHECKING:  # one part's, called by another

        def send(
            self, dest: int, meta: bytes, frames: Sequence[Frame], batch: bool = False
        ) -> SendTicket: ...

        def _send_batch(self, dest: int) -> None: ...

        def _add_to_batch(self, dest: int, kind: int, payload: bytes) -> SendTicket: ...

        def _finish(self, ticket: SendTicket) -> bool: ...

        def _complete_arrivals(self) -> bool: ...

        def _check_dest(self, dest: int) -> None: ...

        def _probe_arrivals(self) -> bool: ...

        def _take_matched(self, message: MPI.Message) -> bool: ...

        def _post_late(self) -> bool: ...

        def _accept(
            self, source: int, buffer: bytearray | memoryview, lead: bool = False
        ) -> None: ...

        def _claim(self, source: int, size: int, offset: int) -> tuple[Frame, MPI.Request]: ...

        def _take_leads(self) -> bool: ...

        def _due_leads(self) -> bool: ...

        def _lead_first(self, source: int) -> None: ...

        def _take_lead(self, message: MPI.Message, source: int) -> bool: ...

        def _take_other(self, source: int, tag: int, buffer: bytearray) -> bool: ...

    def _arrivals_from(self, source: int) -> deque[_Arrival]:
        """The messages from ``source`` still arriving, in order (made on first use)."""
        queue = self._arrivals[source]
        if queue is None:
            queue = self._arrivals[source] = deque()
        return queue

    def _frames_from(self, source: int) -> deque[_Held]:
        """The frames probed from ``source`` not yet claimed by an envelope (made on first use)."""
        held = self._frames_in[source]
        if held is None:
            held = self._frames_in[source] = deque()
        return held

    def _wait(
        self,
        done: Callable[[], bool],
        deadline: float | None,
        timeout: float | None,
        what: Callable[[], str],
        call: str = "close()",
        together: float | None = None,
    ) -> None:
        """`wait`, raising `GeodeTimeoutError` at the deadline (``together``: `_poll_together`
        yielding that long); ``what()`` says what it waits for, there and in the notice of a
        long wait (`Backoff.what`)."""
        pauses = Backoff() if together is None else together_backoff(None, together)
        pauses.what = what  # (the notice of a long wait, the --hang-timeout report)
        waited = self.wait(done, deadline, backoff=pauses)
        if not waited:
            raise GeodeTimeoutError(
                f"{call} on rank {self.rank} timed out after {timeout:g} s: {what()}"
            )

    def _poll_together(
        self, done: Callable[[], bool], deadline: float | None, yield_time: float
    ) -> bool:
        """`wait` for a step of close() or drain(), which every rank waits in at once: one
        poll per turn, not `wait`'s 50 us spin, yielding the core between polls for up to
        ``yield_time`` before sleeping. With 64 ranks on 2 cores each rank's turn then costs
        a poll (a few us) instead of a spin, so one step of a collective reaches the rank it
        waits for sooner, and no step waits for a rank asleep (up to 1 ms a sleep)."""
        return self.wait(done, deadline, backoff=together_backoff(None, yield_time))
