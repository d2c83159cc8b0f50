"""Priority and expiry at 1, 2 and 4 ranks: higher priorities first across sources, FIFO within
a priority and source, expired messages dropped and counted (or dead-lettered), handlers in
run() see priorities first, and a checkpoint keeps both."""

from __future__ import annotations

import time
from pathlib import Path

from geode_mpi import Geode, Message, QueueConfig

TIMEOUT = 60.0
SHORT = 0.5  # a ttl long enough to cross ranks on a loaded machine, short enough to wait out
PER_SOURCE = 30


class Done(Message):
    """The last message of a source: once it is queued, so is everything the source sent."""


def priority_of(k: int) -> int:
    """The priority of a source's k-th message: -1, 1, 2, 3, -1, 1 ..."""
    return k % 4 if k % 4 else -1


def send_mixed(geode: Geode, dest: str) -> None:
    """Every local node sends ``dest`` PER_SOURCE messages of mixed priorities, then a Done
    marker."""
    for node in geode.local_nodes:
        for k in range(PER_SOURCE):
            geode.isend((node, k), node, dest, priority=priority_of(k))
        geode.send(Done(node), node, dest)


def all_queued(geode: Geode, dest: str) -> None:
    """Wait until every source's Done marker is in ``dest``'s queue, taking the markers."""
    sources = {geode.receive(dest, type=Done, timeout=TIMEOUT).data for _ in geode.nodes}
    assert sources == set(geode.nodes)


def check_order(got: list[Message]) -> None:
    """Priorities never rise; within one priority each source's messages keep their order."""
    priorities = [m.priority for m in got]
    assert priorities == sorted(priorities, reverse=True)
    assert all(m.priority == priority_of(m.data[1]) for m in got)
    last: dict[tuple[str, int], int] = {}
    for m in got:
        node, k = m.data
        assert last.get((node, m.priority), -1) < k, f"{node} out of order at priority {m.priority}"
        last[(node, m.priority)] = k


def test_higher_priorities_first_across_sources_fifo_within_one(geode: Geode) -> None:
    dest = geode.nodes[-1]
    send_mixed(geode, dest)
    if geode.hosts(dest):
        all_queued(geode, dest)
        got = [geode.receive(dest, timeout=TIMEOUT) for _ in range(PER_SOURCE * len(geode.nodes))]
        check_order(got)
        assert geode.try_receive(dest) is None


def test_handlers_in_run_see_higher_priorities_first(geode: Geode) -> None:
    dest = geode.nodes[0]
    seen: list[Message] = []
    geode.on(Message, dest)(seen.append)
    send_mixed(geode, dest)
    if geode.hosts(dest):
        all_queued(geode, dest)
        geode.run(dest, count=PER_SOURCE * len(geode.nodes), timeout=TIMEOUT)
        assert len(seen) == PER_SOURCE * len(geode.nodes)
        check_order(seen)


def test_expired_messages_are_dropped_counted_and_dead_lettered_when_asked() -> None:
    queues = {"node0": QueueConfig(dead_letter_expired=True)}
    with Geode(queues=queues) as geode:
        for dest in ("node0", "node1"):  # node0 keeps its expired ones, node1 drops them
            for node in geode.local_nodes:
                geode.isend(f"stale from {node}", node, dest, ttl=SHORT)
                geode.isend(f"fresh from {node}", node, dest, ttl=TIMEOUT * 10)
                geode.send(Done(node), node, dest)
        for dest in ("node0", "node1"):
            if geode.hosts(dest):
                all_queued(geode, dest)
        time.sleep(SHORT * 1.5)  # (all queued: only letting the short ttls run out)
        for dest in ("node0", "node1"):
            if not geode.hosts(dest):
                continue
            got = sorted(geode.receive(dest, timeout=TIMEOUT).data for _ in geode.nodes)
            assert got == sorted(f"fresh from {node}" for node in geode.nodes)
            assert geode.try_receive(dest) is None
            stats = geode.stats(dest)
            assert stats.expired == len(geode.nodes)
            letters = geode.dead_letters(dest)
            if dest == "node0":
                assert sorted(d.source for d in letters) == sorted(geode.nodes)
                assert all(d.expired and d.error.startswith("expired: ") for d in letters)
                assert stats.dead_letters == len(geode.nodes)
            else:
                assert letters == [] and stats.dead_letters == 0
        geode.close(timeout=TIMEOUT)  # (every expired message was acknowledged)


def test_a_topic_publish_with_a_priority_goes_first_at_every_subscriber(geode: Geode) -> None:
    topic = geode.topic("alerts", [geode.nodes[0]], geode.nodes)
    for k in range(5):
        topic.publish(("routine", k), geode.nodes[0])
    topic.publish(("urgent", 0), geode.nodes[0], priority=7)
    topic.publish(Done("end"), geode.nodes[0])
    for node in geode.local_nodes:
        geode.receive(node, type=Done, timeout=TIMEOUT)
        got = [geode.receive(node, timeout=TIMEOUT) for _ in range(6)]
        assert [m.data for m in got] == [("urgent", 0)] + [("routine", k) for k in range(5)]
        assert got[0].topic == "alerts" and got[0].priority == 7


def test_priorities_and_expiries_survive_a_checkpoint(directory: Path) -> None:
    first = Geode(checkpoint_dir=directory)
    dest = first.nodes[-1]
    for node in first.local_nodes:
        first.send((node, "low"), node, dest)
        first.send((node, "high"), node, dest, priority=3)
        first.send((node, "stale"), node, dest, ttl=SHORT)
    first.checkpoint()
    first.close(timeout=TIMEOUT)
    time.sleep(SHORT * 1.5)  # the restart comes after the short ttls ran out
    again = Geode(checkpoint_dir=directory, restart=True)
    if again.hosts(dest):
        n = len(again.nodes)
        got = [again.receive(dest, timeout=TIMEOUT) for _ in range(2 * n)]
        assert sorted(m.data for m in got[:n]) == sorted((node, "high") for node in again.nodes)
        assert sorted(m.data for m in got[n:]) == sorted((node, "low") for node in again.nodes)
        assert again.try_receive(dest) is None
        assert again.stats(dest).expired == n
    again.close(timeout=TIMEOUT)
