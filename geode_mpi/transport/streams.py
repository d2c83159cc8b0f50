"""Broadcast streams over MPI: one root rank sends, every member rank receives, in order.

A stream is a communicator over its root (rank 0 in it) and its member ranks, made with
``Split`` when the stream opens. MPI collectives must be called in the same order by every
member with the same root, so a stream has exactly one root, and every member keeps one
``Ibcast`` of a fixed-size header posted at all times: that is how a member can take part in a
broadcast it does not know is coming. Per message, the root posts, in this order:

1. the header (`HEADER_BYTES`): a magic, the kind (a message, or the end of the stream) and the
   envelope's length, followed by the envelope itself when it fits, else ending with a CRC-32
   of the header (a member checks it, and `ENVELOPE_MAX`, before allocating the envelope);
2. the envelope, when it did not fit (every member learnt its length from the header);
3. one broadcast per out-of-band frame, sized by the envelope's frame table.

A member posts the same sequence as it learns the sizes, then the next header. Arrivals reach
the transport's sink like point-to-point ones, from the root's rank, in the root's order. The
envelope is the point-to-point one (`geode_mpi.transport.envelope`): small frames inline, large
ones broadcast from and into their own memory (pooled, page-offset buffers on the members).
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from geode_mpi.errors import DecodeError, EncodeError
from geode_mpi.transport.base import Frame, SendTicket, Sink
from geode_mpi.transport.envelope import ENVELOPE_MAX, build_envelope, parse_envelope
from geode_mpi.transport.pool import BufferPool

# Every broadcast starts with this many bytes: room for the envelope of any message up to
# about 4 KiB (a small array, a dict of settings), which then takes one broadcast, not two
# (at 4 ranks on 2 cores a 1 or 2 KiB message reached its subscribers 12 to 20% sooner than
# with 512 bytes; 8 B to 1 MiB messages took as long as before).
HEADER_BYTES = 4096
_HEAD = struct.Struct("<4sB3xQ")  # magic, kind, envelope length
_MAGIC = b"GDBS"
_MESSAGE = 0
_END = 1
INLINE_ENVELOPE = HEADER_BYTES - _HEAD.size  # an envelope up to this size rides in the header
_CHECK = struct.Struct("<I")  # a header announcing a longer envelope ends with its CRC-32
_CHECKED = HEADER_BYTES - _CHECK.size  # the bytes the CRC-32 covers
_PADDING = bytes(HEADER_BYTES)
ROOT_WINDOW = 64  # broadcasts a root keeps in flight before the next one waits for room
SMALL_MESSAGE = 64 * 1024  # bytes: a message up to this size counts as small (`Stream.small`)

# The most a member allocates for one broadcast message's out-of-band frames: the frames'
# sizes come from a checked envelope, but a damaged one must not ask for a petabyte.
FRAMES_MAX = 2**40


def build_header(envelope: bytes) -> bytearray:
    """The fixed-size header broadcast first: the envelope itself when it fits; else its
    length, and a CRC-32 of the header in its last 4 bytes, which a member checks before it
    allocates that many bytes."""
    length = len(envelope)
    if length <= INLINE_ENVELOPE:
        header = bytearray(_HEAD.pack(_MAGIC, _MESSAGE, length) + envelope)
        header += _PADDING[: HEADER_BYTES - len(header)]
        return header
    header = bytearray(HEADER_BYTES)
    _HEAD.pack_into(header, 0, _MAGIC, _MESSAGE, length)
    _CHECK.pack_into(header, _CHECKED, zlib.crc32(memoryview(header)[:_CHECKED]))
    return header


class _Incoming:
    """A broadcast message whose payload broadcasts are still in flight."""

    __slots__ = ("frames", "meta", "nbytes", "requests")

    def __init__(
        self, meta: memoryview, frames: list[Any], requests: list[MPI.Request], nbytes: int
    ) -> None:
        self.meta = meta
        self.frames = frames
        self.requests = requests
        self.nbytes = nbytes


class Stream:
    """One broadcast stream, as this rank sees it (its root, or one of its members)."""

    def __init__(
        self,
        key: int,
        comm: MPI.Comm,
        root: int,
        is_root: bool,
        pool: BufferPool,
        members: Sequence[int] = (),
    ) -> None:
        self.key = key
        self.comm = comm
        self.root = root  # the root's rank in the transport's communicator
        self.members = tuple(members)  # the other ranks in it (in the transport's communicator)
        self.is_root = is_root
        self.pool = pool
        self.count = 0  # messages broadcast (the root) or handed to the sink (a member)
        self.ended = False  # a member: the root's end-of-stream header arrived
        # ... and the root's count of point-to-point messages to this rank when it ended
        self.sent_directly = 0
        self.direct: list[SendTicket] = []  # the root's point-to-point sends still in flight
        self.sending: deque[SendTicket] = deque()  # the root's broadcasts in flight
        self.incoming: deque[_Incoming] = deque()  # a member's messages, in order
        # A member: the last message broadcast here was small (`SMALL_MESSAGE`), so the next
        # is likely small too: an idle wait then tests the header at every probe
        # (`MPITransport.spin`).
        self.small = False
        self.broken = False  # a member: a header or envelope could not be read (see _broken)
        self._header = bytearray(HEADER_BYTES)
        self._header_request: MPI.Request | None = None
        self._envelope: tuple[bytearray, MPI.Request] | None = None
        if not is_root:
            self._post_header()

    # -- the root --------------------------------------------------------------------------

    def broadcast(self, meta: bytes, frames: Sequence[Frame], inline_max: int) -> SendTicket:
        """Post one message's broadcasts; its ticket is done when they all complete here."""
        ibcast = self.comm.Ibcast
        if frames:
            frames = [f if f.flags.c_contiguous else np.ascontiguousarray(f) for f in frames]
            offsets = [MPI.Get_address(f) for f in frames if f.nbytes > inline_max]
            envelope, oob = build_envelope(meta, frames, inline_max, offsets)
        else:
            envelope, oob = build_envelope(meta, (), inline_max)
        length = len(envelope)
        if length > ENVELOPE_MAX:  # members would refuse it: every frame out of band, then
            envelope, oob = build_envelope(meta, frames, -1, [MPI.Get_address(f) for f in frames])
            length = len(envelope)
            if length > ENVELOPE_MAX:
                raise EncodeError(
                    "a message",
                    bytes,
                    ValueError(f"its envelope is {length} bytes; the limit is {ENVELOPE_MAX}"),
                )
        header = build_header(envelope)
        if length <= INLINE_ENVELOPE:
            requests = [ibcast(header, root=0)]
        else:
            requests = [ibcast(header, root=0), ibcast(envelope, root=0)]
        for frame in oob:
            requests.append(ibcast([frame_bytes_view(frame), MPI.BYTE], root=0))
        nbytes = length + sum(frame.nbytes for frame in oob) if oob else length
        ticket = SendTicket(self.root, nbytes, state=(requests, header, envelope, oob))
        self.sending.append(ticket)
        self.count += 1
        return ticket

    def end(self, sent_directly: int = 0) -> SendTicket:
        """Post the end-of-stream header (the root's last broadcast on this stream), with how
        many messages the root had sent to the one member point-to-point by then."""
        header = bytearray(HEADER_BYTES)
        _HEAD.pack_into(header, 0, _MAGIC, _END, sent_directly)
        ticket = SendTicket(self.root, HEADER_BYTES, state=([self.comm.Ibcast(header, 0)], header))
        self.sending.append(ticket)
        return ticket

    def finish_sends(self) -> bool:
        """Mark the root's completed broadcasts done; True if any completed."""
        found = False
        while self.sending:
            ticket = self.sending[0]
            if not MPI.Request.Testall(ticket.state[0]):
                break
            ticket.state = None
            ticket.done = True
            self.sending.popleft()
            found = True
        return found

    # -- a member --------------------------------------------------------------------------

    def _post_header(self) -> None:
        self._header_request = self.comm.Ibcast(self._header, root=0)

    def receive(self, sink: Sink) -> bool:
        """Take in what arrived: post the broadcasts its headers announce, hand completed
        messages to ``sink`` in order, post the next header. True if anything happened.

        A message is handed over before the next header is posted: a large frame's broadcast
        often completes inside the call that posts it, and its message should not wait."""
        found = False
        incoming = self.incoming
        while True:
            moved = False
            if self._envelope is not None:
                buffer, request = self._envelope
                if request.Test():
                    self._envelope = None
                    self._expect(buffer)
                    moved = True
            elif self._header_request is not None and self._header_request.Test():
                self._header_request = None
                self._on_header()
                moved = True
            while incoming and MPI.Request.Testall(incoming[0].requests):
                arrival = incoming.popleft()
                self.count += 1
                sink(self.root, arrival.meta, arrival.frames, arrival.nbytes)
                moved = True
            if self._header_request is None and self._envelope is None and not self.ended:
                self._post_header()  # after this message's broadcasts, as the root posted them
                moved = True
            if not moved:
                return found
            found = True

    def _on_header(self) -> None:
        header = self._header
        magic, kind, length = _HEAD.unpack_from(header, 0)
        if magic != _MAGIC or kind not in (_MESSAGE, _END):
            raise self._broken(f"magic {bytes(magic)!r}, kind {kind}")
        if kind == _END:
            self.ended = True
            self.sent_directly = length
            return
        if length <= INLINE_ENVELOPE:
            self._expect(bytearray(header[_HEAD.size : _HEAD.size + length]))
            return
        # A corrupted length must not allocate gigabytes: the header's checksum covers it.
        if _CHECK.unpack_from(header, _CHECKED)[0] != zlib.crc32(memoryview(header)[:_CHECKED]):
            raise self._broken(f"its checksum does not match (envelope length {length})")
        if length > ENVELOPE_MAX:
            raise self._broken(f"an envelope of {length} bytes, over the {ENVELOPE_MAX} limit")
        buffer = bytearray(length)
        self._envelope = (buffer, self.comm.Ibcast(buffer, root=0))

    def _broken(self, what: str) -> DecodeError:
        """The error for a header that cannot be read; the stream stops (a member that missed
        one broadcast of the root's sequence can never match the rest)."""
        self.ended = True
        self.broken = True
        return DecodeError(
            f"broadcast stream {self.key} from rank {self.root} carried a header geode_mpi "
            f"cannot read ({what}): are all ranks running the same geode_mpi? The stream stops here"
        )

    def _expect(self, envelope: bytearray) -> None:
        """Post the frames an envelope announces and queue the message (`receive` posts the
        next header)."""
        try:
            meta, inline, oob = parse_envelope(envelope)
            if oob and sum(size for size, _ in oob) > FRAMES_MAX:
                raise DecodeError(f"its frames add up to more than {FRAMES_MAX} bytes")
        except ValueError as exc:
            raise self._broken(f"its envelope: {exc}") from exc
        frames: list[Any] = []
        requests: list[MPI.Request] = []
        nbytes = len(envelope)
        for frame in inline:
            if frame is None:
                size, offset = oob[len(requests)]
                try:
                    target = self.pool.take(size, offset)
                except MemoryError as exc:
                    raise self._broken(f"no memory for its {size}-byte frame") from exc
                requests.append(self.comm.Ibcast([target, MPI.BYTE], root=0))
                frames.append(target)
                nbytes += size
            else:
                frames.append(frame)
        self.small = nbytes <= SMALL_MESSAGE
        self.incoming.append(_Incoming(meta, frames, requests, nbytes))

    # -- both ------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Data moving: broadcasts sent and not complete, or payloads being received."""
        return bool(self.sending or self.incoming or self._envelope is not None)

    def requests(self) -> list[MPI.Request]:
        """Every request this stream has in flight (for a wait that tests them)."""
        found = [request for ticket in self.sending for request in ticket.state[0]]
        for arrival in self.incoming:
            found.extend(arrival.requests)
        if self._envelope is not None:
            found.append(self._envelope[1])
        if self._header_request is not None:
            found.append(self._header_request)
        return found

    def free(self) -> None:
        self.comm.Free()


def frame_bytes_view(frame: Frame) -> Frame:
    """A contiguous frame as uint8 (datetimes export no buffer; their bytes do)."""
    if frame.dtype.kind in "mM":
        return frame.view(np.uint8).reshape(-1)
    return frame
