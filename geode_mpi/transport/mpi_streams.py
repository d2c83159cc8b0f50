"""`MPITransport`'s broadcast streams (topics): each member rank sent to in turn, large
frames down a relay tree or through the node's shared segment, and what arrives of them (an
end marker, a relayed or a shared envelope); see transport/fanout.py."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from mpi4py import MPI

from geode_mpi.errors import DecodeError
from geode_mpi.transport.base import Frame, SendTicket, frame_bytes
from geode_mpi.transport.envelope import (
    build_envelope,
    check_envelope,
    message_bytes,
    parse_envelope,
)
from geode_mpi.transport.fanout import FanTicket, end_marker, read_end_marker
from geode_mpi.transport.mpi_parts import (
    _AS_ENVELOPE,
    _AS_META,
    TAG_ENVELOPE,
    TAG_FRAME,
    TAG_STREAM,
    MPIParts,
    _Arrival,
)
from geode_mpi.transport.relay import (
    PREFIX_BYTES,
    TAG_RELAYED,
    read_prefix,
    relayed_envelope,
    shape_for,
)
from geode_mpi.transport.sealed import SHARED_MIN
from geode_mpi.transport.shared import TAG_SHARED
from geode_mpi.transport.tally import TAG_COUNT

_BYTE = MPI.BYTE
END = -2  # _Arrival.relay of an end marker: END - key


def _ended(arrivals: deque[_Arrival], marker: int) -> bool:
    """Whether everything before end marker ``marker`` (an `_Arrival.relay`) has left the
    queue: only other end markers are ahead of it."""
    for arrival in arrivals:
        if arrival.relay == marker:
            return True
        if arrival.relay > END:
            return False
    return False


class Streams(MPIParts):
    """The broadcast streams of `MPITransport` (which inherits them)."""

    # -- broadcast streams (see transport/fanout.py) -----------------------------------------

    def open_streams(self, streams: Sequence[tuple[int, int]], members: Sequence[int]) -> None:
        """See `Transport.open_streams`: bookkeeping only, nothing is sent. Reopened after a
        close, a stream lets through what its root sent after the old one's end marker."""
        if not streams:
            return
        for key, _ in streams:
            held = self._fanouts.release(key)
            if held is not None:
                queue = self._arrivals_from(held)
                for index, arrival in enumerate(queue):
                    if arrival.relay == END - key:
                        del queue[index]
                        break
                if not queue:
                    self._waiting_sources.discard(held)
        self.shared.open()  # the first stream: collective (every rank opens every stream)
        self._fanouts.open(streams, members)

    def zero_copy_array(self, shape: tuple[int, ...], dtype: Any) -> Frame:
        """See `Transport.zero_copy_array`: in this rank's part of the node's segment."""
        return self.shared.lease(shape, dtype)

    def broadcast(self, key: int, meta: bytes, frames: Sequence[Frame]) -> SendTicket:
        """See `Transport.broadcast`: the envelope (and every large frame, from its own memory)
        sent to each member in turn; one ticket for all of them."""
        members = self._fanouts.members(key)
        if len(members) == 1 and (
            members[0] not in self.shared.local
            or sum(frame.nbytes for frame in frames) < SHARED_MIN
        ):
            return self.send(members[0], meta, frames, True)
        check_envelope(meta)  # before anything is posted: a refused message is refused whole
        if not frames:
            return self._batch_to(members, _AS_META, meta)
        inline_max = self.inline_max
        if all(frame.nbytes <= inline_max for frame in frames):
            envelope = build_envelope(meta, frames, inline_max)[0]  # (copies the frames)
            return self._batch_to(members, _AS_ENVELOPE, envelope)
        for dest in members:
            if dest in self._batches:
                self._send_batch(dest)  # what was batched before this message goes before it
        isend = self.comm.Isend
        sent_to = self.sent_to
        requests: list[MPI.Request] = []
        # A large strided frame for members all on this node is copied once, straight into
        # the node's segment (`NodeShare.fill`), not first into a buffer of its own.
        strided = self.shared.enabled and not self.shared.split(members)[1]
        flat = flat_frames(frames, inline_max if strided else -1)
        offsets = _hints(flat, inline_max)
        envelope, oob = build_envelope(meta, flat, inline_max, offsets)
        shared = self._share(members, envelope, oob) if self.shared.enabled else None
        if shared is not None:
            if not shared[0]:
                return shared[1]
            members = shared[0]
        elif strided and any(not frame.flags.c_contiguous for frame in oob):  # (no room)
            flat = flat_frames(flat, -1)
            offsets = _hints(flat, inline_max)
            envelope, oob = build_envelope(meta, flat, inline_max, offsets)
        shape = shape_for(sum(frame.nbytes for frame in oob), len(members), self.family)
        if shape is not None:
            return self._relay(shape, members, envelope, flat, oob, offsets)
        for dest in members:  # per member, its frames first, as `send` posts them
            for frame in oob:
                requests.append(isend([frame, _BYTE], dest, TAG_FRAME))
            requests.append(isend(envelope, dest, TAG_ENVELOPE))
            sent_to[dest] += 1
        nbytes = len(envelope) + sum(frame.nbytes for frame in oob)
        ticket = SendTicket(self.rank, nbytes, state=(requests, envelope, flat, []))
        if not self._finish(ticket):
            self._active.append(ticket)
        return ticket

    def _share(
        self, members: Sequence[int], envelope: bytes, oob: list[Frame]
    ) -> tuple[tuple[int, ...], SendTicket] | None:
        """`broadcast` of large frames to the members on this node through its shared segment
        (transport/shared.py): the members left to send to, and the notices' ticket; None if
        nothing went that way (too small, no member here, no room)."""
        if sum(frame.nbytes for frame in oob) < SHARED_MIN:
            return None
        near, far = self.shared.split(members)
        notice = self.shared.place(near, oob, envelope) if near else None
        if notice is None:
            return None
        requests = [self.comm.Isend(notice, dest, TAG_SHARED) for dest in near]
        self.shared.fill()  # the copy, while the members take the notices
        for dest in near:
            self.sent_to[dest] += 1
        ticket = SendTicket(self.rank, len(notice), state=(requests, notice, [], []))
        if not self._finish(ticket):
            self._active.append(ticket)
        return far, ticket

    def _batch_to(self, members: Sequence[int], kind: int, payload: bytes) -> SendTicket:
        """A small broadcast joins each member's batch, as a batched `send` would: one MPI
        message then carries many of a stream's messages to each member (the same order,
        since a batch keeps the order of everything sent to its rank). Broadcasts that ride
        the same batches share one ticket."""
        add = self._add_to_batch
        parts = [add(dest, kind, payload) for dest in members]
        fan = self._fan
        if fan is None or fan.parts != parts:  # (tickets compare by identity)
            fan = self._fan = FanTicket(self.rank, len(payload), parts)
        return fan

    def _relay(
        self,
        shape: int,
        members: Sequence[int],
        envelope: bytes,
        flat: list[Frame],
        oob: list[Frame],
        offsets: list[int],
    ) -> SendTicket:
        """`broadcast` of large frames relayed among the members in ``shape``
        (transport/relay.py): the frames to this rank's children, the envelope to every
        member."""
        number, requests = self._relays.start(shape, members, oob, offsets)
        message = relayed_envelope(number, envelope)
        isend = self.comm.Isend
        for dest in members:
            requests.append(isend(message, dest, TAG_RELAYED))
            self.sent_to[dest] += 1
        nbytes = len(message) + sum(frame.nbytes for frame in oob)
        ticket = SendTicket(self.rank, nbytes, state=(requests, message, flat, []))
        if not self._finish(ticket):
            self._active.append(ticket)
        return ticket

    def close_stream(
        self, key: int, timeout: float | None = None, joining: Sequence[int] = ()
    ) -> None:
        """See `Transport.close_stream`. The root sends each member, and each rank in
        ``joining``, the stream's end marker, behind everything broadcast; each of them waits
        until it has arrived, and with it everything the root sent before it, and holds what
        the root sends after it until the stream is opened again here."""
        root = self._fanouts.root_of(key)
        if root is None:
            return
        stream = self._fanouts.get(key)
        if root == self.rank:
            members = () if stream is None else stream[1]
            marker = end_marker(key)
            for dest in [*members, *sorted(set(joining) - {root, *members})]:
                if dest in self._batches:
                    self._send_batch(dest)
                request = self.comm.Isend(marker, dest, TAG_STREAM)
                self.sent_to[dest] += 1
                ticket = SendTicket(dest, len(marker), state=([request], marker, [], []))
                if not self._finish(ticket):
                    self._active.append(ticket)
        elif stream is not None or self.rank in joining:
            deadline = None if timeout is None else time.monotonic() + timeout
            arrivals = self._arrivals_from(root)  # (where its end marker will be)
            self._wait(
                lambda: _ended(arrivals, END - key),
                deadline,
                timeout,
                lambda: f"broadcast stream {key} from rank {root} did not end",
                "close_stream()",
            )
            self._fanouts.hold(key, root)
        if stream is not None:
            self._fanouts.remove(key)

    @property
    def relayed(self) -> int:
        """How many large broadcasts this rank has rooted or received down a relay tree."""
        return self._relays.count

    def _take_other(self, source: int, tag: int, buffer: bytearray) -> bool:
        if tag == TAG_COUNT:  # not an envelope: not counted itself
            self._tally.heard(source, buffer)
            return True
        self.received_from[source] += 1
        self._accept_stream(source, tag, buffer)  # an end marker, or a relayed envelope
        return True

    def _accept_stream(self, source: int, tag: int, buffer: bytearray) -> None:
        """An end marker, or an envelope whose large frames come down a relay tree or are
        in the root's shared slot."""
        if tag == TAG_SHARED:
            self._accept_shared(source, buffer)
            return
        if tag == TAG_STREAM:
            key = read_end_marker(buffer, source)
            if self._fanouts.root_of(key) != source:  # it would hold the queue for ever
                raise DecodeError(f"rank {source} sent an end marker of stream {key}, not its own")
            self._arrivals_from(source).append(_Arrival(memoryview(buffer), [], [], 0, END - key))
            self._waiting_sources.add(source)
            return
        if tag != TAG_RELAYED:
            raise DecodeError(f"rank {source} sent a message with tag {tag}, unknown here")
        number = read_prefix(buffer, source)
        if source == self.rank:  # a root's own copy goes as a plain message, never relayed
            raise DecodeError(f"rank {source} sent a relayed envelope to itself")
        try:
            meta, inline, oob = parse_envelope(memoryview(buffer)[PREFIX_BYTES:])
        except ValueError as exc:
            raise DecodeError(f"rank {source} sent a message geode_mpi cannot read: {exc}") from exc
        sizes = iter(size for size, _ in oob)
        frames: list[Frame | memoryview | int] = [
            next(sizes) if frame is None else frame for frame in inline
        ]
        arrival = _Arrival(meta, frames, [], message_bytes(meta, inline, oob), number)
        queue = self._arrivals_from(source)
        queue.append(arrival)
        self._waiting_sources.add(source)
        if len(queue) == 1:
            self._complete_arrivals()

    def _accept_shared(self, source: int, buffer: bytearray) -> None:
        meta, frames, nbytes = self.shared.read(source, buffer)
        queue = self._arrivals[source]
        if queue:  # (its frames are all in: it waits only for its turn)
            queue.append(_Arrival(meta, frames, [], nbytes))
        else:
            self._sink(source, meta, frames, nbytes)


def flat_frames(frames: Sequence[Frame], strided_above: int) -> list[Frame]:
    """Each frame as its bytes (`frame_bytes`: a strided frame copied, once for every member),
    except strided frames larger than ``strided_above`` (-1: none), left as they are."""
    return [
        frame
        if strided_above >= 0 and frame.nbytes > strided_above and not frame.flags.c_contiguous
        else frame_bytes(frame)
        for frame in frames
    ]


def _hints(flat: Sequence[Frame], inline_max: int) -> list[int]:
    """The out-of-band frames' addresses (`build_envelope`'s hints; 0 for a strided one)."""
    return [
        MPI.Get_address(frame) if frame.flags.c_contiguous else 0
        for frame in flat
        if frame.nbytes > inline_max
    ]
