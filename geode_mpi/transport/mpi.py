"""The MPI transport: nonblocking sends, matched-probe receives, frames as raw memory.

Every envelope is one MPI message on `TAG_ENVELOPE`: a transport header, a frame table, the
meta bytes, and the small frames inline. Frames larger than ``inline_max`` go as their own MPI
messages on `TAG_FRAME`, sent from the array's memory (strided arrays through an MPI derived
datatype, so nothing is copied on the send side), and they go *before* their envelope; to a rank
over the network (`paths.network_ranks`) *after* it (`FRAMES_AFTER`), into receives posted as
it comes.

The receiver takes everything with matched probes on any tag. MPI never lets two messages from
one sender overtake each other when both match the same receive, so per source the receiver sees
a message's frames, then its envelope, in the order sent. A probed frame is held matched (its
size is in the probe's status); its envelope, right behind it, is received and parsed, and only
then are its frames received: the per-message Python work runs before the big copy, on a warm
cache, and not after it on a cache the copy has just evicted. See docs/wire-format.md.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from mpi4py import MPI

from geode_mpi.errors import DecodeError
from geode_mpi.transport.base import (
    Frame,
    SendTicket,
    frame_bytes,
)
from geode_mpi.transport.envelope import (
    ALIGN,
    FLAGS_BYTE,
    FRAMES_AFTER,
    HEADER_SIZE,
    MAGIC,
    META_MAX,
    build_envelope,
    check_envelope,
    one_frame_envelope,
    parse_envelope,
)
from geode_mpi.transport.envelope import (
    VERSION as ENVELOPE_VERSION,
)
from geode_mpi.transport.express import ExpressParts
from geode_mpi.transport.mpi_collective import CollectiveSteps
from geode_mpi.transport.mpi_frames import LATE_ENVELOPE, strided_datatype
from geode_mpi.transport.mpi_frames import _Held as _Held  # (mpi_parts.py declares with it)
from geode_mpi.transport.mpi_parts import (
    _AS_ENVELOPE,
    _AS_META,
    TAG_BATCH,
    TAG_ENVELOPE,
    TAG_FRAME,
    TAG_META,
    _Arrival,
)
from geode_mpi.transport.mpi_parts import TAG_STREAM as TAG_STREAM  # (tests read it here)
from geode_mpi.transport.mpi_setup import Setup
from geode_mpi.transport.mpi_streams import END, Streams
from geode_mpi.transport.prepost import (
    INDEX,
    ONE_FRAME,
    ONE_FRAME_META,
    ROOM,
    TAG_LEAD,
    lead_message,
    one_frame_lead,
)
from geode_mpi.transport.relay import (
    TAG_RELAY_HEAD,
)
from geode_mpi.transport.sealed import keep_or_copy

_BYTE = MPI.BYTE
_ANY_SOURCE = MPI.ANY_SOURCE
_testall = MPI.Request.Testall
_ANY_TAG = MPI.ANY_TAG
BATCH_MAX = 32  # envelopes in a batch before it goes out on its own
BATCH_BYTES = 32 * 1024  # bytes in a batch before it goes out on its own
BATCH_DELAY = 100e-6  # a poll sends batches this old; a wait sends them all at once
LAZY_GUESS = 512  # bytes a lazy entry counts for in its batch until it is produced
# Before each entry of a batch: its length and what it is (an envelope, or a meta alone),
# padded so that every entry starts 16-byte aligned.
_BATCH_ENTRY = struct.Struct("<IB11x")
_ZEROS = bytes(16)
# (entry header, padding after the entry) by length << 1 | kind: entries of the same size
# recur, and a lookup is cheaper than packing
_FRAMINGS: dict[int, tuple[bytes, bytes]] = {}
_FRAMINGS_MAX = 4096


def _framing(length: int, kind: int) -> tuple[bytes, bytes]:
    framing = (_BATCH_ENTRY.pack(length, kind), _ZEROS[: -length % 16])
    if len(_FRAMINGS) < _FRAMINGS_MAX:
        _FRAMINGS[length << 1 | kind] = framing
    return framing


# Above this many bytes a send is not complete when posted (MPICH's shared-memory eager limit
# is 64 KiB): its first test waits for the next progress.
EAGER_GUESS = 256 * 1024
MAX_ARRIVALS_PER_POLL = 256
TESTS_PER_POLL = 64
# The ticket of every send that completed inside send(): shared, since nothing about it changes.
_SENT = SendTicket(-1, 0, done=True)
# magic, version, frame count of an envelope: what tells a meta-only one at a glance
_FAST_HEADER = struct.Struct("<2sBxI").unpack_from
_META_ONLY = (MAGIC, ENVELOPE_VERSION, 0)


class MPITransport(Setup, Streams, CollectiveSteps):
    """Transport over a private duplicate of an MPI communicator.

    Args:
        comm: the communicator whose ranks are the job (duplicated here, collectively).
        inline_max: frames up to this many bytes travel inside the envelope.
    """

    name = "MPI"

    # -- sending ---------------------------------------------------------------------------

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
        if self.frames_after[dest] and any(frame.nbytes > inline_max for frame in frames):
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
        if self.frames_after[dest]:
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

    def batch_meta(self, dest: int, meta: bytes) -> SendTicket:
        """`send(dest, meta, (), batch=True)`: the commonest isend, `_add_to_batch` inline
        (one call per message where there were two; measured in benchmarks/README.md)."""
        ticket = self._batches.get(dest)
        length = len(meta)
        if ticket is None or length > META_MAX:
            return self.send(dest, meta, (), True)  # a new batch (or a loopback) starts there
        framing = _FRAMINGS.get(length << 1 | _AS_META)
        if framing is None:
            framing = _framing(length, _AS_META)
        parts = ticket.state
        parts += framing[0], meta, framing[1]
        ticket.nbytes += length
        if len(parts) >= 3 * BATCH_MAX or ticket.nbytes >= BATCH_BYTES:
            self._send_batch(dest)
        return ticket

    def _batch(self, dest: int) -> SendTicket:
        """The ticket of the batch to ``dest``, begun now if there is none."""
        ticket = self._batches.get(dest)
        if ticket is None:
            self._check_dest(dest)
            ticket = self._batches[dest] = SendTicket(dest, 0, held=True, state=[])
            if not self._batch_since:
                self._batch_since = time.perf_counter()
        return ticket

    def _add_to_batch(self, dest: int, kind: int, payload: bytes) -> SendTicket:
        ticket = self._batch(dest)
        length = len(payload)
        framing = _FRAMINGS.get(length << 1 | kind)
        if framing is None:
            framing = _framing(length, kind)
        head, pad = framing
        parts = ticket.state
        parts += head, payload, pad
        ticket.nbytes += length  # (counted in `sent_to` as the batch goes out)
        if len(parts) >= 3 * BATCH_MAX or ticket.nbytes >= BATCH_BYTES:
            self._send_batch(dest)
        return ticket

    def batch_lazy(self, dest: int, produce: Callable[[], bytes]) -> SendTicket:
        """Add an entry to the batch to ``dest`` whose meta ``produce()`` gives only as the
        batch goes out (a run of messages, which grows until then: delivery/runs.py); the
        batch's ticket. Sent as a meta without frames (`_AS_META`)."""
        ticket = self._batch(dest)
        parts = ticket.state
        parts += None, produce, None
        self._lazy[dest] = self._lazy.get(dest, 0) + 1
        ticket.nbytes += LAZY_GUESS
        if len(parts) >= 3 * BATCH_MAX or ticket.nbytes >= BATCH_BYTES:
            self._send_batch(dest)
        return ticket

    def _produce(self, parts: list[Any]) -> None:
        """Replace the lazy entries of a batch's parts by what they produce, framed."""
        for index in range(0, len(parts), 3):
            if parts[index] is None:
                meta = parts[index + 1]()
                length = len(meta)
                framing = _FRAMINGS.get(length << 1 | _AS_META) or _framing(length, _AS_META)
                parts[index : index + 3] = framing[0], meta, framing[1]

    def flush(self) -> None:
        """Send every batch now."""
        for dest in list(self._batches):
            self._send_batch(dest)
        self._batch_since = 0.0

    def flush_due(self) -> bool:
        """Send the batches if the oldest is `BATCH_DELAY` old (what `progress` does first,
        alone: a sender's check between its polls); whether they went."""
        if self._batches and time.perf_counter() - self._batch_since > BATCH_DELAY:
            self.flush()
            return True
        return False

    def finish_send(self, ticket: SendTicket) -> bool:
        """Test a send in flight once (what a handle's ``done()`` needs between polls, without
        probing for arrivals); whether it is done now."""
        if not ticket.done and ticket.state is not None and self._finish(ticket):
            self._active.remove(ticket)
        return ticket.done

    def flush_to(self, dest: int) -> None:
        """Send the batch to ``dest`` now, if there is one (a run that is full goes at once:
        delivery/runs.py)."""
        if dest in self._batches:
            self._send_batch(dest)

    def _send_batch(self, dest: int) -> None:
        ticket = self._batches.pop(dest)
        parts = ticket.state
        if self._lazy and self._lazy.pop(dest, 0):
            self._produce(parts)
        ticket.held = False
        ticket.state = None
        if not self._batches:
            self._batch_since = 0.0  # the next batch starts its own BATCH_DELAY
        self.sent_to[dest] += len(parts) // 3
        if len(parts) == 3:  # one entry: it goes as itself
            buffer = parts[1]
            request = self.comm.Isend(
                buffer, dest, TAG_META if parts[0][4] == _AS_META else TAG_ENVELOPE
            )
        else:
            buffer = b"".join(parts)
            request = self.comm.Isend(buffer, dest, TAG_BATCH)
        if request.Test():
            ticket.done = True
        else:
            ticket.state = ([request], buffer, [], [])
            self._active.append(ticket)

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

    # -- receiving -------------------------------------------------------------------------

    def _probe_arrivals(self) -> bool:
        status = self._status
        improbe = self.comm.Improbe
        found = False
        missed = False
        for _ in range(MAX_ARRIVALS_PER_POLL):
            message = improbe(_ANY_SOURCE, _ANY_TAG, status)
            if message is None:
                # MPICH moves the next waiting message out of shared memory during the probe
                # that then reports none: only two misses in a row mean "nothing waiting".
                if missed:
                    break
                missed = True
                continue
            found = True
            missed = False
            self._take_matched(message)
        if self._unposted:
            self._post_late()
        return found

    def _post_late(self) -> bool:
        """Post the receives of the held frames whose envelopes are `LATE_ENVELOPE` late
        (see `_Held`); whether there were any."""
        unposted = self._unposted
        late = time.perf_counter() - LATE_ENVELOPE
        count = 0
        for held in unposted:  # (oldest first)
            if held.since > late:
                break
            # The sender's offset within a page is in the envelope, not known yet: a page
            # boundary (the offset matters only to shared memory's single copy).
            held.target = target = self.pool.take(held.count, 0)
            held.request = held.message.Irecv([target, _BYTE])
            count += 1
        if count:
            self._early += unposted[:count]
            del unposted[:count]
        return count > 0

    def _take_matched(self, message: MPI.Message) -> bool:
        """Receive a probed message; True if it was an envelope, False for a frame."""
        status = self._status
        source = status.Get_source()
        tag = status.Get_tag()
        if tag == TAG_FRAME:
            # Matched, not yet received: the copy waits until the envelope has been handled,
            # so that the Python work of a message runs before the copy, on a warm cache
            # (unless the envelope is late: `_Held`).
            held = _Held(status.Get_count(_BYTE), message)
            self._frames_in[source].append(held)
            self._unposted.append(held)
            if self.leads.slot[source] >= 0:  # it may be a lead's, claimed as the lead goes
                self._lead_first(source)
            return False
        if tag >= TAG_RELAY_HEAD:  # a relay's head or chunk (not an envelope), or a lead
            if tag == TAG_LEAD:
                return self._take_lead(message, source)
            self._relays.take(message, status)
            return False
        if self.leads.slot[source] >= 0:  # a lead sent before this message goes first
            self._lead_first(source)
        buffer = bytearray(status.Get_count(_BYTE))
        message.Recv(buffer)
        if tag == TAG_META:
            self.received_from[source] += 1
            self._accept_meta(source, memoryview(buffer))
            return True
        if tag == TAG_BATCH:
            self._accept_batch(source, buffer)
            return True
        if tag != TAG_ENVELOPE:  # the rarer kinds: a stream's end, a count of a drain
            return self._take_other(source, tag, buffer)
        self.received_from[source] += 1
        self._accept(source, buffer)
        return True

    def _accept_batch(self, source: int, buffer: bytearray) -> None:
        view = memoryview(buffer)
        offset = 0
        end = len(buffer)
        unpack = _BATCH_ENTRY.unpack_from
        entry_size = _BATCH_ENTRY.size
        run: list[memoryview] = []  # consecutive meta-only entries, handed over together
        count = 0
        try:
            while offset < end:
                start = offset + entry_size
                if start > end:
                    raise DecodeError(
                        f"rank {source} sent a batch that ends inside an entry header"
                    )
                length, kind = unpack(buffer, offset)
                stop = start + length
                if stop > end:
                    raise DecodeError(f"rank {source} sent a batch that ends inside an envelope")
                count += 1
                if kind == _AS_META and not self._arrivals[source]:
                    run.append(view[start:stop])  # the commonest entry
                    offset = stop + (-length % 16)
                    continue
                if run:
                    self._sink_run(source, run)
                    run = []
                if kind == _AS_META:
                    self._accept_meta(source, view[start:stop])
                else:
                    self._accept(source, view[start:stop])
                offset = stop + (-length % 16)
            if run:
                self._sink_run(source, run)
        finally:
            self.received_from[source] += count

    def _accept_meta(self, source: int, meta: memoryview) -> None:
        """A message sent as its meta alone: deliver it, in order behind any still arriving."""
        queue = self._arrivals[source]
        if queue:
            queue.append(_Arrival(meta, [], [], len(meta)))
        else:
            self._sink(source, meta, (), len(meta))

    def _accept(self, source: int, buffer: bytearray | memoryview, lead: bool = False) -> None:
        if (
            len(buffer) >= HEADER_SIZE
            and _FAST_HEADER(buffer, 0) == _META_ONLY  # ours, this version, meta only
            and not self._arrivals[source]
        ):
            self._sink(source, memoryview(buffer)[HEADER_SIZE:], (), len(buffer))
            return
        queue = self._arrivals[source]
        try:
            meta, inline, oob = parse_envelope(buffer)
        except ValueError as exc:
            raise DecodeError(f"rank {source} sent a message geode_mpi cannot read: {exc}") from exc
        if not oob and not queue:
            ready: list[Frame | memoryview] = [frame for frame in inline if frame is not None]
            self._sink(source, meta, ready, len(buffer))
            return
        frames: list[Frame | memoryview | int] = []
        requests: list[MPI.Request] = []
        nbytes = len(buffer)
        after = buffer[FLAGS_BYTE] & FRAMES_AFTER
        claim = (self._post_lead if lead else self._post) if after else self._claim
        for frame in inline:
            if frame is None:
                size, offset = oob[len(requests)]
                target, request = claim(source, size, offset)
                requests.append(request)
                nbytes += size
                frames.append(target)
            else:
                frames.append(frame)
        if after:
            arrival = _Arrival(meta, frames, requests, nbytes, sizes=[size for size, _ in oob])
            if not queue and self._complete(source, arrival):
                self._sink(source, meta, frames, nbytes)
                return
            queue.append(arrival)
        elif not queue and (requests[0].Test() if len(requests) == 1 else _testall(requests)):
            self._sink(source, meta, frames, nbytes)
            return
        else:
            queue.append(_Arrival(meta, frames, requests, nbytes))
        self._waiting_sources.add(source)

    def _post(self, source: int, size: int, offset: int) -> tuple[Frame, MPI.Request]:
        """`_claim` for an envelope whose frames follow it (`FRAMES_AFTER`): post the receive
        of the next frame from ``source`` before it comes (MPI keeps one sender's frames in
        order), so that over a network its bytes land there as they arrive."""
        if self._frames_in[source]:
            raise DecodeError(f"rank {source} sent frames before an envelope that says they follow")
        target = self.pool.take(size, offset)
        return target, self.comm.Irecv([target, _BYTE], source, TAG_FRAME)

    def _post_lead(self, source: int, size: int, offset: int) -> tuple[Frame, MPI.Request]:
        """`_post` for a lead's frame: a lead can be handed over after a probe matched its
        frames (they follow it, but its turn may come later: transport/prepost.py); those are
        claimed (`_claim`), the rest posted."""
        if self._frames_in[source]:
            return self._claim(source, size, offset)
        target = self.pool.take(size, offset)
        return target, self.comm.Irecv([target, _BYTE], source, TAG_FRAME)

    def _take_leads(self) -> bool:
        """Take the leads that landed in standing receives, and hand over those whose turn it
        is; whether any landed."""
        leads = self.leads
        landed = leads.poll()
        leads.repost()
        return landed

    def _due_leads(self) -> bool:
        """Hand over every waiting lead whose turn has come; whether any was."""
        return any([self._hand_leads(source) for source in list(self.leads.waiting)])

    def _hand_leads(self, source: int) -> bool:
        """Accept ``source``'s waiting leads, in turn, as long as the next one is the next
        message from it; whether any was."""
        received = self.received_from
        due = self.leads.due
        handed = False
        while (envelope := due(source, received[source])) is not None:
            received[source] += 1
            self._accept(source, envelope, lead=True)
            handed = True
        return handed

    def _lead_first(self, source: int) -> None:
        """Before a message probed from ``source`` is handled: a lead from it that landed in
        its standing receive and whose turn has come goes first."""
        leads = self.leads
        leads.test(source)
        if source in leads.waiting:
            self._hand_leads(source)
        leads.repost()

    def _take_lead(self, message: MPI.Message, source: int) -> bool:
        """A lead found by a probe (its sender's first, or one sent while no receive stood
        for it): received, and its sender given a standing receive from now on."""
        buffer = bytearray(self._status.Get_count(_BYTE))
        message.Recv(buffer)
        leads = self.leads
        leads.probed += 1
        if leads.slot[source] >= 0:
            leads.test(source)
        self._lead_landed(source, memoryview(buffer))
        leads.stand(source)
        leads.repost()
        return True

    def _lead_landed(self, source: int, lead: memoryview) -> None:
        """A lead from ``source``: the commonest (its turn now, one frame that follows it,
        nothing of its sender's still arriving) has its frame's receive posted here with no
        parsing beyond one unpack; any other waits its turn (`_hand_leads`). Its frame may
        have been probed already (a probe on any tag, in the same poll that the lead landed
        in, finds it first): then it is that frame's matched receive that is posted."""
        if len(lead) >= ONE_FRAME.size:
            number, magic, version, flags, count, meta_len, entry = ONE_FRAME.unpack_from(lead)
            size = entry >> 9
            held = self._frames_in[source]
            if (
                number == self.received_from[source]
                and count == 1
                and entry & 1
                and flags & FRAMES_AFTER
                and ONE_FRAME.size + meta_len <= len(lead)
                and magic == MAGIC
                and version == ENVELOPE_VERSION
                and not self._arrivals[source]
                and (not held or (len(held) == 1 and held[0].count == size))
                and source not in self.leads.waiting
            ):
                self.received_from[source] = number + 1
                offset = (entry >> 1 & 0xFF) * ALIGN
                if held:
                    target, request = self._claim(source, size, offset)
                else:
                    target = self.pool.take(size, offset)
                    request = self.comm.Irecv([target, _BYTE], source, TAG_FRAME)
                meta = lead[ONE_FRAME.size : ONE_FRAME.size + meta_len]
                nbytes = len(lead) - INDEX.size + size
                self._arrivals[source].append(
                    _Arrival(meta, [target], [request], nbytes, sizes=[size])
                )
                self._waiting_sources.add(source)
                return
        self.leads.add(source, lead)
        self._hand_leads(source)

    def _claim(self, source: int, size: int, offset: int) -> tuple[Frame, MPI.Request]:
        """Start receiving the next frame probed from ``source``, which must be ``size`` bytes,
        into a buffer at ``offset`` bytes into a page (where the sender's copy starts)."""
        waiting = self._frames_in[source]
        if not waiting:
            raise DecodeError(f"rank {source} sent an envelope before its frames")
        held = waiting[0]
        if held.count != size:
            raise DecodeError(
                f"rank {source} sent a frame of {held.count} bytes where its envelope says {size}"
            )
        waiting.popleft()
        if held.target is not None and held.request is not None:  # posted early
            self._early.remove(held)
            return held.target, held.request
        self._unposted.remove(held)  # (a frame and its envelope in one burst: the first)
        target = self.pool.take(size, offset)
        return target, held.message.Irecv([target, _BYTE])

    def _complete_arrivals(self) -> bool:
        found = False
        for source in list(self._waiting_sources):
            queue = self._arrivals[source]
            while queue and self._complete(source, queue[0]):
                arrival = queue.popleft()
                if arrival.relay > END:  # a message, not an end marker let go by close()
                    self._sink(source, arrival.meta, arrival.frames, arrival.nbytes)
                found = True
            if not queue:
                self._waiting_sources.discard(source)
        return found

    def _complete(self, source: int, arrival: _Arrival) -> bool:
        """Whether ``arrival``'s frames are all in (a relayed one's, placed in it)."""
        if arrival.relay < 0:
            if arrival.relay == -1:
                if arrival.sizes is not None:
                    return self._complete_posted(source, arrival)
                return bool(MPI.Request.Testall(arrival.requests))
            return self._fanouts.closed  # an end marker holds the queue until reopened
        relayed = self._relays.collect(source, arrival.relay)
        if relayed is None:
            return False
        frames = arrival.frames
        expected = [frame for frame in frames if type(frame) is int]
        if [frame.nbytes for frame in relayed] != expected:
            self._arrivals[source].remove(arrival)  # (it can never be delivered)
            raise DecodeError(
                f"rank {source} relayed frames of {[frame.nbytes for frame in relayed]} bytes "
                f"where its envelope says {expected}"
            )
        given = iter(relayed)
        arrival.frames = [next(given) if type(frame) is int else frame for frame in frames]
        arrival.nbytes += sum(frame.nbytes for frame in relayed)
        return True

    def _complete_posted(self, source: int, arrival: _Arrival) -> bool:
        """`_complete` for frames received unprobed (`_post`): in, and as long as their
        envelope said (a longer one fails in MPI, as truncated)."""
        requests = arrival.requests
        if len(requests) == 1:  # (the commonest: an array alone)
            status = self._frame_status
            if not requests[0].Test(status):
                return False
            got = [status.Get_count(_BYTE)]
        else:
            statuses = [MPI.Status() for _ in requests]
            if not MPI.Request.Testall(requests, statuses):
                return False
            got = [status.Get_count(_BYTE) for status in statuses]
        if got != arrival.sizes:
            queue = self._arrivals[source]
            if arrival in queue:
                queue.remove(arrival)  # (it can never be delivered)
                if not queue:
                    self._waiting_sources.discard(source)
            raise DecodeError(
                f"rank {source} sent frames of {got} bytes where its envelope says {arrival.sizes}"
            )
        return True

    # -- progress --------------------------------------------------------------------------

    def progress(self) -> bool:
        if self._batches and time.perf_counter() - self._batch_since > BATCH_DELAY:
            self.flush()
        leads = self.leads
        found = bool(leads.standing and self._take_leads())
        found = self._probe_arrivals() or found
        if leads.waiting:
            found = self._due_leads() or found
        if self._relays.moving and self._relays.advance():
            found = True
        if self._waiting_sources and self._complete_arrivals():
            found = True
        if self._active:
            found = self._finish_some() or found
        return found

    def _finish_some(self) -> bool:
        """Test up to `TESTS_PER_POLL` sends in flight (in turn, when there are more), so that
        a sender with thousands of sends pending does not pay for all of them on every poll."""
        active = self._active
        if len(active) <= TESTS_PER_POLL:
            still = [ticket for ticket in active if not self._finish(ticket)]
        else:
            start = self._next_test % len(active)
            self._next_test = start + TESTS_PER_POLL
            turn = active[start : start + TESTS_PER_POLL]
            if not [ticket for ticket in turn if self._finish(ticket)]:
                return False
            still = [ticket for ticket in active if not ticket.done]
        changed = len(still) != len(active)
        self._active = still
        return changed

    def spin(self, seconds: float) -> bool:
        return self.spin_meta(seconds, False) is not False

    def spin_meta(self, seconds: float, hand_back: bool = True) -> tuple[int, bytearray] | bool:
        """`spin`, for a receive that waits with its queue empty: the first arrival sent as
        its meta alone (`TAG_META`), from a rank with nothing else still arriving, comes back
        as ``(rank, meta)``, received and counted but not handed to the sink (the caller
        admits it: `Engine.take_arrival`); anything else goes its usual way (True once
        something did, False if nothing came)."""
        if self._batches:
            self.flush()
        if (
            self._active
            or self._waiting_sources
            or self._relays.moving
            or (self._early and any(held.request for held in self._early))
        ):  # `busy`, inline (a spin per small receive): both must say the same
            return self._spin_transfers(seconds)
        improbe = self.comm.Improbe
        status = self._status
        leads = self.leads
        until = time.perf_counter() + seconds
        while True:
            message = improbe(_ANY_SOURCE, _ANY_TAG, status)
            if message is not None:
                if hand_back and status.Get_tag() == TAG_META:
                    source = status.Get_source()
                    # (else it waits its turn behind them, or behind a lead that may have
                    # landed in its standing receive: `_take_matched` takes that first)
                    if not self._arrivals[source] and leads.slot[source] < 0:
                        buffer = bytearray(status.Get_count(_BYTE))
                        message.Recv(buffer)
                        self.received_from[source] += 1
                        return source, buffer
                if self._take_matched(message):
                    return True  # an envelope; the rest arrive with the next progress()
                until = time.perf_counter() + seconds  # a frame: its envelope follows it
            elif leads.standing and leads.poll():
                leads.repost()
                return True
            elif self._unposted and self._post_late():
                return True  # a frame whose envelope is late: now being received
            if time.perf_counter() > until:
                return False

    def _spin_transfers(self, seconds: float) -> bool:
        # MPI moves a large message a chunk per call: drive the transfers in flight with the
        # cheapest calls there are until one completes or something new arrives (a peer whose
        # send to us waits for our match may be what our own send waits for), then let
        # progress() do the bookkeeping.
        # A send's requests (a large message's: its lead, then its frame) end the spin once
        # all of them are done: the lead's completing alone changes nothing, and a spin that
        # returned then would pause (yielding the core) before the frame's handshake (Open
        # MPI's ob1/tcp moves a frame only as both ends poll).
        if not (self._early or self._relays.moving or self.oversubscribed):
            one = self._one_transfer()
            if one is not None:
                return self._spin_one(one, seconds)
        sends = [ticket.state[0] for ticket in self._active]
        requests = [request for each in sends for request in each]
        owners = [each for each in sends for _ in each]
        # Frames received unprobed (FRAMES_AFTER) are watched, not completed here: completing
        # reads their statuses (a frame's length is checked against its envelope's): watched
        # until all of one message's are in.
        posted: list[list[MPI.Request]] = []
        for source in self._waiting_sources:
            arrival = self._arrivals[source][0]
            if arrival.sizes is None:
                requests.extend(arrival.requests)
            else:
                posted.append(arrival.requests)
        # Frames received before their envelopes (_post_late); a completed request is null,
        # and would end every spin at once.
        requests.extend(held.request for held in self._early if held.request)
        requests += self._relays.sends()
        # A relay's chunk receives are watched too: advance() reads their statuses (a chunk's
        # length is checked against its head's).
        chunks = self._relays.receives()
        until = time.perf_counter() + seconds
        testany = MPI.Request.Testany
        testall = MPI.Request.Testall
        iprobe = self.comm.Iprobe
        clock = time.perf_counter
        # With ranks outnumbering cores, yield the core at every eighth poll: the peer moving
        # the other end may need it, but yielding at every poll left a topic's publisher and its
        # subscribers waiting for each other (4 ranks on 2 cores, 1 to 16 MiB fan-outs to 3
        # subscribers: 1.5 to 1.8 times raw Bcast's time, against 0.9 to 1.3 with every eighth;
        # the Ibcast streams before used every eighth too; see benchmarks/README.md, fanout.py).
        share = self.oversubscribed
        leads = self.leads if self.leads.standing else None
        turn = 0
        while True:
            if posted and any(all(one.Get_status() for one in each) for each in posted):
                # Deliver what completed before probing for more: over a network every probe
                # polls the sockets, microseconds before receive() could return.
                if self._complete_arrivals():
                    return True  # (the next poll does the rest of progress())
                return self.progress()
            if requests:
                index, done = testany(requests)
                if done and (not 0 <= index < len(owners) or testall(owners[index])):
                    return self.progress()
            if (
                (chunks and any(chunk.Get_status() for chunk in chunks))
                or iprobe(_ANY_SOURCE, _ANY_TAG)
                or (leads is not None and leads.poll())
                or clock() > until
                or (self._unposted and self._unposted[0].since < clock() - LATE_ENVELOPE)
            ):
                return self.progress()
            if share:
                turn += 1
                if not turn & 7:
                    os.sched_yield()

    def _one_transfer(self) -> list[MPI.Request] | None:
        """The requests of the one transfer in flight, when there is exactly one and it is a
        large message's (the commonest wait over a network: a send's lead and frame, or a
        received lead's posted frame receive); else None."""
        active, waiting = self._active, self._waiting_sources
        if len(active) + len(waiting) != 1:
            return None
        if active:
            return active[0].state[0]  # type: ignore[no-any-return]
        arrival = self._arrivals[next(iter(waiting))][0]
        return arrival.requests if arrival.sizes is not None and arrival.requests else None

    def _spin_one(self, requests: list[MPI.Request], seconds: float) -> bool:
        """`_spin_transfers` for `_one_transfer`'s requests, with nothing to set up and one
        test per poll: on Open MPI's network path every microsecond of Python between two
        polls of a moving frame costs one or more of transfer time (benchmarks/README.md,
        round 33). Watched with `Get_status` (a received frame's length is checked as it
        is completed, in `progress`)."""
        get_status = MPI.Request.Get_status
        iprobe = self.comm.Iprobe
        leads = self.leads if self.leads.standing else None
        clock = time.perf_counter
        until = clock() + seconds
        while True:
            if all(map(get_status, requests)):
                if self._waiting_sources and self._complete_arrivals():
                    return True  # delivered (the next poll does the rest of progress())
                return self.progress()
            if (
                iprobe(_ANY_SOURCE, _ANY_TAG)
                or (leads is not None and leads.poll())
                or clock() > until
                or (self._unposted and self._unposted[0].since < clock() - LATE_ENVELOPE)
            ):
                return self.progress()

    @property
    def busy(self) -> bool:
        return bool(
            self._active
            or self._waiting_sources
            or self._relays.moving
            # frames coming in before their envelopes (not one whose envelope was refused)
            or (self._early and any(held.request for held in self._early))
        )
