"""run()'s quiescence waves on simulated ranks: correct, and no rank is a hot spot."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from geode_mpi import Geode, Message, codec
from geode_mpi.base import collective as tree
from geode_mpi.core import quiescence
from geode_mpi.delivery.control import WAVE_ANSWER, WAVE_ASK, WAVE_QUIET, decode_wave, kind
from geode_mpi.transport import InProcHub, InProcTransport

TIMEOUT = 30.0


class CountingHub(InProcHub):
    """An in-process hub that counts the quiescence-wave records each rank sends, by kind."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.sent: Counter[tuple[int, int]] = Counter()  # (source rank, kind)
        self.waves: set[int] = set()

    def post(self, source: int, dest: int, meta: bytes, frames: Sequence[Any]) -> int:
        if codec.is_control(meta):
            payload = codec.control_payload(meta)
            if kind(payload) in (WAVE_ASK, WAVE_ANSWER, WAVE_QUIET):
                wave_kind, wave, _, _ = decode_wave(payload)
                self.sent[source, wave_kind] += 1
                self.waves.add(wave)
        return super().post(source, dest, meta, frames)


class Hop(Message):
    """Goes ``data`` more hops around the ring of nodes."""


def run_everywhere(hub: InProcHub, hops: int) -> tuple[list[Geode], list[str], Counter[str]]:
    """One Geode per simulated rank, each in its own thread inside run(); rank 0's node0 starts
    a message that travels ``hops`` hops. Returns the Geodes, each run's reason, and the hops
    each node handled."""
    size = hub.size
    geodes = [Geode(size, transport=hub.endpoint(rank)) for rank in range(size)]
    handled: Counter[str] = Counter()
    for geode in geodes:

        def hop(msg: Message, geode: Geode = geode) -> None:
            assert msg.dest is not None
            handled[msg.dest] += 1
            if msg.data:
                after = geode.nodes[(geode.nodes.index(msg.dest) + 1) % size]
                geode.send(Hop(msg.data - 1), msg.dest, after)

        geode.on(Hop)(hop)
    if hops:
        geodes[0].send(Hop(hops - 1), "node0", "node1")
    return geodes, run_all(geodes), handled


def run_all(geodes: list[Geode]) -> list[str]:
    """Each Geode's run(), each in its own thread: why each ended."""
    reasons = [""] * len(geodes)

    def run(rank: int) -> None:
        reasons[rank] = geodes[rank].run(timeout=TIMEOUT).reason

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(len(geodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT + 5)
    return reasons


@pytest.mark.parametrize("size", [2, 9, 21])
def test_every_simulated_rank_ends_by_quiescence_after_the_last_hop(size: int) -> None:
    hub = InProcHub(size)
    geodes, reasons, handled = run_everywhere(hub, 3 * size)
    assert reasons == ["quiescent"] * size
    assert sum(handled.values()) == 3 * size  # no rank stopped while a hop was in flight
    assert all(count == 3 for count in handled.values())
    for geode in geodes:
        geode.close()


def test_no_rank_handles_more_than_its_children_of_each_wave() -> None:
    """The coordinator used to ask, and hear from, every rank itself: 2 (P - 1) records per
    wave through rank 0. Down and up a tree, no rank sends more than FANOUT asks and one
    answer per wave, and the whole wave costs 2 (P - 1) records."""
    size = 21  # three levels with a fan-out of 8
    hub = CountingHub(size)
    geodes, reasons, _ = run_everywhere(hub, 0)
    assert reasons == ["quiescent"] * size
    waves = len(hub.waves)
    assert waves >= 2  # two equal waves prove it
    for rank in range(size):
        children = len(tree.children(rank, size))
        assert hub.sent[rank, WAVE_ASK] == children * waves, rank
        assert hub.sent[rank, WAVE_ANSWER] == (waves if rank else 0), rank
        assert hub.sent[rank, WAVE_QUIET] == children, rank
    assert sum(hub.sent.values()) == 2 * (size - 1) * waves + (size - 1)
    for geode in geodes:
        geode.close()


def test_a_job_quiet_since_the_last_verdict_is_found_quiet_in_one_wave() -> None:
    hub = CountingHub(9)
    geodes, reasons, _ = run_everywhere(hub, 5)
    assert reasons == ["quiescent"] * 9
    waves = len(hub.waves)
    assert run_all(geodes) == ["quiescent"] * 9
    assert len(hub.waves) == waves + 1  # consecutive to the verdict's wave, and equal to it
    geodes[0].send(Hop(0), "node0", "node1")  # something moved: one wave cannot prove it
    assert run_all(geodes) == ["quiescent"] * 9
    assert len(hub.waves) >= waves + 3
    for geode in geodes:
        geode.close()


def test_a_rank_that_left_run_does_not_take_an_old_verdict_for_a_new_run() -> None:
    """A quiet verdict about a wave this rank answered in an earlier run() says nothing about
    what it did since: a new run() waits for a new wave."""
    hub = InProcHub(2)
    geodes, reasons, _ = run_everywhere(hub, 0)
    assert reasons == ["quiescent"] * 2
    # Rank 1 runs again alone: rank 0 is not in run(), so no new wave can prove anything.
    assert geodes[1].run(timeout=0.3).reason == "timeout"
    for geode in geodes:
        geode.close()


class Data(Message):
    """No handler takes it."""


def test_a_message_sent_after_run_returned_is_left_for_receive_by_a_run_still_waiting() -> None:
    """Each rank, once its run() returned, sends to the next rank at once: that rank may still
    be in run(), the verdict on its way down the tree (three levels here). That run() leaves
    the message queued for the receive() after it: it was a dead letter ("no handler")."""
    size, rounds = 21, 15
    hub = InProcHub(size)
    geodes = [Geode(size, transport=hub.endpoint(rank)) for rank in range(size)]
    got: list[list[int]] = [[] for _ in range(size)]
    reasons: list[set[str]] = [set() for _ in range(size)]

    def rounds_of(rank: int) -> None:
        geode = geodes[rank]
        after, before = geode.nodes[(rank + 1) % size], geode.nodes[(rank - 1) % size]
        for i in range(rounds):
            reasons[rank].add(geode.run(timeout=TIMEOUT).reason)
            geode.send(Data(i), geode.node, after)
            got[rank].append(geode.receive(source=before, type=Data, timeout=TIMEOUT).data)

    threads = [threading.Thread(target=rounds_of, args=(rank,)) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(rounds * TIMEOUT)
    assert reasons == [{"quiescent"}] * size
    assert got == [list(range(rounds))] * size
    assert [geode.stats(geode.node).dead_letters for geode in geodes] == [0] * size
    for geode in geodes:
        geode.close()


@pytest.mark.parametrize("size", [1, 2, 5, 6, 21, 64, 100])
@pytest.mark.parametrize("root", [0, 3])
def test_the_tree_reaches_every_rank_once(size: int, root: int) -> None:
    root %= size
    assert tree.parent(root, size, root) is None
    reached = [root, *tree.below(root, size, root)]
    assert sorted(reached) == list(range(size))
    for rank in range(size):
        for child in tree.children(rank, size, root):
            assert tree.parent(child, size, root) == rank
        assert len(tree.children(rank, size, root)) <= tree.FANOUT
    deepest = max(_steps(rank, size, root) for rank in range(size))
    assert deepest == tree.depth(size)


def _steps(rank: int, size: int, root: int) -> int:
    steps = 0
    while (up := tree.parent(rank, size, root)) is not None:
        rank, steps = up, steps + 1
    return steps


class AwayHub(InProcHub):
    """An in-process hub where a rank can be away (computing outside geode_mpi: what is sent to
    it waits until its next geode_mpi call, as with MPI; the in-process hub runs the receiver's
    sink in the sender's thread) and where the wave records of one kind to one rank can be kept
    back (``keep``: {(rank, kind)}) until released."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.away: set[int] = set()
        self.keep: set[tuple[int, int]] = set()
        self.waiting: list[list[tuple[int, bytes]]] = [[] for _ in range(size)]
        self.kept: list[tuple[int, int, bytes]] = []  # (rank, kind, meta)
        self.endpoints = [AwayTransport(self, rank) for rank in range(size)]

    def post(self, source: int, dest: int, meta: bytes, frames: Sequence[Any]) -> int:
        if codec.is_control(meta):
            wave_kind = kind(codec.control_payload(meta))
            if (dest, wave_kind) in self.keep:
                self.kept.append((dest, source, bytes(meta)))
                return len(meta)
            if dest in self.away or self.waiting[dest]:
                self.waiting[dest].append((source, bytes(meta)))
                return len(meta)
        assert dest not in self.away and not self.waiting[dest], "data sent to a rank away"
        return super().post(source, dest, meta, frames)

    def release(self) -> None:
        """What was kept back waits for its rank's next call."""
        self.keep.clear()
        for dest, source, meta in self.kept:
            self.waiting[dest].append((source, meta))
        self.kept.clear()

    def arrivals(self, rank: int) -> bool:
        waiting, self.waiting[rank] = self.waiting[rank], []
        for source, meta in waiting:
            self.endpoints[rank].deliver(source, memoryview(meta), (), len(meta))
        return bool(waiting)


class AwayTransport(InProcTransport):
    def __init__(self, hub: AwayHub, rank: int) -> None:
        super().__init__(hub, rank)
        self.away_hub = hub

    def progress(self) -> bool:
        return self.away_hub.arrivals(self.rank)


class Late(Message):
    """Sent after run() returned, and handled."""


def test_a_rank_that_leaves_run_while_it_holds_keeps_what_came_for_later() -> None:
    """Rank 1 answered the wave found quiet, the verdict is slow to reach it (kept back), and
    rank 2, whose run() returned, sends it a Data (no handler) and a Late: rank 1's run() ends
    by its timeout holding them. They stay queued: the Data for receive() (it was a dead
    letter), the Late for the next run() (it was handled in this one)."""
    hub = AwayHub(3)
    hub.keep.add((1, WAVE_QUIET))
    geodes = [Geode(3, transport=hub.endpoint(rank)) for rank in range(3)]
    late: list[tuple[int, int]] = []  # (message, rank 1's runs ended before the one handling it)
    geodes[1].on(Late)(lambda msg: late.append((msg.data, len(reasons[1]))))
    reasons: list[list[str]] = [[], [], []]

    def first(rank: int) -> None:
        geode = geodes[rank]
        reasons[rank].append(geode.run(timeout=1.0 if rank == 1 else TIMEOUT).reason)
        if rank == 2:
            geode.send(Data(7), "node2", "node1")
            geode.send(Late(8), "node2", "node1")

    threads = [threading.Thread(target=first, args=(rank,)) for rank in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT + 5)
    assert reasons == [["quiescent"], ["timeout"], ["quiescent"]]
    assert late == [] and geodes[1].stats("node1").dead_letters == 0
    assert geodes[1].receive("node1", type=Data, timeout=1.0).data == 7
    hub.release()
    assert run_all(geodes) == ["quiescent"] * 3  # (the old verdict does not end rank 1's run)
    assert late == [(8, 1)] and geodes[1].stats("node1").dead_letters == 0
    for geode in geodes:
        geode.close()


class Ping(Message):
    """Passed to and fro between two ranks until ``stop``."""


def test_the_ranks_below_a_rank_that_left_run_with_a_wave_out_do_not_hold() -> None:
    """Ten ranks: rank 1 passes the waves on to rank 9. Rank 9 answered a wave that rank 1
    has not answered (the answer kept back) when rank 1 leaves run() and computes outside
    geode_mpi, and rank 0 does the same a little later. Rank 9 must not hold a message that
    comes then: before, its hold waited for the wave's outcome, which only rank 0 could give
    (a void on its return stops at rank 1), so for rank 0's whole absence."""
    size, away = 10, 1.0
    assert tree.children(1, size) == [9]
    hub = AwayHub(size)
    hub.keep.add((1, WAVE_ANSWER))
    geodes = [Geode(size, transport=hub.endpoint(rank)) for rank in range(size)]
    handled: list[float] = []
    geodes[9].on(Ping)(lambda msg: handled.append(time.monotonic()))
    reasons = [""] * size
    sent = [0.0]

    def first(rank: int) -> None:
        geode = geodes[rank]
        if rank in (0, 1):
            reasons[rank] = geode.run(timeout=0.1 * (2 - rank)).reason
            hub.away.add(rank)
            time.sleep(away)  # compute
            hub.away.discard(rank)
        elif rank == 8:
            time.sleep(0.3)  # (ranks 0 and 1 away)
            sent[0] = time.monotonic()
            geode.send(Ping(None), "node8", "node9")
        if rank != 9:
            reasons[rank] = geode.run(timeout=TIMEOUT).reason
        else:

            def until() -> bool:
                return bool(handled)

            reasons[rank] = geode.run(until=until, quiescent=True, timeout=away + 1).reason

    threads = [threading.Thread(target=first, args=(rank,)) for rank in range(size)]
    for thread in threads[:9]:
        thread.start()
    threads[9].start()
    threads[9].join(TIMEOUT)
    hub.release()
    geodes[9].run(timeout=TIMEOUT)  # (the others wait for it)
    for thread in threads[:9]:
        thread.join(TIMEOUT + 5)
    assert handled and handled[0] - sent[0] < away / 2, handled and handled[0] - sent[0]
    assert reasons == ["quiescent"] * 9 + ["until"]
    for geode in geodes:
        geode.close()


def test_waves_that_keep_failing_are_paced_without_overflow(monkeypatch: Any) -> None:
    """The pause before the next wave doubles up to PACE_MAX; its exponent used to grow with
    every failed wave, and past about 1,040 of them (a job busy for some seconds) rank 0's
    run() raised OverflowError. Counts that never meet (one sent more than any rank received)
    and every wave paced from the first: run() ends by its timeout on both ranks."""
    monkeypatch.setattr(quiescence, "PACE_AFTER", -2000)
    hub = InProcHub(2)
    geodes = [Geode(2, transport=hub.endpoint(rank)) for rank in range(2)]
    geodes[1]._runtime.engine.stats[1].sent += 1  # a message in flight for ever
    reasons = [""] * 2

    def run(rank: int) -> None:
        reasons[rank] = geodes[rank].run(timeout=0.5).reason

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert reasons == ["timeout", "timeout"]
    for geode in geodes:
        geode.close()
