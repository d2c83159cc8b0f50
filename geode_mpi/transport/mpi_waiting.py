"""`MPITransport`'s progress and waits: a progress step, the spin of an idle wait (probes),
and of a wait with transfers in flight (tests of their requests, one transfer alone apart)."""

from __future__ import annotations

import os
import time

from mpi4py import MPI

from geode_mpi.transport.mpi_batches import BATCH_DELAY
from geode_mpi.transport.mpi_frames import LATE_ENVELOPE
from geode_mpi.transport.mpi_parts import _ANY_SOURCE, _ANY_TAG, _BYTE, TAG_META, MPIParts

TESTS_PER_POLL = 64


class Waiting(MPIParts):
    """The progress and the waits of `MPITransport` (which inherits them)."""

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
                    if not self._arrivals[source] and source not in leads.slot:
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
            arrival = self._arrivals_from(source)[0]
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
        arrival = self._arrivals_from(next(iter(waiting)))[0]
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
