"""Rooted collectives and fixed-size reductions: what a checkpoint's cut and its manifest need.

`allgather` hands every rank every rank's value (O(P) bytes per rank, O(P^2) in all); these
move O(1) per rank in O(log P) rounds (a reduction of one int), or O(P) bytes at the root (a
broadcast or a gather down a tree of `FANOUT` children a rank: at most `FANOUT` + 1 messages
through any rank's hands, the root's included, in log_FANOUT(P) rounds; a scatter, MPI's).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from geode_mpi.base import collective
from geode_mpi.base.backoff import Backoff
from geode_mpi.base.listing import ranks_named
from geode_mpi.errors import DecodeError, GeodeTimeoutError

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

    def start_allreduce(self, value: int, op: Reduction) -> Reducing:
        """`allreduce` begun without waiting: the caller polls the result's ``test`` (making
        its own progress meanwhile, as a blocking reduction cannot) until it is True."""
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


class Reducing:
    """A reduction of one int under way (`Rooted.start_allreduce`): ``value`` once ``test()``
    returned True."""

    def __init__(self, test: Callable[[], bool], result: array[int]) -> None:
        self._test = test
        self._result = result  # (and the request's buffers, kept alive until it completes)

    def test(self) -> bool:
        return self._test()

    @property
    def value(self) -> int:
        return int(self._result[0])


# A rank waiting for the root's broadcast sleeps at most this long between two looks, in a job
# of more ranks than BCAST_SLEEP_FROM (else 1 ms, as any wait): the others may still be writing
# their files, and at 64 ranks on 2 cores each wake-up costs 15-40 us of the cores they need.
BCAST_SLEEP = 4e-3
BCAST_SLEEP_FROM = 8
_TAGS = 32767  # MPI's smallest allowed upper bound of a tag: step numbers wrap around at it
# Children per rank of the broadcast's and the gather's tree (base/collective.py's layout). Wide:
# each level down waits for its ranks' next wake-up from a back-off sleep (down MPICH's binomial
# Ibcast, 16 ranks heard rank 0's outcome 12-14 ms after it was sent; one round point to point,
# 5-6 ms), so up to 65 ranks it is one round, and 4,161 ranks two: the root handles 64 messages
# a step, not P - 1 (4,095 sends one after another, then 4,095 arrivals at once at 4,096 ranks).
FANOUT = 64

# Requests given up on at a deadline, kept with their buffers: MPI may still read or write
# them, so they must outlive the call that timed out. Dropped once complete (`_prune`).
_ABANDONED: list[tuple[MPI.Request, tuple[Any, ...]]] = []


def _prune() -> None:
    """Forget the abandoned requests that have completed since (Test frees each)."""
    if _ABANDONED:
        _ABANDONED[:] = [entry for entry in _ABANDONED if not entry[0].Test()]


def _complete(
    waits: Sequence[tuple[MPI.Request, Sequence[int]]],
    deadline: float | None,
    late: Callable[[list[int]], str],
    buffers: tuple[Any, ...] = (),
) -> None:
    """Test ``waits``' requests (each with the ranks it waits for) until every one completes,
    backing off to sleeps. Only the requests, not the transport's progress: the rooted steps
    run where no message of the job is on its way (past a checkpoint's drain, or in a restart
    before the job sends anything; one arriving waits in MPI's queue), and so cheap a poll
    leaves the cores to the ranks still working.

    Raises:
        GeodeTimeoutError: not complete at ``deadline`` (`time.monotonic`): ``late(ranks)``,
            the ranks that the requests still under way wait for (sorted).
    """
    backoff = Backoff(spin=0.0, max_sleep=1e-3)
    while waits := [(request, ranks) for request, ranks in waits if not request.Test()]:
        if deadline is not None and time.monotonic() >= deadline:
            _ABANDONED.extend((request, buffers) for request, _ in waits)
            raise GeodeTimeoutError(late(sorted({rank for _, ranks in waits for rank in ranks})))
        backoff.pause()


class _Steps:
    """The rooted steps' own communicator (a duplicate of the transport's: nothing else
    receives on it, so a probe for any source sees only these steps) and the number of the
    next step, which is its tag: a late message of a step some rank gave up on at its
    deadline never matches a later step."""

    def __init__(self, comm: MPI.Intracomm) -> None:
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.comm, self.made = comm.Idup()  # (collective: complete once every rank began it)
        self.step = 0

    def next(self, deadline: float | None) -> tuple[MPI.Intracomm, int]:
        """The communicator, once made (within ``deadline``), and the tag of the next step
        (counted first: a step that times out here is a step all the same)."""
        self.step = (self.step + 1) % _TAGS
        _complete([(self.made, range(self.size))], deadline, self._not_made)
        return self.comm, self.step

    def _not_made(self, ranks: list[int]) -> str:
        others = [rank for rank in ranks if rank != self.rank]  # (every rank joins the Idup)
        return (
            f"rank {self.rank} had not been joined by {ranks_named(others)} (one or more of "
            "them) in its first collective step (a bcast or a gather) by its deadline"
        )

    def discard(self) -> None:
        """Receive what steps given up on left here: MPI reuses a freed communicator's
        context, and a message still queued for this one would match the next one's probe."""
        from mpi4py import MPI

        comm = self.comm
        status = MPI.Status()
        while (message := comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)) is not None:
            message.Recv([bytearray(status.Get_count(MPI.BYTE)), MPI.BYTE])


def _send_all(
    comm: MPI.Intracomm,
    data: bytes | bytearray,
    dests: Sequence[int],
    tag: int,
    deadline: float | None,
) -> None:
    """Send ``data`` to each of ``dests`` at once, and wait until every send is complete.

    Raises:
        GeodeTimeoutError: naming the ranks whose receives had not taken it by ``deadline``.
    """

    def late(ranks: list[int]) -> str:
        return (
            f"{ranks_named(ranks)} did not receive rank {comm.Get_rank()}'s part of a "
            "collective step by its deadline"
        )

    _complete([(comm.Isend(data, dest, tag), (dest,)) for dest in dests], deadline, late, (data,))


def _receive(
    comm: MPI.Intracomm,
    sources: set[int],
    tag: int,
    deadline: float | None,
    longest_sleep: float,
    status: MPI.Status,
) -> tuple[int, bytearray]:
    """The next message sent to this rank with ``tag`` by one of ``sources``: (its sender, its
    bytes). A message of this step from any other rank is refused (`DecodeError`).

    Raises:
        GeodeTimeoutError: nothing by ``deadline``, naming ``sources`` (those still awaited).
    """
    from mpi4py import MPI

    backoff = Backoff(spin=0.0, max_sleep=longest_sleep)
    while (message := comm.Improbe(MPI.ANY_SOURCE, tag, status)) is None:
        if deadline is not None and time.monotonic() >= deadline:
            raise GeodeTimeoutError(
                f"rank {comm.Get_rank()} had nothing from rank(s) {sorted(sources)} in a "
                "collective step by its deadline"
            )
        backoff.pause()
    buffer = bytearray(status.Get_count(MPI.BYTE))
    message.Recv(buffer)
    source = status.Get_source()
    if source not in sources:
        raise DecodeError(
            f"rank {source} sent rank {comm.Get_rank()} a part of a collective step it does not "
            f"take from it (it waits for rank(s) {sorted(sources)})"
        )
    return source, buffer


def _parent(rank: int, size: int, root: int) -> int:
    """The rank ``rank`` (not ``root``) hears a step from, in the tree from ``root``."""
    above = collective.parent(rank, size, root, FANOUT)
    assert above is not None, "the root has no parent"
    return above


class RootedMPI:
    """`Rooted` over the transport's communicator (a mixin of `MPITransport`)."""

    comm: MPI.Intracomm
    _steps: _Steps | None = None  # made at the first broadcast or gather

    def allreduce(self, value: int, op: Reduction) -> int:
        from mpi4py import MPI

        # On a buffer, not a pickled object: mpi4py's object reductions hold the GIL while
        # they wait, and a rank stuck there would keep its SIGTERM timer thread from ending it.
        ops = {"max": MPI.MAX, "sum": MPI.SUM, "bor": MPI.BOR}
        result = array("q", (0,))
        self.comm.Allreduce([array("q", (value,)), MPI.INT64_T], [result, MPI.INT64_T], ops[op])
        return result[0]

    def start_allreduce(self, value: int, op: Reduction) -> Reducing:
        from mpi4py import MPI

        ops = {"max": MPI.MAX, "sum": MPI.SUM, "bor": MPI.BOR}
        mine, result = array("q", (value,)), array("q", (0,))
        request = self.comm.Iallreduce([mine, MPI.INT64_T], [result, MPI.INT64_T], ops[op])

        def test() -> bool:
            return bool(request.Test()) and mine is not None  # (holds ``mine`` until then)

        return Reducing(test, result)

    # The broadcast and the gather go point to point down a tree of `FANOUT` children a rank
    # (one round up to 65 ranks), each wait with back-off: a checkpoint's ranks wait in them
    # while the others write their files and while rank 0 writes the manifest, and blocking
    # collectives spin (at 64 ranks on 2 cores that took more CPU than the writes). A rank that
    # passes the broadcast on sleeps at most 1 ms between looks (its children wait for it).

    def _step(self, deadline: float | None) -> tuple[MPI.Intracomm, int]:
        _prune()
        steps = self._steps
        if steps is None:
            steps = self._steps = _Steps(self.comm)
        return steps.next(deadline)

    def bcast(self, value: Any, root: int = 0, deadline: float | None = None) -> Any:
        from mpi4py import MPI

        comm, tag = self._step(deadline)
        rank, size = comm.Get_rank(), comm.Get_size()
        below = collective.children(rank, size, root, FANOUT)
        if rank == root:
            data: bytes | bytearray = MPI.pickle.dumps(value)
        else:
            above = _parent(rank, size, root)
            longest = BCAST_SLEEP if size > BCAST_SLEEP_FROM and not below else 1e-3
            data = _receive(comm, {above}, tag, deadline, longest, MPI.Status())[1]
        _send_all(comm, data, below, tag, deadline)  # (passed on as it came)
        return value if rank == root else MPI.pickle.loads(data)

    def gather(self, value: Any, root: int = 0, deadline: float | None = None) -> list[Any] | None:
        from mpi4py import MPI

        comm, tag = self._step(deadline)
        rank, size = comm.Get_rank(), comm.Get_size()
        # Each rank's value pickled alone, passed up as it came: (rank, bytes) pairs.
        parts = [] if rank == root else [(rank, MPI.pickle.dumps(value))]
        waiting = set(collective.children(rank, size, root, FANOUT))
        status = MPI.Status()
        while waiting:
            child, buffer = _receive(comm, waiting, tag, deadline, 1e-3, status)
            waiting.discard(child)
            parts += MPI.pickle.loads(buffer)
        if rank != root:
            _send_all(comm, MPI.pickle.dumps(parts), [_parent(rank, size, root)], tag, deadline)
            return None
        values: list[Any] = [None] * size
        values[root] = value
        for source, data in parts:
            values[source] = MPI.pickle.loads(data)
        return values

    def scatter(self, values: Sequence[Any] | None, root: int = 0) -> Any:
        return self.comm.scatter(None if values is None else list(values), root=root)

    def close_rooted(self) -> None:
        """Free the rooted steps' communicator (as the transport closes)."""
        steps = self._steps
        if steps is not None and steps.made.Test():
            steps.discard()
            steps.comm.Free()
        self._steps = None


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

    def start_allreduce(self, value: int, op: Reduction) -> Reducing:
        self._alone("allreduce")
        return Reducing(lambda: True, array("q", (value,)))

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
