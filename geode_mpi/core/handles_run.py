"""The handle of a message that joined a run of small messages (`RunHandle`)."""

from __future__ import annotations

from geode_mpi import codec
from geode_mpi.core.handles import SendHandle
from geode_mpi.core.handles_shared import Sender, _first_held, _seen
from geode_mpi.delivery.pairs import PairOut
from geode_mpi.delivery.runs import OpenRun
from geode_mpi.delivery.sending import SendTicket


class RunHandle(SendHandle):
    """The handle of a message that joined a run (delivery/runs.py): the run and the message's
    index in it, from which its ticket, stamp and pair are read when asked. One small object
    per message, where a `SendHandle` is built with its stamp; the same answers."""

    __slots__ = ("_at", "_run")
    ack = False  # (a message that asks for its ack never joins a run)

    def __init__(self, geode: Sender, run: OpenRun, at: int) -> None:
        self._geode = geode  # (a message that joins a run is never its batch's first)
        self._run = run
        self._at = at

    @classmethod
    def opener(cls, geode: Sender, run: OpenRun) -> RunHandle:
        """The handle of the message that opened ``run`` (maybe its batch's first handle:
        asyncio then flushes it, as for a `SendHandle`)."""
        ticket = run.ticket
        if ticket.held and ticket is not _seen[0]:
            _first_held(geode, ticket)
        return cls(geode, run, 0)

    @property
    def _ticket(self) -> SendTicket:  # type: ignore[override]
        return self._run.ticket

    @property
    def _stamp(self) -> codec.Stamp:  # type: ignore[override]
        run, at = self._run, self._at
        return codec.Stamp(run.first_id + at, run.first_seq + at, run.stamps[at], run.src, run.dst)

    @property
    def _pair(self) -> PairOut | None:  # type: ignore[override]
        run = self._run
        return run.pair if run.keep else None

    def done(self) -> bool:
        """`SendHandle.done`, moving its send on at every sixty-fourth unfinished check (a
        loop that checks one handle per message it sends checks the same batch's many
        times): while its batch is held, sending the batches that are due; then testing its
        batch's send, and polling at every 1024th (a poll's probe for arrivals costs as much
        as many sends, and `isend` polls on its own)."""
        ticket = self._run.ticket
        if ticket.done:
            return True
        geode = self._geode
        geode.unfinished_checks += 1
        if geode.unfinished_checks & 63:
            return False
        path = geode.engine.path
        if ticket.held:
            return self._driven(path.flush_due)
        if geode.unfinished_checks & 1023:
            return self._driven(path.finish_send, ticket)
        return self._driven(geode.poll)  # (now and then all the same: a large run's send
        # completes only once its receiver, which may be waiting for us, takes it)
