"""`MPITransport`'s receives: matched probes on any tag, an envelope or a batch accepted,
its frames claimed (held ones) or posted (frames that follow), and an arrival completed."""

from __future__ import annotations

import struct
import time

from mpi4py import MPI

from geode_mpi.errors import DecodeError
from geode_mpi.transport.base import Frame
from geode_mpi.transport.envelope import (
    FLAGS_BYTE,
    FRAMES_AFTER,
    HEADER_SIZE,
    MAGIC,
    message_bytes,
    parse_envelope,
)
from geode_mpi.transport.envelope import VERSION as ENVELOPE_VERSION
from geode_mpi.transport.mpi_frames import LATE_ENVELOPE, _Held
from geode_mpi.transport.mpi_parts import (
    _ANY_SOURCE,
    _ANY_TAG,
    _AS_META,
    _BATCH_ENTRY,
    _BYTE,
    TAG_BATCH,
    TAG_ENVELOPE,
    TAG_FRAME,
    TAG_META,
    MPIParts,
    _Arrival,
)
from geode_mpi.transport.mpi_streams import END
from geode_mpi.transport.prepost import TAG_LEAD
from geode_mpi.transport.relay import TAG_RELAY_HEAD

_testall = MPI.Request.Testall
MAX_ARRIVALS_PER_POLL = 256
# magic, version, frame count of an envelope: what tells a meta-only one at a glance
_FAST_HEADER = struct.Struct("<2sBxI").unpack_from
_META_ONLY = (MAGIC, ENVELOPE_VERSION, 0)


class Receiving(MPIParts):
    """The receives of `MPITransport` (which inherits them)."""

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
            self._frames_from(source).append(held)
            self._unposted.append(held)
            if source in self.leads.slot:  # it may be a lead's, claimed as the lead goes
                self._lead_first(source)
            return False
        if tag >= TAG_RELAY_HEAD:  # a relay's head or chunk (not an envelope), or a lead
            if tag == TAG_LEAD:
                return self._take_lead(message, source)
            self._relays.take(message, status)
            return False
        if source in self.leads.slot:  # a lead sent before this message goes first
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
            self._sink(source, memoryview(buffer)[HEADER_SIZE:], (), len(buffer) - HEADER_SIZE)
            return
        queue = self._arrivals[source]
        try:
            meta, inline, oob = parse_envelope(buffer)
        except ValueError as exc:
            raise DecodeError(f"rank {source} sent a message geode_mpi cannot read: {exc}") from exc
        if not oob and not queue:
            ready: list[Frame | memoryview] = [frame for frame in inline if frame is not None]
            self._sink(source, meta, ready, message_bytes(meta, inline, oob))
            return
        frames: list[Frame | memoryview | int] = []
        requests: list[MPI.Request] = []
        nbytes = message_bytes(meta, inline, oob)  # (what was sent: the envelope is not)
        after = buffer[FLAGS_BYTE] & FRAMES_AFTER
        claim = (self._post_lead if lead else self._post) if after else self._claim
        for frame in inline:
            if frame is None:
                size, offset = oob[len(requests)]
                target, request = claim(source, size, offset)
                requests.append(request)
                frames.append(target)
            else:
                frames.append(frame)
        if after:
            arrival = _Arrival(meta, frames, requests, nbytes, sizes=[size for size, _ in oob])
            if not queue and self._complete(source, arrival):
                self._sink(source, meta, frames, nbytes)
                return
            self._arrivals_from(source).append(arrival)
        elif not queue and (requests[0].Test() if len(requests) == 1 else _testall(requests)):
            self._sink(source, meta, frames, nbytes)
            return
        else:
            self._arrivals_from(source).append(_Arrival(meta, frames, requests, nbytes))
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
            queue = self._arrivals_from(source)
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
            self._arrivals_from(source).remove(arrival)  # (it can never be delivered)
            raise DecodeError(
                f"rank {source} relayed frames of {[frame.nbytes for frame in relayed]} bytes "
                f"where its envelope says {expected}"
            )
        given = iter(relayed)
        # (its nbytes counted these frames already, from its envelope: `message_bytes`)
        arrival.frames = [next(given) if type(frame) is int else frame for frame in frames]
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
            queue = self._arrivals_from(source)
            if arrival in queue:
                queue.remove(arrival)  # (it can never be delivered)
                if not queue:
                    self._waiting_sources.discard(source)
            raise DecodeError(
                f"rank {source} sent frames of {got} bytes where its envelope says {arrival.sizes}"
            )
        return True
