"""run()'s quiescence waves on simulated ranks: correct, and no rank is a hot spot."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from geode_mpi import Geode, Message, codec
from geode_mpi.base import collective as tree
from geode_mpi.delivery.control import WAVE_ANSWER, WAVE_ASK, WAVE_QUIET, decode_wave, kind
from geode_mpi.transport import InProcHub

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
