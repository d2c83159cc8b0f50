"""`MPITransport`'s collective steps: the settings check, the barrier of close(), drain()
and close() counting what was sent (`Tally`), and what a rank waits for, for diagnostics."""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from geode_mpi.base.backoff import CLOSING_YIELD, TOGETHER_YIELD
from geode_mpi.base.listing import ranks_named
from geode_mpi.transport import agreement
from geode_mpi.transport.mpi_parts import MPIParts

_NEWS, _PENDING = 1, 2  # a drain round's votes: told a peer something new; the caller's pending()


class CollectiveSteps(MPIParts):
    """The collective steps of `MPITransport` (which inherits them), and its close."""

    def pending_summary(self) -> str:
        """What this rank is waiting for, for diagnostics."""
        parts = []
        # (ranks as ranges, cut past a few: a rank sending to each of 2,000 named each)
        if self._active:
            dests = {ticket.dest for ticket in self._active}
            parts.append(f"{len(self._active)} send(s) to {ranks_named(dests)} not complete")
        held = {source: len(waiting) for source, waiting in enumerate(self._frames_in) if waiting}
        if held:
            parts.append(
                f"{sum(held.values())} frame(s) from {ranks_named(held)} waiting for their "
                "envelopes"
            )
        if self._waiting_sources:
            halves = sum(len(self._arrivals_from(source)) for source in self._waiting_sources)
            parts.append(
                f"{halves} message(s) from {ranks_named(self._waiting_sources)} half received"
            )
        parts.append(self.leads.summary())
        parts.append(self._relays.summary())
        parts.append(self.shared.summary())
        return "; ".join(part for part in parts if part) or "nothing in flight"

    # -- collective steps ------------------------------------------------------------------

    def check_same(self, value: bytes, what: str) -> None:
        """See `Transport.check_same`: by digest (`agreement.check_same`), O(1) bytes a rank."""
        self._arrive()
        agreement.check_same(self.comm, value, what)

    def private_comm(self) -> MPI.Intracomm:
        """See `Transport.private_comm`: a duplicate of this transport's communicator."""
        self.flush()  # (Dup is a blocking collective: see _arrive)
        return self.comm.Dup()

    def all_entered(self) -> Callable[[], bool]:
        """See `Transport.all_entered`: an ``Ibarrier`` (as close() begins, and before the
        collective calls: `Runtime.arrive`). This rank's counts so far go out first
        (`Tally.tell`; totals only grow, so telling early is harmless), so that their
        handshakes overlap the barrier and close() or drain() later tells only what was sent
        since, most often nothing."""
        self.flush()
        self._tally.tell(self.sent_to)
        request = self.comm.Ibarrier()
        return lambda: bool(request.Test())

    def allgather(self, value: Any) -> list[Any]:
        # Blocking on purpose. Tried (2026-11-27): Iallgather waited on with Backoff, so that a
        # rank arriving early would not poll flat out. At 4 ranks on 2 cores it took 82 us
        # instead of 38 with the ranks arriving together, and a loop of 0.5 to 4 ms of CPU work
        # per rank between allgathers ran 4.5 ms per step instead of 3.1: MPICH's blocking wait
        # already yields the core now and then, while a nonblocking collective advances only
        # inside its members' calls, and members asleep in a back-off held up the others.
        self._arrive()
        return list(self.comm.allgather(value))

    def _arrive(self) -> None:
        """Before a blocking collective: send what is batched (a peer may be waiting for it
        before it joins the collective: a publish, then `topic()`); once streams relay, wait,
        polling, until every rank is here, so that no rank waits for a relay through a rank
        blocked in the collective."""
        self.flush()
        if self._fanouts.relaying:
            entered = self.comm.Ibarrier()
            self.wait(entered.Test, None)

    def drain(
        self, timeout: float | None = None, pending: Callable[[], bool] | None = None
    ) -> bool:
        """Collective: return once everything any rank sent before calling it has reached its
        destination's sink (topic streams are point-to-point too), and nothing moves; whether
        ``pending()`` was True on any rank then.

        In rounds (`Tally`): each rank tells the peers it sent something new to its totals,
        and once they have received them joins an ``Iallreduce`` (bitwise or) of whether it
        told anyone anything, and of ``pending()``; then it waits until every total it was
        told has arrived. A round in which no rank had anything new ends the drain
        (deliveries may make a rank send: an acknowledgement, say), and its ``pending()``
        answers are the ones returned: asked after the previous round's arrivals, with nothing
        arriving since. Every wait makes progress, so a rank still in a send is never blocked
        by a collective. One round when nothing was sent since the last drain, two otherwise.

        Raises:
            GeodeTimeoutError: not drained within ``timeout`` seconds (says what is missing).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        tally = self._tally
        while True:
            self.flush()
            tally.tell(self.sent_to)
            # (news: told this round, or told before the drain, by `all_entered`)
            mine = _NEWS if tally.news() else 0
            if pending is not None and pending():
                mine |= _PENDING
            self._wait(tally.told_all, deadline, timeout, self._missing, "drain", TOGETHER_YIELD)
            votes, anyone = array("i", (mine,)), array("i", (0,))
            request = self.comm.Iallreduce([votes, MPI.INT32_T], [anyone, MPI.INT32_T], MPI.BOR)
            self._wait(request.Test, deadline, timeout, self._missing, "drain", TOGETHER_YIELD)
            self._wait(self._drained, deadline, timeout, self._missing, "drain", TOGETHER_YIELD)
            if not anyone[0] & _NEWS:
                return bool(anyone[0] & _PENDING)

    def _missing(self) -> str:
        short = self._tally.missing(self.received_from)
        if not short:
            return f"waiting for the other ranks; {self.pending_summary()}"
        where = ", ".join(f"{count} from rank {peer}" for peer, count in short.items())
        return f"messages still expected: {sum(short.values())} ({where}); {self.pending_summary()}"

    def _untold(self) -> str:
        return f"waiting for the other ranks to call close(); {self.pending_summary()}"

    def sent_count(self, rank: int) -> int | None:
        """See `PointToPoint.sent_count`: the `Tally`'s count (what close() tells ``rank``)."""
        self.flush()
        return self.sent_to[rank]

    def arrived_count(self, rank: int, count: int) -> bool:
        """See `PointToPoint.arrived_count`."""
        return self.received_from[rank] >= count and not self.busy

    def _drained(self) -> bool:
        return self._tally.arrived(self.received_from) and not self.busy

    def close(self, timeout: float | None = None) -> None:
        """Complete every send, learn how many envelopes each peer sent here (one round of the
        `Tally` exchange: O(peers) messages, one ``Ibarrier``), receive them all."""
        if self._closed:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self._fanouts.clear()  # stream traffic is point-to-point: counted below with the rest
        tally = self._tally
        if self._closing is None:
            # Once: a close() that timed out resumes waiting on the same exchange.
            self.flush()
            tally.tell(self.sent_to)
            self._wait(tally.told_all, deadline, timeout, self._untold, together=CLOSING_YIELD)
            self._closing = self.comm.Ibarrier()
        self._wait(
            self._closing.Test,
            deadline,
            timeout,
            lambda: "waiting for the other ranks to call close()",
            together=CLOSING_YIELD,
        )
        self._wait(self._drained, deadline, timeout, self._missing, together=CLOSING_YIELD)
        self.leads.cancel()
        self.close_rooted()
        self.shared.close()
        self.comm.Free()
        self.pool.clear()  # now: a closed Geode waits for the cyclic collector (pool.py)
        self._closed = True
