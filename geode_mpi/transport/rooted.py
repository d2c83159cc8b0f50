"""Rooted collectives and fixed-size reductions: what a checkpoint's cut and its manifest need.

`allgather` hands every rank every rank's value (O(P) bytes per rank, O(P^2) in all); these
move O(1) per rank in O(log P) rounds (a reduction of one int), or O(P) at the root alone (a
gather or a scatter), so that a job of thousands of ranks checkpoints without a hot spot but
rank 0's list of files.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from geode_mpi.base.backoff import Backoff
from geode_mpi.base.ondemand import on_first_use
from geode_mpi.errors import GeodeTimeoutError

if TYPE_CHECKING:  # importing mpi4py.MPI at run time would initialise MPI
    import numpy as np
    from mpi4py import MPI
else:  # numpy only once a checkpoint gathers (a job of Python objects never imports it)
    np = on_first_use("numpy", globals(), "np")

Reduction = Literal["max", "sum", "bor"]  # "bor": bitwise or, of flags


@runtime_checkable
class Rooted(Protocol):
    """Collectives rooted at one rank, and reductions of one int (every rank calls them in
    the same order)."""

    def allreduce(self, value: int, op: Reduction) -> int:
        """Every rank's ``value`` combined by ``op`` ("max", "sum" or "bor"), on every rank."""
        ...

    def bcast(self, value: Any, root: int = 0, deadline: float | None = None) -> Any:
        """``root``'s ``value`` on every rank (picklable); `GeodeTimeoutError` if it has not
        arrived by ``deadline`` (`time.monotonic`; None: no limit)."""
        ...

    def gather(self, value: Any, root: int = 0, deadline: float | None = None) -> list[Any] | None:
        """Every rank's ``value`` by rank on ``root``; None elsewhere. ``deadline``: as
        `bcast`'s."""
        ...

    def scatter(self, values: Sequence[Any] | None, root: int = 0) -> Any:
        """``values[rank]`` of ``root``'s list, on each rank (others pass None)."""
        ...


# A broadcast's nonblocking step carries the pickled value's length and its first bytes: what a
# checkpoint broadcasts (an epoch, an outcome) fits, and only longer values take a second,
# blocking step for the rest.
BCAST_HEAD = 1024
BCAST_SLEEP = 4e-3  # the longest sleep of a rank waiting for the root's broadcast ...
BCAST_SLEEP_FROM = 8  # ... in a job of more ranks than this


# Requests given up on at a deadline, kept with their buffers: MPI may still write into them
# (a collective cannot be cancelled), so they must outlive the call that timed out.
_ABANDONED: list[tuple[MPI.Request, tuple[Any, ...]]] = []


def _complete(
    request: MPI.Request,
    deadline: float | None = None,
    buffers: tuple[Any, ...] = (),
    longest_sleep: float = 1e-3,
) -> None:
    """Test ``request`` until it completes, backing off to sleeps. Only the request, not the
    transport's progress: the rooted steps run where no message of the job is on its way (past
    a checkpoint's drain, or in a restart before the job sends anything; one arriving waits in
    MPI's queue), and so cheap a poll leaves the cores to the ranks still working.

    Raises:
        GeodeTimeoutError: not complete at ``deadline`` (`time.monotonic`).
    """
    backoff = Backoff(spin=0.0, max_sleep=longest_sleep)
    while not request.Test():
        if deadline is not None and time.monotonic() >= deadline:
            _ABANDONED.append((request, buffers))
            raise GeodeTimeoutError("a collective step was not complete by its deadline")
        backoff.pause()


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

    # The broadcast and the gather are nonblocking, each request tested with back-off until
    # it completes: a checkpoint's ranks wait in them while the others write their files and
    # while rank 0 writes the manifest, and blocking ones spin. At 64 ranks on 2 cores the
    # spinning took more CPU than the writes it waited for (0.3 to 0.8 s against 0.2 s,
    # summed over the ranks), and the root its share of the cores.

    def bcast(self, value: Any, root: int = 0, deadline: float | None = None) -> Any:
        from mpi4py import MPI

        comm = self.comm
        head = np.zeros(BCAST_HEAD, np.uint8)
        data = b""
        if comm.Get_rank() == root:
            data = MPI.pickle.dumps(value)
            head[:8] = np.array([len(data)], np.int64).view(np.uint8)
            inline = np.frombuffer(data[: BCAST_HEAD - 8], np.uint8)
            head[8 : 8 + inline.size] = inline
        # The ranks but the root wait here while the slowest rank writes and the root seals:
        # at 64 ranks on 2 cores each wake-up costs 15-40 us of the cores the ranks still
        # writing need, so in a large job they sleep up to 4 ms, not 1 (the cost: each level
        # of the broadcast's tree may wait that long for its rank's next wake-up, which a
        # small job, with few waiters and a short wait, need not pay).
        many = comm.Get_size() > BCAST_SLEEP_FROM
        longest = BCAST_SLEEP if many and comm.Get_rank() != root else 1e-3
        _complete(comm.Ibcast(head, root=root), deadline, (head,), longest)
        length = int(head[:8].view(np.int64)[0])
        if length <= BCAST_HEAD - 8:
            return MPI.pickle.loads(head[8 : 8 + length].tobytes())
        whole = np.empty(length, np.uint8)  # a long value: the rest, blocking (every rank is here)
        if comm.Get_rank() == root:
            whole[:] = np.frombuffer(data, np.uint8)
        comm.Bcast(whole[BCAST_HEAD - 8 :], root=root)
        whole[: BCAST_HEAD - 8] = head[8:]
        return MPI.pickle.loads(whole.tobytes())

    def gather(self, value: Any, root: int = 0, deadline: float | None = None) -> list[Any] | None:
        """In two steps: the pickled values' lengths, then the values."""
        from mpi4py import MPI

        comm = self.comm
        data = np.frombuffer(MPI.pickle.dumps(value), np.uint8)
        at_root = comm.Get_rank() == root
        lengths = np.zeros(comm.Get_size(), np.int64)
        mine = np.array([data.size], np.int64)
        _complete(
            comm.Igather(mine, lengths if at_root else None, root=root), deadline, (mine, lengths)
        )
        if not at_root:
            _complete(comm.Igatherv(data, None, root=root), deadline, (data,))
            return None
        ends = np.cumsum(lengths)
        starts = ends - lengths
        whole = np.empty(int(ends[-1]), np.uint8)
        gathered = comm.Igatherv(data, [whole, lengths, starts, MPI.BYTE], root=root)
        _complete(gathered, deadline, (data, whole, lengths, starts))
        return [
            MPI.pickle.loads(whole[start:end].tobytes())
            for start, end in zip(starts.tolist(), ends.tolist(), strict=True)
        ]

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

    def bcast(self, value: Any, root: int = 0, deadline: float | None = None) -> Any:
        self._alone("bcast")
        return value

    def gather(self, value: Any, root: int = 0, deadline: float | None = None) -> list[Any] | None:
        self._alone("gather")
        return [value]

    def scatter(self, values: Sequence[Any] | None, root: int = 0) -> Any:
        self._alone("scatter")
        assert values is not None, "the root of a scatter passes the values"
        return values[0]
