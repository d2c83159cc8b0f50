"""How many messages each peer sent this rank: counts exchanged with the peers actually used.

`close()` and `drain()` must learn, on every rank, how many envelopes the others sent it, so
that they can wait until that many have arrived. This is the nonblocking consensus (NBX,
Hoefler, Siebert and Lumsdaine, PPoPP 2010): each rank sends, with a synchronous ``Issend``,
its running total to each peer it sent something new to since it last told it, and receives
the totals whoever tells it; once its own ``Issend`` calls have completed (each was matched, so
received) it enters a nonblocking collective. When that completes, every rank has entered it,
so every count of the round was received. Bytes and messages per rank are O(peers), the rounds
of the collective O(log P); the reduce-scatter this replaced moved a P-sized vector per rank.

Totals are cumulative and only grow, so a count from a peer's *next* round that arrives while
this rank still finishes the current one only raises what it waits for: MPI keeps one sender's
messages in order, so whatever that count covers is already here or on its way in front of it.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import compress
from operator import ne

from mpi4py import MPI

TAG_COUNT = 7  # one int64: the sender's running total of envelopes sent to the receiver


class Tally:
    """What this rank told each peer it sent, and what each peer told it.

    Args:
        comm: the transport's communicator (counts travel on it, tag `TAG_COUNT`).
        rank: this rank in ``comm`` (its own loopback messages need no count).
        size: the ranks in ``comm``.
    """

    def __init__(self, comm: MPI.Intracomm, rank: int, size: int) -> None:
        self.comm = comm
        self.rank = rank
        # The total last sent each peer. A P-sized list on purpose: finding the peers to tell
        # is one comparison with the transport's per-rank counts, in C (6 us at 64 ranks,
        # 0.5 ms at 4,096, as fast as numpy's, which a job of Python objects need not
        # import), where tracking them as sends happen would tax every send.
        self._told = [0] * size
        self.expected: dict[int, int] = {}  # peer -> the highest total it told us
        self._short: set[int] = set()  # peers whose total may not have arrived in full yet
        self._sending: list[tuple[MPI.Request, array[int]]] = []
        # Something was told since a drain's round last asked (`news`): also by a tell
        # outside the drain (`all_entered` tells early), whose arrivals no round awaited yet.
        self._news = False

    def tell(self, sent_to: Sequence[int]) -> bool:
        """Send each peer this rank sent anything new to since it last told it its new total.

        Returns:
            True if any peer was told something (this rank sent since the last round).
        """
        totals = list(sent_to)
        totals[self.rank] = self._told[self.rank]  # loopback: counted on delivery
        peers = list(compress(range(len(totals)), map(ne, totals, self._told)))
        self._told = totals
        if peers:
            self._news = True
        if self._sending:  # those done go (a tell with no `told_all` after it kept them all)
            self._sending = [sent for sent in self._sending if not sent[0].Test()]
        issend = self.comm.Issend
        for peer in peers:
            buffer = array("q", (totals[peer],))
            self._sending.append((issend([buffer, MPI.INT64_T], peer, TAG_COUNT), buffer))
        return bool(peers)

    def news(self) -> bool:
        """Whether any peer was told something since the last call: a drain's round that
        says no while a count told before it is still arriving could end before it."""
        news, self._news = self._news, False
        return news

    def told_all(self) -> bool:
        """Whether every count sent so far was received (the sends were synchronous)."""
        sending = self._sending
        if sending and not MPI.Request.Testall([request for request, _ in sending]):
            return False
        sending.clear()
        return True

    def heard(self, source: int, buffer: bytes | bytearray) -> None:
        """A count message from ``source`` (received by the transport's progress)."""
        total = int.from_bytes(buffer, "little", signed=True)
        if total > self.expected.get(source, 0):
            self.expected[source] = total
            self._short.add(source)

    def arrived(self, received_from: Sequence[int]) -> bool:
        """Whether every peer's last total has been received (checks only the peers short)."""
        short = self._short
        if short:
            expected = self.expected
            done = [peer for peer in short if received_from[peer] >= expected[peer]]
            short.difference_update(done)
        return not short

    def missing(self, received_from: Sequence[int]) -> dict[int, int]:
        """Messages still expected, by the peer that sent them."""
        expected = self.expected
        return {
            peer: expected[peer] - received_from[peer]
            for peer in sorted(self._short)
            if received_from[peer] < expected[peer]
        }
