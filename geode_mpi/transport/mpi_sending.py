"""`MPITransport`'s sends: a message's envelope and its large frames (before the envelope,
or after it to a rank over the network, as a lead), a meta alone, a loopback, and a send's
completion."""

from __future__ import annotations

from collections.abc import Sequence

from mpi4py import MPI

from geode_mpi.transport.base import Frame, SendTicket, frame_bytes
from geode_mpi.transport.envelope import (
    FRAMES_AFTER,
    META_MAX,
    build_envelope,
    check_envelope,
    one_frame_envelope,
)
from geode_mpi.transport.express import ExpressParts
from geode_mpi.transport.mpi_frames import strided_datatype
from geode_mpi.transport.mpi_parts import (
    _AS_ENVELOPE,
    _AS_META,
    _BYTE,
    TAG_ENVELOPE,
    TAG_FRAME,
    TAG_META,
    MPIParts,
)
from geode_mpi.transport.prepost import ONE_FRAME_META, ROOM, TAG_LEAD, lead_message, one_frame_lead
from geode_mpi.transport.sealed import keep_or_copy

# Above this many bytes a send is not complete when posted (MPICH's shared-memory eager limit
# is 64 KiB): its first test waits for the next progress.
EAGER_GUESS = 256 * 1024
# The ticket of every send that completed inside send(): shared, since nothing about it changes.
_SENT = SendTicket(-1, 0, done=True)


class Sending(MPIParts):
    """The sends of `MPITransport` (which inherits them)."""

    def send(
        self, dest: int, meta: bytes, frames: Sequence[Frame], batch: bool = False
    ) -> SendTicket:
        """Start sending; see `Transport.send`.

        With ``batch``, a message with no large frame may wait, copied, to go out with the
        next ones to the same rank as one MPI message; its ticket (shared by the batch) is
        done once that MPI message is sent. A batch goes out when it holds `BATCH_MAX`
        envelopes or `BATCH_BYTES`, when a message that is not batched goes to the same rank,
        at a `progress` once the oldest batch is `BATCH_DELAY` old, and at every `spin`,
        `flush` and `close`: any wait sends everything batched.
        """
        if dest == self.rank:
            return self._loopback(meta, frames)
        if not frames and batch and len(meta) <= META_MAX:
            # The commonest isend: batched as its meta alone (as on TAG_META); the batch
            # checks dest when it starts (a batch to a bad rank never exists).
            return self._add_to_batch(dest, _AS_META, meta)
        if not 0 <= dest < self.size:  # (inline: a call here was ~3% of a small send)
            self._check_dest(dest)
        if not frames:  # not batched (a batched one is above), or too long: refused here
            if len(meta) > META_MAX:
                check_envelope(meta)  # refused whole, before anything is posted
            return self.send_meta(dest, meta)
        inline_max = self.inline_max
        if len(frames) == 1:
            frame = frames[0]
            if (
                frame.nbytes > inline_max
                and frame.flags.c_contiguous
                and frame.dtype.kind not in "mM"
            ):
                return self._send_one_frame(dest, meta, frame)
        check_envelope(meta)  # before anything is posted: a refused message is refused whole
        if batch and all(frame.nbytes <= inline_max for frame in frames):
            envelope = build_envelope(meta, frames, inline_max)[0]
            return self._add_to_batch(dest, _AS_ENVELOPE, envelope)
        if self.frames_after(dest) and any(frame.nbytes > inline_max for frame in frames):
            return self._send_frames_after(dest, meta, frames)
        if dest in self._batches:
            self._send_batch(dest)  # what was batched before this message goes before it
        requests: list[MPI.Request] = []
        datatypes: list[MPI.Datatype] = []
        offsets: list[int] = []
        nbytes = 0
        for frame in frames:  # out of band, and first: the receiver starts on them at once
            if frame.nbytes > inline_max:
                requests.append(self._send_frame(frame, dest, datatypes, offsets))
                nbytes += frame.nbytes
        envelope, oob = build_envelope(meta, frames, inline_max, offsets)
        last = self.comm.Isend(envelope, dest, TAG_ENVELOPE)
        self.sent_to[dest] += 1
        if not oob:
            if last.Test():
                return _SENT  # the common small message: complete at once, nothing to keep
            ticket = SendTicket(dest, len(envelope), state=([last], envelope, [], []))
            self._active.append(ticket)
            return ticket
        requests.append(last)
        nbytes += len(envelope)
        ticket = SendTicket(dest, nbytes, state=(requests, envelope, list(oob), datatypes))
        if not self._finish(ticket):
            self._active.append(ticket)
        return ticket

    def _check_dest(self, dest: int) -> None:
        if not 0 <= dest < self.size:  # -1 is MPI_PROC_NULL: MPI would drop it silently
            raise ValueError(f"dest must be a rank in 0..{self.size - 1}, got {dest!r}")

    def _send_one_frame(self, dest: int, meta: bytes, frame: Frame) -> SendTicket:
        """`send` for the commonest large message, one large contiguous frame (an array
        alone): the frame, then the envelope, with nothing to compute between the two; over a
        network (`frames_after`) the envelope first, riding the batch to ``dest`` if any."""
        isend = self.comm.Isend
        address = MPI.Get_address(frame)
        if self.frames_after(dest):
            if len(meta) <= ONE_FRAME_META and dest not in self._batches:
                # The commonest lead (nothing batched goes before it): packed in one step.
                count = self.sent_to[dest]
                envelope = one_frame_lead(count, meta, frame.nbytes, address)  # (its index too)
                requests = [isend(envelope, dest, TAG_LEAD)]
                self.sent_to[dest] = count + 1  # (after the pack: a refused one is not counted)
            else:
                envelope = one_frame_envelope(meta, frame.nbytes, address, FRAMES_AFTER)
                requests = self._lead(dest, envelope)
            requests.append(isend([frame, _BYTE], dest, TAG_FRAME))
        else:
            envelope = one_frame_envelope(meta, frame.nbytes, address)
            if dest in self._batches:
                self._send_batch(dest)  # what was batched before this message goes before it
            requests = [isend([frame, _BYTE], dest, TAG_FRAME)]
            requests.append(isend(envelope, dest, TAG_ENVELOPE))
            self.sent_to[dest] += 1
        nbytes = frame.nbytes + len(envelope)
        ticket = SendTicket(dest, nbytes, state=(requests, envelope, [frame], []))
        # A frame past MPI's eager limit is done only once the receiver has it: testing it
        # here would only delay the return.
        if nbytes > EAGER_GUESS or not self._finish(ticket):
            self._active.append(ticket)
        return ticket

    def _send_frames_after(self, dest: int, meta: bytes, frames: Sequence[Frame]) -> SendTicket:
        """`send` over a network (`frames_after`) of a message with out-of-band frames: its
        envelope, then its frames."""
        inline_max = self.inline_max
        offsets: list[int] = []
        for frame in frames:  # (as _send_frame finds them)
            if frame.nbytes > inline_max:
                contiguous = frame.flags.c_contiguous and frame.dtype.kind not in "mM"
                offsets.append(MPI.Get_address(frame) if contiguous else 0)
        envelope, oob = build_envelope(meta, frames, inline_max, offsets, FRAMES_AFTER)
        requests = self._lead(dest, envelope)
        datatypes: list[MPI.Datatype] = []
        for frame in oob:
            requests.append(self._send_frame(frame, dest, datatypes, []))
        nbytes = len(envelope) + sum(frame.nbytes for frame in oob)
        ticket = SendTicket(dest, nbytes, state=(requests, envelope, list(oob), datatypes))
        if not self._finish(ticket):
            self._active.append(ticket)
        return ticket

    def _lead(self, dest: int, envelope: bytes) -> list[MPI.Request]:
        """Send a `FRAMES_AFTER` envelope, its frames to follow: as a lead (`TAG_LEAD`, after
        the batch to ``dest`` if there is one), which ``dest`` receives into a receive posted
        before it comes (transport/prepost.py); one too long for that as the last entry of the
        batch to ``dest`` if there is one (one MPI message fewer), else on its own. Returns
        the request to complete with the message's (none if the batch carries it)."""
        if len(envelope) <= ROOM:
            if dest in self._batches:
                self._send_batch(dest)  # (counted in sent_to: the lead's number follows it)
            count = self.sent_to[dest]
            self.sent_to[dest] = count + 1
            return [self.comm.Isend(lead_message(count, envelope), dest, TAG_LEAD)]
        if dest in self._batches:
            self._add_to_batch(dest, _AS_ENVELOPE, envelope)  # (counted as the batch goes)
            if dest in self._batches:  # (not sent already by reaching BATCH_MAX)
                self._send_batch(dest)
            return []
        self.sent_to[dest] += 1
        return [self.comm.Isend(envelope, dest, TAG_ENVELOPE)]

    def send_meta(self, dest: int, meta: bytes) -> SendTicket:
        """`send(dest, meta, ())`, not batched: a message alone in its meta, as its own MPI
        message (a blocking send's; `SendPath.plain` calls it with a ``dest`` it sent to
        before), without `send`'s tests for frames and batching."""
        if dest == self.rank or len(meta) > META_MAX or not 0 <= dest < self.size:
            return self.send(dest, meta, ())  # (a loopback, or refused there)
        if dest in self._batches:
            self._send_batch(dest)  # what was batched before this message goes before it
        last = self.comm.Isend(meta, dest, TAG_META)
        self.sent_to[dest] += 1
        # Open MPI's shared memory completes a send of more than about 1 KiB only at the
        # second test (2821 of 3000 there, 13 at the first): a ticket to wait on costs
        # a blocking send several microseconds more (MPICH: done at the first).
        if last.Test() or last.Test():
            return _SENT
        return self.track_meta(dest, meta, last)

    def track_meta(self, dest: int, meta: bytes, request: MPI.Request) -> SendTicket:
        """The ticket of a meta's `Isend` that MPI did not finish at once: tested as progress
        runs, ``meta`` kept alive until then."""
        ticket = SendTicket(dest, len(meta), state=([request], meta, [], []))
        self._active.append(ticket)
        return ticket

    def express_parts(self, dest: int) -> ExpressParts | None:
        """What a sender to ``dest`` needs to do `send_meta` itself (a `Lane`'s express path,
        delivery/direct.py): the communicator's bound `Isend` and the tag of a meta alone,
        the done ticket, the batches held per rank (a send must not overtake one held for
        ``dest``: it goes by `send_meta` then), the counts of envelopes sent per rank, and
        `track_meta`. None for this rank itself (a loopback) or a rank outside the job."""
        if dest == self.rank or not 0 <= dest < self.size:
            return None
        return self.comm.Isend, TAG_META, _SENT, self._batches, self.sent_to, self.track_meta

    def finish_send(self, ticket: SendTicket) -> bool:
        """Test a send in flight once (what a handle's ``done()`` needs between polls, without
        probing for arrivals); whether it is done now."""
        if not ticket.done and ticket.state is not None and self._finish(ticket):
            self._active.remove(ticket)
        return ticket.done

    def _send_frame(
        self, frame: Frame, dest: int, datatypes: list[MPI.Datatype], offsets: list[int]
    ) -> MPI.Request:
        if frame.flags.c_contiguous and frame.dtype.kind not in "mM":
            # Where the frame starts within its page: the receiver lands it at the same offset,
            # because a copy between two buffers at different offsets runs up to 15% slower.
            offsets.append(MPI.Get_address(frame))
            return self.comm.Isend([frame, MPI.BYTE], dest, TAG_FRAME)
        offsets.append(0)
        if frame.flags.c_contiguous:  # datetimes export no buffer: send their bytes
            return self.comm.Isend([frame_bytes(frame), MPI.BYTE], dest, TAG_FRAME)
        datatype = strided_datatype(frame)
        datatypes.append(datatype)
        return self.comm.Isend([MPI.BOTTOM, 1, datatype], dest, TAG_FRAME)

    def _loopback(self, meta: bytes, frames: Sequence[Frame]) -> SendTicket:
        copies = [keep_or_copy(frame) for frame in frames]  # (sealed: a read-only view)
        nbytes = len(meta) + sum(frame.nbytes for frame in copies)
        self.sent_to[self.rank] += 1
        self.received_from[self.rank] += 1
        self._sink(self.rank, memoryview(meta), copies, nbytes)
        return SendTicket(self.rank, nbytes, done=True)

    def _finish(self, ticket: SendTicket) -> bool:
        requests, _, _, datatypes = ticket.state
        if not (requests[0].Test() if len(requests) == 1 else MPI.Request.Testall(requests)):
            return False
        for datatype in datatypes:
            datatype.Free()
        ticket.state = None
        ticket.done = True
        return True
