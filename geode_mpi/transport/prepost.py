"""Standing receives for the envelopes of large messages from network peers (`TAG_LEAD`).

Over a network path a large message's envelope goes first and its frames follow it
(`FRAMES_AFTER`); the receiver posts the frames' receives as the envelope arrives. A *lead* is
such an envelope, up to `LEAD_BYTES` long, sent on its own tag behind an 8-byte index: how many
messages the sender had sent to this rank before it (its `sent_to` count). Once a peer has sent
one lead, the receiver keeps a receive posted for its next one, so the envelope lands with no
probe and no matched receive, and the frames' receives are posted microseconds later, before
most of their bytes have come (over TCP MPI moves them only into a posted receive, or, slower,
into its buffers for unexpected messages, to copy them again).

A standing receive matches leads only, so messages on the other tags can overtake a lead: the
index puts it back in its place. A lead whose index is ahead of the messages received from its
sender waits (`Leads.waiting`) until the count reaches it. See docs/wire-format.md.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

from mpi4py import MPI

from geode_mpi.errors import DecodeError
from geode_mpi.transport.envelope import (
    ALIGN,
    FRAMES_AFTER,
    MAGIC,
    PAGE,
    VERSION,
    check_envelope,
)

TAG_LEAD = 9  # between the relay's head (8) and its chunk tags (16 and up)
LEAD_BYTES = 2048  # a standing receive's buffer: a lead longer than this goes as an envelope
LEADS_MAX = 64  # peers with a standing receive; leads from the others are probed
INDEX = struct.Struct("<Q")
# A lead of one out-of-band frame, the commonest (an array alone): its index, the envelope's
# header (magic, version, flags, frame count, meta length) and its one frame-table entry.
ONE_FRAME = struct.Struct("<Q2sBBIIxxxxQ")


ROOM = LEAD_BYTES - INDEX.size  # the longest envelope a lead carries
ONE_FRAME_META = LEAD_BYTES - ONE_FRAME.size  # the longest meta `one_frame_lead` carries


def lead_message(index: int, envelope: bytes) -> bytes:
    """The lead carrying ``envelope`` (at most `ROOM` bytes) as message number ``index`` to
    its destination."""
    return INDEX.pack(index) + envelope


def one_frame_lead(index: int, meta: bytes, nbytes: int, address: int) -> bytes:
    """``lead_message(index, one_frame_envelope(meta, nbytes, address, FRAMES_AFTER))`` in one
    pack: the lead of the commonest large message, an array alone, whose ``meta`` is at most
    `ONE_FRAME_META` bytes (the caller checks).

    Raises:
        EncodeError: as `one_frame_envelope` (`check_envelope`).
    """
    check_envelope(meta)
    entry = nbytes << 9 | (address % PAGE // ALIGN) << 1 | 1
    return ONE_FRAME.pack(index, MAGIC, VERSION, FRAMES_AFTER, 1, len(meta), entry) + meta


class Leads:
    """The standing receives of one transport, and the leads that arrived out of turn.

    Args:
        comm: the transport's communicator.
        landed: called with (source, lead) for each lead a standing receive takes.
    """

    def __init__(self, comm: MPI.Intracomm, landed: Callable[[int, memoryview], None]) -> None:
        self._comm = comm
        self._deliver = landed
        self.standing = False  # whether any receive stands
        # The sources with a standing receive: each one's slot in `_requests` (a dict, not a
        # list of every rank: at most LEADS_MAX sources have one).
        self.slot: dict[int, int] = {}
        self._sources: list[int] = []
        self._requests: list[MPI.Request] = []
        self._buffers: list[bytearray] = []
        self._status = MPI.Status()
        self._polled: list[MPI.Status] = []  # Testsome's, one per completed receive
        self._empty: list[int] = []  # slots whose receive took a lead, not posted again yet
        # Per source: leads received, by index, not yet handed over (see `due`).
        self.waiting: dict[int, deque[tuple[int, memoryview]]] = {}
        self.taken = 0  # leads that landed in a standing receive
        self.probed = 0  # leads found by a probe (a peer's first, or one in between)

    def stand(self, source: int) -> None:
        """Keep a receive posted for ``source``'s next lead (at most `LEADS_MAX` sources)."""
        if source in self.slot or len(self._sources) >= LEADS_MAX:
            return
        self.standing = True  # (an attribute: read on every idle poll)
        self.slot[source] = len(self._sources)
        self._sources.append(source)
        buffer = bytearray(LEAD_BYTES)
        self._buffers.append(buffer)
        self._polled.append(MPI.Status())
        self._requests.append(self._comm.Irecv(buffer, source, TAG_LEAD))

    def poll(self) -> bool:
        """Take the leads that landed in standing receives; whether there were any."""
        statuses = self._polled
        indices = MPI.Request.Testsome(self._requests, statuses)
        if not indices:
            return False
        # Read everything first: handing a lead over delivers messages, and a sink that makes
        # progress may poll again, reusing the statuses.
        landed = [
            (self._sources[index], self._buffers[index], status.Get_count(MPI.BYTE))
            for index, status in zip(indices, statuses, strict=False)  # (in completion order)
        ]
        self._empty += indices
        self.taken += len(indices)
        for source, buffer, length in landed:
            self._deliver(source, memoryview(buffer)[:length])
        return True

    def test(self, source: int) -> None:
        """`poll` for one source: before a message from it is handled, since its lead, if it
        came before that message, must be handed over first."""
        index = self.slot[source]
        status = self._status
        request = self._requests[index]
        if request and request.Test(status):
            self._empty.append(index)
            self.taken += 1
            self._deliver(source, memoryview(self._buffers[index])[: status.Get_count(MPI.BYTE)])

    def repost(self) -> None:
        """Post again the standing receives that took a lead: after the lead's frames' own
        receives, which its frames' bytes, on their way, need first. (A lead that comes in
        between is probed, and takes its turn by its index all the same.)"""
        for index in self._empty:
            self._buffers[index] = fresh = bytearray(LEAD_BYTES)  # (a message keeps the old)
            self._requests[index] = self._comm.Irecv(fresh, self._sources[index], TAG_LEAD)
        self._empty.clear()

    def add(self, source: int, lead: memoryview) -> None:
        """Queue a lead from ``source`` until its turn (`due`), in the order of their indices."""
        if len(lead) < INDEX.size:
            raise DecodeError(f"rank {source} sent a lead of {len(lead)} bytes, without its index")
        number = INDEX.unpack_from(lead)[0]
        queue = self.waiting.get(source)
        if queue is None:
            queue = self.waiting[source] = deque()
        entry = (number, lead[INDEX.size :])
        if queue and queue[-1][0] > number:  # (a probed lead between standing ones: rare)
            ordered = sorted([*queue, entry], key=lambda item: item[0])
            queue.clear()
            queue.extend(ordered)
        else:
            queue.append(entry)

    def due(self, source: int, received: int) -> memoryview | None:
        """The envelope of ``source``'s next lead if it is message number ``received`` (the
        count of messages received from it), else None: messages sent before it are still to
        come.

        Raises:
            DecodeError: a lead numbered below the count (it can never be handed over).
        """
        queue = self.waiting.get(source)
        if not queue:
            return None
        number = queue[0][0]
        if number != received:
            if number < received:
                raise DecodeError(
                    f"rank {source} sent a lead numbered {number} after {received} messages"
                )
            return None
        envelope = queue.popleft()[1]
        if not queue:
            del self.waiting[source]
        return envelope

    def summary(self) -> str:
        """What is waiting, for diagnostics."""
        parts = [
            f"{len(queue)} lead(s) from rank {source} waiting for message {queue[0][0]}"
            for source, queue in sorted(self.waiting.items())
        ]
        return "; ".join(parts)

    def cancel(self) -> None:
        """Cancel the standing receives (close(): every message counted has arrived, so none
        can match); a lead that came all the same is refused."""
        self.repost()
        for request in self._requests:
            request.Cancel()
        statuses = [MPI.Status() for _ in self._requests]
        MPI.Request.Waitall(self._requests, statuses)
        for source, status in zip(self._sources, statuses, strict=True):
            if not status.Is_cancelled():
                raise DecodeError(f"rank {source} sent a lead after its last counted message")
        self._requests.clear()
        self._sources.clear()
        self._buffers.clear()
        self._polled.clear()
        self.slot.clear()
        self.standing = False
