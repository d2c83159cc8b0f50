"""`MPITransport`'s leads taken: the envelopes of network peers' large messages, landed in a
receive kept posted for them (transport/prepost.py) or probed, handed over in turn."""

from __future__ import annotations

from mpi4py import MPI

from geode_mpi.transport.envelope import ALIGN, FRAMES_AFTER, MAGIC
from geode_mpi.transport.envelope import VERSION as ENVELOPE_VERSION
from geode_mpi.transport.mpi_parts import _BYTE, TAG_FRAME, MPIParts, _Arrival
from geode_mpi.transport.prepost import ONE_FRAME


class LeadArrivals(MPIParts):
    """The leads taken by `MPITransport` (which inherits them)."""

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
        if source in leads.slot:
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
                nbytes = meta_len + size  # (the message's bytes: `message_bytes`)
                self._arrivals_from(source).append(
                    _Arrival(meta, [target], [request], nbytes, sizes=[size])
                )
                self._waiting_sources.add(source)
                return
        self.leads.add(source, lead)
        self._hand_leads(source)
