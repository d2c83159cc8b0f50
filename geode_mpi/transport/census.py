"""A census over a communicator of its own: one rank asks every rank down a tree, and the
answers come back up it, gathered on the way.

The asking rank (the root) sends its question to its children in the tree from it
(`base.collective`); each rank passes it on to its own children as it takes it in, and
answers its parent once its children have answered, or once its share of the time is up: its
own answer with every answer from below. A census of P ranks costs 2 (P - 1) messages, no rank
sends or takes in more than FANOUT + 1 of them each way, and it takes about 2 log_FANOUT(P)
steps. The ranks a census did not hear from (a rank busy elsewhere silences the ranks below it
too) can then be asked directly, one message each way.

Everything is polled (`serve`) from the waits of the ranks: nothing here blocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geode_mpi.base import collective

if TYPE_CHECKING:  # importing mpi4py.MPI at run time would initialise MPI
    from mpi4py import MPI

_TAG_ASK = 1  # (root, round, seconds to wait for the children, step, pass it on)
_TAG_ANSWER = 2  # (root, round, {rank: answer}, messages the answering subtree sent)

Key = tuple[int, int]  # (root, round)


class _Relay:
    """This rank's part in one census: whom it answers, whom it waits for, what it gathered."""

    __slots__ = ("parent", "parts", "pending", "sent", "until")

    def __init__(self, parent: int | None, pending: set[int], until: float, sent: int) -> None:
        self.parent = parent  # None: this rank is the census's root
        self.pending = pending
        self.until = until  # when to answer without the ranks still pending (monotonic)
        self.parts: dict[int, Any] = {}
        self.sent = sent  # messages sent for this census by this rank and the ranks that answered


class Census:
    """This rank's side of every census over ``comm``: the one it asks, and those it relays.

    Args:
        comm: a communicator of the census's own (nothing else receives on it).
    """

    def __init__(self, comm: MPI.Intracomm) -> None:
        self.comm = comm
        self.rank, self.size = int(comm.Get_rank()), int(comm.Get_size())
        self.round = 0  # censuses this rank asked so far
        self.asked_by: dict[int, float] = {}  # another root -> when it last asked (monotonic)
        self._relays: dict[Key, _Relay] = {}
        self._sends: list[MPI.Request] = []  # in flight: their buffers must stay alive

    def start(self, seconds: float) -> Key:
        """Ask every rank; the answers may take ``seconds`` to come back up the tree."""
        self.round += 1
        key = (self.rank, self.round)
        step = seconds / (collective.depth(self.size) + 1)
        self._relays[key] = self._relay(key, None, seconds, step, True)
        return key

    def ask_directly(self, key: Key, ranks: list[int], seconds: float) -> None:
        """Ask ``ranks`` again, each on its own (they answer this rank), for ``seconds`` more."""
        relay = self._relays[key]
        relay.pending.update(ranks)
        relay.until = time.monotonic() + seconds
        for rank in ranks:
            self._send(rank, _TAG_ASK, (*key, 0.0, 0.0, False))
        relay.sent += len(ranks)

    def done(self, key: Key) -> bool:
        """Whether every rank asked answered, or the time for them is up."""
        relay = self._relays[key]
        return not relay.pending or time.monotonic() >= relay.until

    def gathered(self, key: Key) -> tuple[dict[int, Any], list[int], int]:
        """(answers by rank, the ranks not heard from, messages the census cost so far)."""
        relay = self._relays[key]
        missing = set(range(self.size)) - set(relay.parts) - {self.rank}
        return relay.parts, sorted(missing), relay.sent

    def drop(self, key: Key) -> None:
        """Forget a census this rank asked (answers still on their way are then ignored)."""
        self._relays.pop(key, None)

    def outranked(self, within: float) -> bool:
        """Whether a lower rank asked a census of its own in the last ``within`` seconds."""
        now = time.monotonic()
        return any(root < self.rank and now - at < within for root, at in self.asked_by.items())

    def serve(self, answer: Callable[[], Any]) -> None:
        """Take in what arrived, pass questions on, and answer the parents whose children have
        all answered (or whose time is up), with ``answer()`` as this rank's own answer."""
        from mpi4py import MPI

        status = MPI.Status()
        while self.comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG, status):
            source, tag = status.Get_source(), status.Get_tag()
            message = self.comm.recv(source=source, tag=tag)
            if tag == _TAG_ASK:
                root, round_, seconds, step, onwards = message
                if root != self.rank:
                    self.asked_by[root] = time.monotonic()
                key = (root, round_)
                self._relays[key] = self._relay(key, source, seconds, step, onwards)
            elif tag == _TAG_ANSWER:
                root, round_, parts, sent = message
                relay = self._relays.get((root, round_))
                if relay is not None and source in relay.pending:
                    relay.pending.discard(source)
                    relay.parts.update(parts)
                    relay.sent += sent
        now = time.monotonic()
        for key, relay in list(self._relays.items()):
            if relay.parent is not None and (not relay.pending or now >= relay.until):
                relay.parts[self.rank] = answer()
                self._send(relay.parent, _TAG_ANSWER, (*key, relay.parts, relay.sent + 1))
                del self._relays[key]
        self._sends = [request for request in self._sends if not request.Test()]

    def _relay(
        self, key: Key, parent: int | None, seconds: float, step: float, onwards: bool
    ) -> _Relay:
        children = collective.children(self.rank, self.size, key[0]) if onwards else []
        for child in children:
            self._send(child, _TAG_ASK, (*key, seconds - step, step, True))
        return _Relay(parent, set(children), time.monotonic() + seconds, sent=len(children))

    def _send(self, rank: int, tag: int, message: Any) -> None:
        self._sends.append(self.comm.isend(message, rank, tag))
