"""Rooted collectives and fixed-size reductions: what a checkpoint's cut and its manifest need.

`allgather` hands every rank every rank's value (O(P) bytes per rank, O(P^2) in all); these
move O(1) per rank in O(log P) rounds (a reduction of one int), or O(P) at the root alone (a
gather or a scatter), so that a job of thousands of ranks checkpoints without a hot spot but
rank 0's list of files.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # importing mpi4py.MPI at run time would initialise MPI
    from mpi4py import MPI

Reduction = Literal["max", "sum", "bor"]  # "bor": bitwise or, of flags


@runtime_checkable
class Rooted(Protocol):
    """Collectives rooted at one rank, and reductions of one int (every rank calls them in
    the same order)."""

    def allreduce(self, value: int, op: Reduction) -> int:
        """Every rank's ``value`` combined by ``op`` ("max", "sum" or "bor"), on every rank."""
        ...

    def bcast(self, value: Any, root: int = 0) -> Any:
        """``root``'s ``value`` on every rank (picklable)."""
        ...

    def gather(self, value: Any, root: int = 0) -> list[Any] | None:
        """Every rank's ``value`` by rank on ``root``; None elsewhere."""
        ...

    def scatter(self, values: Sequence[Any] | None, root: int = 0) -> Any:
        """``values[rank]`` of ``root``'s list, on each rank (others pass None)."""
        ...


class RootedMPI:
    """`Rooted` over the transport's communicator (a mixin of `MPITransport`)."""

    comm: MPI.Intracomm

    def allreduce(self, value: int, op: Reduction) -> int:
        from mpi4py import MPI

        # On a buffer, not a pickled object: mpi4py's object reductions hold the GIL while
        # they wait, and a rank stuck there would keep its SIGTERM timer thread from ending it.
        ops = {"max": MPI.MAX, "sum": MPI.SUM, "bor": MPI.BOR}
        result = array("q", (0,))
        self.comm.Allreduce([array("q", (value,)), MPI.INT64_T], [result, MPI.INT64_T], ops[op])
        return result[0]

    def bcast(self, value: Any, root: int = 0) -> Any:
        return self.comm.bcast(value, root=root)

    def gather(self, value: Any, root: int = 0) -> list[Any] | None:
        gathered = self.comm.gather(value, root=root)
        return None if gathered is None else list(gathered)

    def scatter(self, values: Sequence[Any] | None, root: int = 0) -> Any:
        return self.comm.scatter(None if values is None else list(values), root=root)


class RootedAlone:
    """`Rooted` for a world of one rank (a mixin of the in-process transports), where every
    collective is the rank's own value; simulated worlds of several ranks share one thread and
    cannot wait for each other, as their `allgather` says."""

    size: int
    name: str

    def _alone(self, what: str) -> None:
        if self.size != 1:
            raise RuntimeError(
                f"{what} needs every rank at once, but the {self.size} ranks of the {self.name} "
                "transport share one thread: use MPI for collectives across ranks"
            )

    def allreduce(self, value: int, op: Reduction) -> int:
        self._alone("allreduce")
        return int(value)

    def bcast(self, value: Any, root: int = 0) -> Any:
        self._alone("bcast")
        return value

    def gather(self, value: Any, root: int = 0) -> list[Any] | None:
        self._alone("gather")
        return [value]

    def scatter(self, values: Sequence[Any] | None, root: int = 0) -> Any:
        self._alone("scatter")
        assert values is not None, "the root of a scatter passes the values"
        return values[0]
