"""Exactly once and in order over a lossy transport: drops, duplicates, delays, reordering.

Simulated ranks on `faulty.FaultyHub` (tests/faulty.py), driven from one thread with
non-blocking calls. The engine's resend timer reads a virtual clock the loops move by one
millisecond per round, and the hub's fates come from a seeded rng, so every run of a seed is
the same run. Each loop is bounded twice, by rounds and by wall-clock time, and says what it
was still waiting for when a bound is hit.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from faulty import Faults, FaultyHub, describe_counts

from geode_mpi import Geode, QueueConfig, QueueFull, SendHandle
from geode_mpi.delivery import acks as acks_module
from geode_mpi.delivery import arriving as arriving_module
from geode_mpi.delivery import credits as credits_module
from geode_mpi.delivery import direct as direct_module
from geode_mpi.delivery import failures as failures_module
from geode_mpi.delivery import polling as polling_module
from geode_mpi.delivery import publishing as publishing_module
from geode_mpi.delivery import sending as sending_module
from geode_mpi.delivery import taking as taking_module

RESEND_AFTER = 0.005  # seconds of the virtual clock
TICK = 0.001  # the virtual clock's step per round
WALL_LIMIT = 10.0  # seconds of real time any one loop may take


class VirtualClock:
    """Stands in for the engine module's ``time``: monotonic() and perf_counter() (resend
    timers, how long acks have been due) read the virtual time; the rest is the real module."""

    def __init__(self, real: ModuleType) -> None:
        self._real = real
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now

    def advance(self, seconds: float = TICK) -> None:
        self.now += seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """Resends and delayed acks follow a clock the test moves, not real time."""
    virtual = VirtualClock(time)
    # The engine and its parts, its send path and lanes (which stamp outbox entries with the
    # time of sending) read the time through their module global `time`.
    parts = (arriving_module, taking_module, acks_module, credits_module, failures_module)
    for part in (*parts, polling_module):
        monkeypatch.setattr(part, "time", virtual)
    monkeypatch.setattr(sending_module, "time", virtual)
    monkeypatch.setattr(publishing_module, "time", virtual)  # (a publish's outbox entries)
    monkeypatch.setattr(direct_module, "time", virtual)  # (a lane's outbox entries too)
    return virtual


@pytest.fixture
def close_after() -> Iterator[list[Geode]]:
    """Geodes to close after the test (the registry would otherwise keep them)."""
    opened: list[Geode] = []
    yield opened
    for geode in opened:
        geode.close()


@dataclass
class World:
    """Simulated ranks (one node each) on a faulty hub, and what each node received."""

    hub: FaultyHub
    geodes: list[Geode]
    clock: VirtualClock
    got: dict[int, list[tuple[str, int, Any]]] = field(default_factory=dict)
    rounds: int = 0

    def poll(self) -> None:
        """One round: every node takes what it can and runs its engine; then time moves."""
        for rank, geode in enumerate(self.geodes):
            while (msg := geode.try_receive()) is not None:
                assert msg.source is not None and msg.seq is not None
                self.got.setdefault(rank, []).append((msg.source, msg.seq, msg.data))
            geode.pending()
        self.clock.advance()
        self.rounds += 1

    def run_until(
        self, done: Callable[[], bool], what: str, max_rounds: int, each: Callable[[], None]
    ) -> None:
        """Call ``each`` (then poll) until ``done()``; fail clearly if a bound is hit."""
        started = time.monotonic()
        for _ in range(max_rounds):
            if done():
                return
            each()
            self.poll()
            if time.monotonic() - started > WALL_LIMIT:
                break
        if done():
            return
        stats = "\n  ".join(str(geode.stats()) for geode in self.geodes)
        pytest.fail(
            f"{what}: not reached after {self.rounds} rounds "
            f"({time.monotonic() - started:.1f} s)\n  hub: {describe_counts(self.hub.counts)}"
            f"\n  {stats}"
        )


def world(
    ranks: int,
    clock: VirtualClock,
    close_after: list[Geode],
    faults: Faults | None = None,
    seed: int = 0,
    **options: Any,
) -> World:
    hub = FaultyHub(ranks, faults, seed)
    geodes = [Geode(transport=hub.endpoint(rank), **options) for rank in range(ranks)]
    close_after.extend(geodes)
    return World(hub, geodes, clock)


def traffic(ranks: int, per_pair: int, seed: int) -> list[tuple[int, int]]:
    """(source, dest) of every message, every node to every other, in a seeded shuffle
    (each pair's messages stay in order: seq k is the pair's k-th send)."""
    plan = [(s, d) for s in range(ranks) for d in range(ranks) if s != d for _ in range(per_pair)]
    random.Random(seed).shuffle(plan)
    return plan


def send_all(w: World, plan: list[tuple[int, int]], per_round: int) -> list[SendHandle]:
    """Send the plan, ``per_round`` messages per round, while every node polls."""
    handles: list[SendHandle] = []
    count: dict[tuple[int, int], int] = {}
    todo = list(reversed(plan))

    def send_some() -> None:
        for _ in range(per_round):
            if not todo:
                return
            s, d = todo.pop()
            k = count.get((s, d), 0)
            count[(s, d)] = k + 1
            handle = w.geodes[s].send((s, d, k), dest=d)
            assert handle is not None and handle.seq == k
            handles.append(handle)

    total = len(plan)
    w.run_until(
        lambda: not todo and sum(len(v) for v in w.got.values()) >= total,
        f"all {total} messages delivered",
        max_rounds=20_000,
        each=send_some,
    )
    return handles


def check_exactly_once_in_order(w: World, ranks: int, per_pair: int) -> None:
    for d in range(ranks):
        got = w.got.get(d, [])
        for s in range(ranks):
            if s == d:
                continue
            mine = [(seq, data) for source, seq, data in got if source == f"node{s}"]
            seqs = [seq for seq, _ in mine]
            assert seqs == list(range(per_pair)), (
                f"node{s}->node{d}: got seqs {seqs[:20]}... ({len(seqs)}), want 0..{per_pair - 1}"
            )
            assert [data for _, data in mine] == [(s, d, k) for k in range(per_pair)]
        assert len(got) == per_pair * (ranks - 1), f"node{d} got {len(got)} messages"


SEEDS = [0, 1, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_exactly_once_in_order_and_outboxes_drain_despite_faults(
    seed: int, clock: VirtualClock, close_after: list[Geode]
) -> None:
    ranks, per_pair = 3, 100  # each node sends 200 messages
    w = world(ranks, clock, close_after, Faults.uniform(0.2), seed, resend_after=RESEND_AFTER)
    handles = send_all(w, traffic(ranks, per_pair, seed), per_round=6)

    # What users see: every (source, seq) once per destination, in seq order.
    check_exactly_once_in_order(w, ranks, per_pair)
    counts = w.hub.counts
    for kind in ("data", "control"):
        for fault in ("dropped", "duplicated", "delayed", "reordered"):
            assert counts[f"{kind} {fault}"] > 0, f"no {kind} {fault}: {describe_counts(counts)}"

    # Every copy that arrived was either queued once or dropped as a duplicate, and counted.
    for rank, geode in enumerate(w.geodes):
        stats = geode.stats()
        assert stats.received == per_pair * (ranks - 1) == stats.processed
        assert stats.received + stats.duplicates == w.hub.delivered_to[rank], (stats, counts)
        assert stats.sent == per_pair * (ranks - 1)
    assert sum(geode.stats().duplicates for geode in w.geodes) > 0
    assert sum(geode.stats().resent for geode in w.geodes) > 0

    # Once acks get through (stats() sends the acks a node owes), every outbox empties.
    w.run_until(
        lambda: not any([geode.stats().unacked for geode in w.geodes]),  # stats() on all
        "every outbox empty",
        max_rounds=5_000,
        each=lambda: None,
    )
    assert all(handle.acked for handle in handles)
    for geode in w.geodes:
        stats = geode.stats()
        assert stats.acked == stats.sent and stats.unacked == 0
    # ... and then nothing is resent, and nothing more is delivered.
    resent = [geode.stats().resent for geode in w.geodes]
    received = sum(len(v) for v in w.got.values())
    for _ in range(50):
        w.poll()
    assert [geode.stats().resent for geode in w.geodes] == resent
    assert sum(len(v) for v in w.got.values()) == received


def test_a_seed_replays_the_same_run(clock: VirtualClock, close_after: list[Geode]) -> None:
    """Same seed, same calls: the same fates, rounds and counters (a failure reproduces)."""

    def run() -> tuple[int, str, list[int]]:
        w = world(3, clock, close_after, Faults.uniform(0.2), 5, resend_after=RESEND_AFTER)
        send_all(w, traffic(3, 30, 5), per_round=4)
        return w.rounds, describe_counts(w.hub.counts), [g.stats().resent for g in w.geodes]

    first = run()
    clock.now = 1000.0
    assert run() == first


@pytest.mark.parametrize(
    "faults",
    [Faults.uniform(0.3, control=False), Faults.uniform(0.3, data=False)],
    ids=["data-only", "acks-only"],
)
def test_heavy_faults_on_data_or_acks_alone(
    faults: Faults, clock: VirtualClock, close_after: list[Geode]
) -> None:
    ranks, per_pair = 2, 150
    w = world(ranks, clock, close_after, faults, 7, resend_after=RESEND_AFTER)
    send_all(w, traffic(ranks, per_pair, 7), per_round=4)
    check_exactly_once_in_order(w, ranks, per_pair)
    w.run_until(
        lambda: not any([geode.stats().unacked for geode in w.geodes]),  # stats() on all
        "every outbox empty",
        max_rounds=5_000,
        each=lambda: None,
    )
    for rank, geode in enumerate(w.geodes):
        stats = geode.stats()
        assert stats.received + stats.duplicates == w.hub.delivered_to[rank]
        assert stats.acked == stats.sent == per_pair


def test_without_resends_a_dropped_message_stays_in_the_outbox(
    clock: VirtualClock, close_after: list[Geode]
) -> None:
    w = world(2, clock, close_after)
    w.hub.force("drop")  # the first data message is lost
    a, b = w.geodes
    handles = [a.send(k, dest="node1") for k in range(3)]
    for _ in range(20):
        w.poll()
    assert not w.got, "nothing can be delivered: seq 0 is missing and 1, 2 wait behind it"
    assert b.pending() == 0
    stats = a.stats()
    assert (stats.sent, stats.acked, stats.unacked, stats.resent) == (3, 0, 3, 0)
    assert not any(handle is None or handle.acked for handle in handles)
    assert w.hub.counts["data dropped"] == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_without_resends_random_losses_stay_visible_to_senders(
    seed: int, clock: VirtualClock, close_after: list[Geode]
) -> None:
    """No resends, faults everywhere: no duplicate and no disorder reaches a user, and every
    message a receiver has not processed is still in its sender's outbox."""
    ranks, per_pair = 3, 40
    w = world(ranks, clock, close_after, Faults.uniform(0.2), seed)
    plan = traffic(ranks, per_pair, seed)
    count: dict[tuple[int, int], int] = {}
    for s, d in plan:
        k = count.get((s, d), 0)
        count[(s, d)] = k + 1
        w.geodes[s].send((s, d, k), dest=d)
        w.poll()
    for _ in range(100):
        w.poll()
    assert w.hub.counts["data dropped"] > 0
    processed_from = [0] * ranks
    for d, got in w.got.items():
        for s in range(ranks):
            seqs = [seq for source, seq, _ in got if source == f"node{s}"]
            assert seqs == list(range(len(seqs))), f"node{s}->node{d}: {seqs}"
            processed_from[s] += len(seqs)
    for s, geode in enumerate(w.geodes):
        stats = geode.stats()
        assert stats.resent == 0
        assert stats.sent == stats.acked + stats.unacked
        assert stats.unacked >= stats.sent - processed_from[s], (
            f"node{s} sent {stats.sent}, {processed_from[s]} were processed, but only "
            f"{stats.unacked} are still unacknowledged: the sender lost sight of some"
        )


# -- acks from a receiver that only polls --------------------------------------------------


@pytest.mark.parametrize("lose_first_ack", [False, True], ids=["no-faults", "first-ack-lost"])
def test_a_receiver_that_only_polls_still_acknowledges(
    lose_first_ack: bool, clock: VirtualClock, close_after: list[Geode]
) -> None:
    """try_receive() and pending() are how a rank that computes between messages takes
    them; the acks it owes must reach the senders without it ever blocking in receive().

    Without faults (like MPI: everything arrives, later), the sender's outbox should empty.
    With the first ack lost and resends on, the receiver's answer to the resent duplicate
    (an ack again) should empty it.
    """
    w = world(2, clock, close_after, resend_after=RESEND_AFTER if lose_first_ack else None)
    a, b = w.geodes
    if lose_first_ack:
        w.hub.force("drop", kind="control")
    handles = [a.send(k, dest="node1") for k in range(3)]
    sent = [h for h in handles if h is not None]
    w.run_until(lambda: len(w.got.get(1, [])) == 3, "3 messages received", 100, lambda: None)
    if lose_first_ack:
        if not w.hub.counts["control sent"]:
            b.stats()  # stats() sends the acks a node owes: make sure the first one went
        assert w.hub.counts["control dropped"] == 1
    rounds = 200
    for _ in range(rounds):
        w.poll()
    resent = a.stats().resent
    assert all(handle.acked for handle in sent), (
        f"after {rounds} rounds of try_receive()/pending() on both ranks "
        f"{sum(not h.acked for h in sent)} of 3 messages are still unacknowledged; "
        f"{resent} resends, receiver: {b.stats()}"
    )


# -- flow control over a lossy transport ---------------------------------------------------


def test_a_duplicated_credit_does_not_overfill_a_queue(
    clock: VirtualClock, close_after: list[Geode]
) -> None:
    """capacity 2, two nodes: a window of one message per sending node. A duplicated ack
    record must not hand the sender a second credit."""
    config = QueueConfig(capacity=2, policy="raise")
    w = world(2, clock, close_after, queue=config)
    a, b = w.geodes
    a.send("first", dest="node1")
    w.hub.force("duplicate", kind="control")  # the first ack record, returning its credit
    w.run_until(lambda: bool(w.got.get(1)), "first message received", 100, lambda: None)
    for _ in range(5):
        w.poll()
    assert w.hub.counts["control duplicated"] == 1
    a.send("second", dest="node1")  # the credit returned: fine
    b.send("own", dest="node1")  # node1's own share of its queue
    with pytest.raises(QueueFull):
        a.send("third", dest="node1")  # node0 already has its one message queued
    for _ in range(5):
        w.poll()
    depth = b.stats().queue_depth
    assert depth <= 2, f"node1's queue holds {depth} messages, over its capacity 2"


def test_a_lost_credit_does_not_block_a_sender_forever(
    clock: VirtualClock, close_after: list[Geode]
) -> None:
    """capacity 2, two nodes, resends on: the ack record returning a credit is lost. Once the
    receiver's queue is empty again, the sender must be able to send again."""
    config = QueueConfig(capacity=2, policy="raise")
    w = world(2, clock, close_after, queue=config, resend_after=RESEND_AFTER)
    a, b = w.geodes
    a.send("first", dest="node1")
    w.hub.force("drop", kind="control")  # the first ack record: its credit
    w.run_until(lambda: bool(w.got.get(1)), "first message received", 100, lambda: None)
    assert w.hub.counts["control dropped"] == 1
    sent: list[str] = []

    def try_send() -> None:
        try:
            a.send("second", dest="node1")
            sent.append("second")
        except QueueFull:
            b.stats()  # the receiver sends whatever acks and credits it owes

    w.run_until(lambda: bool(sent), "room for node0 in node1's empty queue", 500, try_send)


@pytest.mark.parametrize("seed", SEEDS)
def test_topics_deliver_exactly_once_in_order_despite_faults(
    seed: int, clock: VirtualClock, close_after: list[Geode]
) -> None:
    """Three simulated ranks, each publishing on one topic that all three subscribe to, over a
    transport that drops, duplicates, delays and reorders every copy of every broadcast (and
    every ack): with resends on, each subscriber sees each publisher's messages once, in order,
    and every publisher's outbox (one entry per subscriber and message) drains."""
    ranks, per_publisher = 3, 60
    w = world(ranks, clock, close_after, Faults.uniform(0.2), seed, resend_after=RESEND_AFTER)
    nodes = [f"node{rank}" for rank in range(ranks)]
    topics = [geode.topic("t", publishers=nodes, subscribers=nodes) for geode in w.geodes]
    handles: list[SendHandle] = []
    sent = [0] * ranks

    def publish_some() -> None:
        for rank in range(ranks):
            if sent[rank] < per_publisher:
                handle = topics[rank].publish((rank, sent[rank]), source=nodes[rank])
                assert handle is not None
                handles.append(handle)
                sent[rank] += 1

    total = ranks * per_publisher * ranks
    w.run_until(
        lambda: sum(len(v) for v in w.got.values()) >= total,
        f"all {total} topic copies delivered",
        max_rounds=20_000,
        each=publish_some,
    )
    for rank in range(ranks):
        got = w.got[rank]
        assert len(got) == ranks * per_publisher
        for publisher in range(ranks):
            mine = [(seq, data) for source, seq, data in got if source == nodes[publisher]]
            assert [seq for seq, _ in mine] == list(range(per_publisher))
            assert [data for _, data in mine] == [(publisher, k) for k in range(per_publisher)]
    assert sum(geode.stats().duplicates for geode in w.geodes) > 0
    assert w.hub.counts["data dropped"] > 0 and w.hub.counts["data reordered"] > 0
    w.run_until(
        lambda: not any([geode.stats().unacked for geode in w.geodes]),
        "every publisher's outbox empty",
        max_rounds=5_000,
        each=lambda: None,
    )
    assert all(handle.acked for handle in handles)
