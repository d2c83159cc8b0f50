"""The transport's collective steps: allgather, check_same and the rooted ones, below the Geode."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from geode_mpi import GeodeTimeoutError, WorldMismatchError
from geode_mpi.base import collective
from geode_mpi.transport import SETTINGS, open_world, rooted


def test_allgather_returns_every_ranks_value_small_or_large() -> None:
    transport = open_world()
    rank, size = transport.rank, transport.size
    assert transport.allgather(None) == [None] * size
    assert transport.allgather((rank, "r" * rank)) == [(r, "r" * r) for r in range(size)]
    big = np.arange(100_000 * (rank + 1), dtype=np.int32)
    for got, want in zip(transport.allgather(big), range(size), strict=True):
        assert np.array_equal(got, np.arange(100_000 * (want + 1), dtype=np.int32))
    mixed = transport.allgather(b"x" * (10 if rank else 5000))  # one rank's value large
    assert mixed == [b"x" * 5000] + [b"x" * 10] * (size - 1)
    transport.close(timeout=60)


def test_check_same_names_the_rank_that_disagrees() -> None:
    transport = open_world()
    if transport.size > 1:
        with pytest.raises(WorldMismatchError, match=r"rank 1 disagrees with rank 0 about x"):
            transport.check_same(b"same" if transport.rank != 1 else b"other", "x")
        with pytest.raises(WorldMismatchError, match="must make the same collective calls"):
            transport.check_same(bytes([transport.rank == 1]), "subscribers of topic 't'")
        with pytest.raises(WorldMismatchError, match="must create its Geode with the same"):
            transport.check_same(bytes([transport.rank == 1]), SETTINGS)
    transport.check_same(b"same", "y")
    transport.close(timeout=60)


def test_check_same_names_the_lowest_disagreeing_rank_and_where_values_differ() -> None:
    transport = open_world()
    rank, size = transport.rank, transport.size
    if size > 2:
        long = b"a" * 100_000 + (b"B" if rank >= 2 else b"A") + b"z" * 1000
        with pytest.raises(WorldMismatchError) as raised:
            transport.check_same(long, "a long value")
        text = str(raised.value)
        assert text.startswith("rank 2 disagrees with rank 0 about a long value: every rank ")
        assert "they first differ at byte 100000: rank 0 has ...'aaaaaaaaaaaaaaaaaaaaAzzz" in text
        assert "rank 2 has ...'aaaaaaaaaaaaaaaaaaaaBzzz" in text
    if size > 1:
        with pytest.raises(WorldMismatchError, match=r"rank 1 disagrees with rank 0 about z"):
            transport.check_same(b"zero" if rank == 0 else b"rest", "z")  # rank 0 alone differs
        shorter = b"same" + (b"" if rank == 0 else b"+more")
        with pytest.raises(
            WorldMismatchError, match=r"byte 4: rank 0 has 'same', rank 1 has 'same\+more'\)"
        ):
            transport.check_same(shorter, "lengths")
    transport.check_same(b"x" * 3_000_000, "a large value every rank has")
    transport.check_same(b"", "an empty value")
    transport.close(timeout=60)


def test_bcast_and_gather_carry_values_small_and_large() -> None:
    """Point to point from and to the root: values of any length (a large one is past MPI's
    eager limit, so its send completes only once received)."""
    transport = open_world()
    rank, size = transport.rank, transport.size
    for root in {0, size - 1}:
        assert transport.bcast({"root": root} if rank == root else None, root) == {"root": root}
        long = "x" * 300_000 + str(root)
        assert transport.bcast(long if rank == root else None, root) == long
        assert transport.bcast(None, root) is None
        values = [(r, "v" * (r * 100_000)) for r in range(size)]
        gathered = transport.gather(values[rank], root)
        assert gathered == (values if rank == root else None)
    transport.close(timeout=60)


def test_a_step_given_up_at_its_deadline_never_answers_a_later_one() -> None:
    """A rank that timed out waiting for the root's broadcast gets the next broadcast's value
    from the next one, not the late one's."""
    from mpi4py import MPI

    transport = open_world()
    rank, size = transport.rank, transport.size
    side = MPI.COMM_WORLD.Dup()  # the others say they gave up before the root broadcasts
    if rank == 0:
        deadline = time.monotonic() + 60  # (however late a loaded machine runs them)
        for other in range(1, size):
            while not side.Iprobe(source=other, tag=5):
                assert time.monotonic() < deadline, f"rank {other} never said it gave up"
                time.sleep(0.001)  # (a blocking recv would spin, starving the others)
            side.recv(source=other, tag=5)
        transport.bcast("late")
    else:
        with pytest.raises(GeodeTimeoutError):
            transport.bcast(None, deadline=time.monotonic() + 0.05)
        side.send("gave up", dest=0, tag=5)
    assert transport.bcast("next" if rank == 0 else None) == "next"
    gathered = transport.gather(rank * 10)
    assert gathered == ([r * 10 for r in range(size)] if rank == 0 else None)
    transport.close(timeout=60)
    side.Free()


def test_requests_given_up_on_are_forgotten_once_complete() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD.Dup()
    buffer = np.zeros(1, np.int64)
    request = comm.Irecv(buffer, comm.Get_rank(), 77)
    with pytest.raises(GeodeTimeoutError):
        rooted._complete([(request, [0])], time.monotonic(), str, (buffer,))
    assert any(entry[0] is request for entry in rooted._ABANDONED)
    comm.Send(np.array([5], np.int64), comm.Get_rank(), 77)
    deadline = time.monotonic() + 30
    while any(entry[0] is request for entry in rooted._ABANDONED):
        assert time.monotonic() < deadline, "an abandoned request that completed was kept"
        rooted._prune()  # (each prune tests it once: MPI may need a few to complete it)
    assert buffer[0] == 5
    comm.Free()


def test_a_first_step_given_up_at_its_deadline_names_the_ranks_not_yet_in_it() -> None:
    """Rank 0 comes to the first rooted step alone: the step's communicator (an Idup every rank
    joins) is not made by its deadline, and the error names the ranks it waited for (it said
    only "a collective step was not complete by its deadline")."""
    from mpi4py import MPI

    transport = open_world()
    rank, size = transport.rank, transport.size
    side = MPI.COMM_WORLD.Dup()  # rank 0 tells the others it gave up; they then come
    if size > 1 and rank == 0:
        others = "rank 1" if size == 2 else f"ranks 1-{size - 1}"
        try:
            with pytest.raises(
                GeodeTimeoutError, match=rf"^rank 0 had not been joined by {others} \(one or more"
            ):
                transport.bcast("early", deadline=time.monotonic() + 0.2)
        finally:
            for other in range(1, size):
                side.send("gave up", dest=other, tag=8)
    elif size > 1:
        side.recv(source=0, tag=8)
        with pytest.raises(GeodeTimeoutError):  # (rank 0 sends nothing for the step it gave up)
            transport.bcast(None, deadline=time.monotonic() + 0.2)
    else:
        assert transport.bcast("early", deadline=time.monotonic() + 0.2) == "early"
    assert transport.bcast("next" if rank == 0 else None) == "next"
    transport.close(timeout=60)
    side.Free()


def test_the_stats_rows_go_to_rank_0_alone_by_a_rooted_gather() -> None:
    from geode_mpi.core.observe_stats import to_rank0

    transport = open_world()
    rank, size = transport.rank, transport.size

    def everyone(value: object) -> list[object]:  # (O(P^2) bytes in all at thousands of ranks)
        raise AssertionError("the stats rows went to every rank")

    transport.allgather = everyone  # type: ignore[method-assign]
    got = to_rank0(transport, {"rank": rank}, time.monotonic() + 60)
    assert got == ([{"rank": r} for r in range(size)] if rank == 0 else None)
    transport.close(timeout=60)


class Counting:
    """The rooted steps' communicator, counting the messages this rank sends and receives."""

    def __init__(self, comm: Any) -> None:
        self.comm, self.sent, self.received = comm, 0, 0

    def Isend(self, *args: Any) -> Any:
        self.sent += 1
        return self.comm.Isend(*args)

    def Improbe(self, *args: Any) -> Any:
        message = self.comm.Improbe(*args)
        self.received += message is not None
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self.comm, name)


def test_the_root_of_a_bcast_or_gather_handles_fanout_messages_not_one_per_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rank 0 sent the broadcast to each rank and received each rank's part of the gather:
    P - 1 messages each way (4,000 a checkpoint at 2,000 ranks). Down a tree, each rank one
    from its parent and one to each child (at most `rooted.FANOUT`: 2 here, so that 4 ranks
    have a second level), and the other way for the gather."""
    monkeypatch.setattr(rooted, "FANOUT", 2, raising=False)
    transport = open_world()
    rank, size = transport.rank, transport.size
    for root in {0, size - 1}:  # (the values, whatever the root)
        assert transport.bcast(f"from {root}" if rank == root else None, root) == f"from {root}"
        values = [(r, "v" * (r * 50_000)) for r in range(size)]  # (some past MPI's eager limit)
        assert transport.gather(values[rank], root) == (values if rank == root else None)
    if size == 1:  # (the in-process transport: no messages)
        transport.close(timeout=60)
        return
    steps = transport._steps  # type: ignore[attr-defined]
    counting = Counting(steps.comm)
    steps.comm = counting
    try:
        assert transport.bcast("sealed" if rank == 0 else None) == "sealed"
        assert transport.gather(rank) == (list(range(size)) if rank == 0 else None)
    finally:
        steps.comm = counting.comm
    each_way = min(2, size - 1) if rank == 0 else len(collective.children(rank, size, 0, 2)) + 1
    assert (counting.sent, counting.received) == (each_way, each_way)
    transport.close(timeout=60)


def test_a_gather_or_bcast_given_up_at_its_deadline_names_the_rank_it_waited_for() -> None:
    """The last rank comes late to a gather, then rank 0 to a broadcast: the rank that waited
    says which rank it had nothing from (it said only "a collective step was not complete"):
    its child on the way to the late rank, its parent."""
    from mpi4py import MPI

    transport = open_world()
    rank, size = transport.rank, transport.size
    late = size - 1  # (a leaf of the tree, whatever its fan-out)
    via = late  # rank 0's child on the way to it
    while size > 1 and (above := collective.parent(via, size, 0, rooted.FANOUT)) != 0:
        assert above is not None
        via = above
    side = MPI.COMM_WORLD.Dup()  # who gave up tells the late one, which then comes
    transport.bcast(None)  # (the steps' communicator is made: a collective every rank is in)
    if size > 1 and rank == 0:
        try:  # (others slow to come may be named too)
            with pytest.raises(
                GeodeTimeoutError, match=rf"rank 0 had nothing from rank\(s\) \[(\d+, )*{via}[],]"
            ):
                transport.gather(rank, deadline=time.monotonic() + 0.2)
        finally:
            side.send("gave up", dest=late, tag=6)
    elif size > 1 and rank == late:
        side.recv(source=0, tag=6)
        transport.gather(rank)  # (a small part: sent at once, never received)
    else:
        transport.gather(rank)
    if size > 1 and rank == late:
        parent = collective.parent(late, size, 0, rooted.FANOUT)
        try:
            with pytest.raises(
                GeodeTimeoutError, match=rf"rank {late} had nothing from rank\(s\) \[{parent}\]"
            ):
                transport.bcast(None, deadline=time.monotonic() + 0.2)
        finally:
            side.send("gave up", dest=0, tag=7)
    elif size > 1 and rank == 0:
        side.recv(source=late, tag=7)
        transport.bcast("late")
    else:
        assert transport.bcast("late" if rank == 0 else None) == "late"
    assert transport.bcast("next" if rank == 0 else None) == "next"
    transport.close(timeout=60)
    side.Free()
