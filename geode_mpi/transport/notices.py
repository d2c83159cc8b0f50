"""A side channel over a communicator of its own: one rank asks every other, each answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing mpi4py.MPI at run time would initialise MPI
    from mpi4py import MPI

_TAG_ASK = 1
_TAG_ANSWER = 2


class Notices:
    """Questions and answers between the ranks of ``comm`` (a duplicate kept for them alone),
    polled without blocking, outside the job's traffic.

    Args:
        comm: an MPI communicator that nothing else uses.
    """

    def __init__(self, comm: MPI.Intracomm) -> None:
        self.comm = comm
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        self._sends: list[MPI.Request] = []  # in flight: their buffers must stay alive

    def ask_all(self, question: Any) -> None:
        """Send ``question`` to every other rank."""
        for other in range(self.size):
            if other != self.rank:
                self._sends.append(self.comm.isend(question, other, _TAG_ASK))

    def questions(self) -> list[tuple[int, Any]]:
        """Every (asking rank, question) that arrived."""
        return self._arrived(_TAG_ASK)

    def answer(self, asker: int, answer: Any) -> None:
        """Send ``answer`` to ``asker``."""
        self._sends.append(self.comm.isend(answer, asker, _TAG_ANSWER))

    def answers(self) -> list[tuple[int, Any]]:
        """Every (answering rank, answer) that arrived."""
        return self._arrived(_TAG_ANSWER)

    def _arrived(self, tag: int) -> list[tuple[int, Any]]:
        from mpi4py import MPI

        found = []
        status = MPI.Status()
        while self.comm.Iprobe(MPI.ANY_SOURCE, tag, status):
            source = status.Get_source()
            found.append((source, self.comm.recv(source=source, tag=tag)))
        self._sends = [request for request in self._sends if not request.Test()]
        return found
