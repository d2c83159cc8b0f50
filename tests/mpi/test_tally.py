"""The count exchange of close() and drain(): only the peers used are told, and what each sent."""

from __future__ import annotations

import time

from mpi4py import MPI

from geode_mpi.transport.tally import TAG_COUNT, Tally

TIMEOUT = 60.0


def one_round(tally: Tally, comm: MPI.Intracomm, sent_to: list[int]) -> bool:
    """A round as the transport runs it: tell, receive counts until told, then a barrier."""
    news = tally.tell(sent_to)
    barrier: MPI.Request | None = None
    deadline = time.monotonic() + TIMEOUT
    status = MPI.Status()
    while barrier is None or not barrier.Test():
        assert time.monotonic() < deadline, "the count exchange did not end"
        message = comm.Improbe(MPI.ANY_SOURCE, TAG_COUNT, status)
        if message is not None:
            buffer = bytearray(status.Get_count(MPI.BYTE))
            message.Recv(buffer)
            tally.heard(status.Get_source(), buffer)
        if barrier is None and tally.told_all():
            barrier = comm.Ibarrier()
    return news


def test_each_rank_hears_only_from_the_ranks_that_sent_it_something() -> None:
    comm = MPI.COMM_WORLD.Dup()
    rank, size = comm.Get_rank(), comm.Get_size()
    tally = Tally(comm, rank, size)
    sent_to = [0] * size
    sent_to[rank] = 5  # loopback messages: never told
    ahead, behind = (rank + 1) % size, (rank - 1) % size
    if size > 1:
        sent_to[ahead] = 3
    assert one_round(tally, comm, sent_to) == (size > 1)
    want = {behind: 3} if size > 1 else {}
    assert tally.expected == want
    received = [0] * size
    assert tally.missing(received) == want
    assert tally.arrived(received) == (size == 1)
    received[behind] = 3
    assert tally.arrived(received)
    assert tally.missing(received) == {}
    # Nothing new: nobody is told anything; two more to the rank ahead: it hears the new total.
    assert not one_round(tally, comm, sent_to)
    if size > 1:
        sent_to[ahead] = 5
    assert one_round(tally, comm, sent_to) == (size > 1)
    assert tally.expected == ({behind: 5} if size > 1 else {})
    assert tally.missing(received) == ({behind: 2} if size > 1 else {})
    comm.Free()


def test_a_total_lower_than_one_heard_before_changes_nothing() -> None:
    """A peer's next round can overtake this rank's current one: totals only grow."""
    tally = Tally(MPI.COMM_SELF, 0, 4)
    tally.heard(2, (7).to_bytes(8, "little"))
    tally.heard(2, (4).to_bytes(8, "little"))
    assert tally.expected == {2: 7}
    assert tally.missing([0, 0, 6, 0]) == {2: 1}
    assert not tally.arrived([0, 0, 6, 0])
    assert tally.arrived([0, 0, 9, 0])


def test_a_count_told_outside_a_drain_is_news_to_its_next_round() -> None:
    """`all_entered` tells counts before a drain; the drain's first round told nothing new,
    said so, and could end before what those counts covered arrived (a publish on its way to a
    total-order topic's sequencer then went out after the membership change)."""
    comm = MPI.COMM_WORLD.Dup()
    rank, size = comm.Get_rank(), comm.Get_size()
    tally = Tally(comm, rank, size)
    sent_to = [0] * size
    if size > 1:
        sent_to[(rank + 1) % size] = 2
    one_round(tally, comm, sent_to)  # told outside the drain (all_entered does no more)
    assert tally.news() == (size > 1)  # what the drain's round asks: this round's, or before
    assert not tally.news()  # asked once
    assert not one_round(tally, comm, sent_to) and not tally.news()
    comm.Free()
