"""What a rank still in a quiescent run() does with a message sent after another rank's run()
returned: it leaves it queued, for receive() or the next run(), and a rank that holds arrivals
while a wave's outcome is unknown never stalls a producer that waits for credits."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import pytest

from geode_mpi import Geode, Message, QueueConfig

TIMEOUT = 60.0
ROUNDS = 300


class Work(Message):
    pass


class Data(Message):
    """Sent after run() returned; no handler takes it."""


class Late(Message):
    """Sent after run() returned; handled, and it must be in the next run()."""


class Tick(Message):
    pass


class Item(Message):
    pass


def ring(geode: Geode) -> tuple[str, str]:
    """(the next rank's node, the previous rank's node) on the ring of ranks (node k is on
    rank k)."""
    rank, size = geode.rank, geode.size
    return geode.nodes[(rank + 1) % size], geode.nodes[(rank - 1) % size]


def test_a_message_sent_after_run_returned_waits_for_receive(geode: Geode) -> None:
    """The soak probe's race: a Data message sent right after run() returned, with no handler,
    went to the dead letters of the receiver's run(), still waiting for the verdict."""
    after, before = ring(geode)
    geode.on(Work)(lambda msg: None)
    received = []
    for i in range(ROUNDS):
        geode.send(Work(i), geode.node, after)
        summary = geode.run(timeout=TIMEOUT)
        assert summary.reason == "quiescent" and summary.dead_letters == 0, (i, summary)
        geode.send(Data(i), geode.node, after)
        received.append(geode.receive(geode.node, source=before, type=Data, timeout=10).data)
    assert received == list(range(ROUNDS))
    assert geode.stats(geode.node).dead_letters == 0


def test_a_held_message_is_processed_by_the_next_run(geode: Geode) -> None:
    after, _ = ring(geode)
    geode.on(Work)(lambda msg: None)
    runs = {"now": 0}
    late: list[tuple[int, int]] = []  # (message, run that processed it)
    geode.on(Late)(lambda msg: late.append((msg.data, runs["now"])))
    for i in range(ROUNDS):
        runs["now"] = i
        geode.send(Work(i), geode.node, after)
        summary = geode.run(timeout=TIMEOUT)
        assert summary.reason == "quiescent" and summary.dead_letters == 0, (i, summary)
        geode.send(Late(i), geode.node, after)
    runs["now"] = ROUNDS
    assert geode.run(timeout=TIMEOUT).reason == "quiescent"
    early = [(data, run) for data, run in late if run != data + 1]
    assert not early, f"taken by the run they were sent after: {early[:10]}"
    assert [data for data, _ in late] == list(range(ROUNDS))


@pytest.mark.parametrize("items", [2000])
def test_a_producer_blocked_on_credits_is_not_stalled_by_a_held_consumer(items: int) -> None:
    """Rank 0's handler sends far more than the consumer's window, started by a message from
    the consumer, which answered a wave once it had sent it: the consumer must go on taking
    (that wave is voided), or the producer waits for credits that never come."""
    with Geode(queue=QueueConfig(capacity=8, policy="block", window=4)) as geode:
        last = geode.nodes[-1]
        got = []
        geode.on(Item)(lambda msg: got.append(msg.data))
        count = items if geode.size > 1 else 4  # (one rank: its own queue, one window)

        @geode.on(Work)
        def start(msg: Message) -> None:
            geode.send(Tick(None), last, "node0")

        @geode.on(Tick)
        def produce(msg: Message) -> None:
            for k in range(count):
                geode.send(Item(k), geode.node, last)

        if geode.rank == 0:
            geode.send(Work(None), geode.node, last)
        summary = geode.run(timeout=TIMEOUT)
        assert summary.reason == "quiescent", summary
        if geode.hosts(last):
            assert got == list(range(count))


class Ping(Message):
    pass


class Done(Message):
    pass


AWAY = 1.0  # rank 0's compute outside geode_mpi after each run()
CYCLES = 2  # of each way out of run(): rank 0 leaves with a wave out about half the time


def leave_run(geode: Geode, how: str) -> None:
    """Rank 0 in a quiescent run() for about 0.05 s, left ``how``."""
    end = time.monotonic() + 0.05

    def until() -> bool:
        if time.monotonic() < end:
            return False
        if how == "error":
            raise RuntimeError("until() failed")
        return True

    if how == "timeout":
        assert geode.run(timeout=0.05).reason == "timeout"
    elif how == "until":
        assert geode.run(until=until, quiescent=True, timeout=TIMEOUT).reason == "until"
    elif how == "error":
        with pytest.raises(RuntimeError, match="until"):
            geode.run(until=until, quiescent=True, timeout=TIMEOUT)
    else:  # Ctrl-C while it waits
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            geode.run(timeout=TIMEOUT)
        timer.join()


def test_the_ranks_in_run_do_not_hold_while_rank_0_is_away_after_its_run(geode: Geode) -> None:
    """Rank 0 leaves run() (timeout, until, an exception, Ctrl-C) and computes outside
    geode_mpi; the other ranks pass a Ping around their ring inside run() meanwhile. Before,
    a rank that had answered the wave rank 0 left out held its arrivals until rank 0 came
    back: the ping stopped for the whole AWAY (1.00 s at every such return, 3 ranks)."""
    if geode.size < 3:
        pytest.skip("needs rank 0 away and two other ranks passing a message between them")
    ring_of = geode.nodes[1:]
    stamps: list[float] = []
    done = {"now": False}
    geode.on(Done)(lambda msg: done.update(now=True))

    @geode.on(Ping)
    def ping(msg: Message) -> None:
        stamps.append(time.monotonic())
        if not done["now"]:
            time.sleep(0.0002)  # a little work
            after = ring_of[(ring_of.index(geode.node) + 1) % len(ring_of)]
            geode.send(Ping(msg.data + 1), geode.node, after)

    if geode.rank == 0:
        for how in ["timeout", "until", "error", "interrupt"] * CYCLES:
            leave_run(geode, how)
            time.sleep(AWAY)  # compute: no geode_mpi call
        geode.send(Done(None), geode.node, "node1")
    elif geode.rank == 1:
        geode.send(Ping(0), geode.node, ring_of[1])
    assert geode.run(timeout=TIMEOUT).reason == "quiescent"
    if geode.rank:
        gaps = [later - first for first, later in itertools.pairwise(stamps)]
        assert len(stamps) > 100 and max(gaps) < 0.5, (len(stamps), sorted(gaps)[-4:])


def test_rounds_of_runs_with_timeouts_stay_in_step_with_a_barrier_after_each_run(
    geode: Geode,
) -> None:
    """docs/delivery.md's advice for rounds of run(timeout=...): one rank's first run() of a
    round times out almost at once (before it answers a wave), rank 0's lasts; a barrier after
    each run() keeps the next run() of every rank paired with the others' (a probe: without it,
    1 to 5 rounds of 40 paired off by one, a run() waiting out its timeout while the other
    ranks had gone on). Every round's second run() ends quiescent at once, its Token handled."""
    from mpi4py import MPI

    if geode.size < 2:
        pytest.skip("needs 2 ranks or more (one rank has no other to pair with)")
    comm = MPI.COMM_WORLD
    handled = []
    geode.on(Tick)(lambda msg: handled.append(msg.data))
    for trial in range(20):
        comm.Barrier()
        geode.run(timeout=0.3 if geode.rank == 0 else 0.0005 * (1 + trial % 4))
        comm.Barrier()
        if geode.rank == 0:
            geode.send(Tick(trial), geode.node, geode.nodes[1])
        started = time.monotonic()
        summary = geode.run(timeout=TIMEOUT)
        assert summary.reason == "quiescent" and time.monotonic() - started < TIMEOUT / 2
    assert comm.allreduce(len(handled)) == 20
