"""Subscribers that come late, or again, to a topic whose earlier subscriber on their rank
holds messages unacknowledged (explicit acks, ``resend_after``): its publisher resends those
for it, and each resend reaches every subscriber on that rank.

Until this was fixed a resend of a message published before a subscriber subscribed (or while
it was away) started that subscriber there: it received the old message, then never the next
new one, held behind a number that the earlier subscriber had acknowledged, so never resent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_credits import world_size

from geode_mpi import Geode, QueueConfig, ReceiveTimeout, Topic

TIMEOUT = 60.0
RUN = 20.0  # a quiet job is found quiet in milliseconds
RESEND = 0.02


Job = tuple[Geode, Topic, str, str, list[str]]


@pytest.fixture
def make() -> Iterator[Callable[[int], Job]]:
    """Makes the Geode, its topic, its publisher (node0), the first subscriber and two more
    nodes, all three on the last rank (not node0); closes the Geode after the test."""
    made: list[Geode] = []

    def job(retain: int = 0) -> Job:
        size = world_size()
        geode = Geode(3 * size + 1, resend_after=RESEND, queue=QueueConfig(ack="explicit"))
        made.append(geode)
        pub = geode.nodes[0]
        first, *more = [node for node in geode.nodes if geode.rank_of(node) == size - 1][-3:]
        topic = geode.topic("t", publishers=[pub], subscribers=[first], retain=retain)
        return geode, topic, pub, first, more

    yield job
    for geode in made:
        geode.close(timeout=TIMEOUT)


def publish_held(geode: Geode, topic: Topic, pub: str, first: str, data: list[int]) -> list:
    """Publish ``data`` acked; ``first`` takes them and acks only the second: the others (what
    it returns) are resent for it until it acks them."""
    if geode.hosts(pub):
        for k in data:
            topic.publish(k, source=pub, ack=True)
    if not geode.hosts(first):
        return []
    got = [geode.receive(first, timeout=TIMEOUT) for _ in data]
    assert [msg.data for msg in got] == data
    got[1].ack()
    return [got[0], *got[2:]]


def resends_come(geode: Geode, pub: str, first: str, others: list[str]) -> dict[str, list]:
    """Wait for two resends for ``first`` to reach its rank (its duplicates), or to leave the
    publisher, after the subscribers changed; what ``others`` received meanwhile (99 only:
    the publisher may have published it by then)."""
    seen: dict[str, list] = {node: [] for node in others if geode.hosts(node)}
    node, stats = (others[0], first) if geode.hosts(first) else (pub, pub)
    if not geode.hosts(node):
        return seen
    count = "duplicates" if stats == first else "resent"
    until = getattr(geode.stats(stats), count) + 2
    deadline = time.monotonic() + TIMEOUT
    while getattr(geode.stats(stats), count) < until and time.monotonic() < deadline:
        for other in seen or [node]:
            try:
                msg = geode.receive(other, timeout=0.05)
            except ReceiveTimeout:
                continue
            seen[other].append(msg.data)
            msg.ack()
    assert getattr(geode.stats(stats), count) >= until, "no resend came"
    return seen


def finish(
    geode: Geode, topic: Topic, pub: str, held: list, subs: list[str], seen: dict[str, list]
) -> None:
    """The first subscriber acks what it held, the publisher publishes 99: each of ``subs``
    gets it (some of them may have while ``seen``), and nothing else, and the job is found
    quiet."""
    for msg in held:
        msg.ack()
    handle = topic.publish(99, source=pub, ack=True) if geode.hosts(pub) else None
    for node in subs:
        if geode.hosts(node):
            got = seen.get(node, [])
            assert set(got) <= {99}, (node, got)
            while not got:
                msg = geode.receive(node, timeout=TIMEOUT)
                msg.ack()
                got.append(msg.data)
            assert got == [99], (node, got)
    if handle is not None:
        handle.wait(timeout=TIMEOUT)
    summary = geode.run(timeout=RUN)
    assert summary.reason == "quiescent", summary
    for node in geode.nodes:
        if geode.hosts(node):
            assert geode.try_receive(node) is None, node


def test_late_subscribers_never_get_an_older_resend_and_get_the_next_message(
    make: Callable[[int], Job],
) -> None:
    """Two late subscribers beside the first: resends of 0 and 2 (published before they
    subscribed) came to them, and 99 never did (held behind 1)."""
    geode, topic, pub, first, late = make(0)
    held = publish_held(geode, topic, pub, first, [0, 1, 2])
    topic.subscribe(late)
    seen = resends_come(geode, pub, first, late)
    finish(geode, topic, pub, held, [first, *late], seen)


def test_a_subscriber_back_never_gets_a_resend_of_what_was_published_while_away(
    make: Callable[[int], Job],
) -> None:
    """It had 0, left; 1..3 were published; back, a resend of 1 or 3 made it resume there."""
    geode, topic, pub, first, (back, _) = make(0)
    topic.subscribe(back)
    if geode.hosts(pub):
        topic.publish(0, source=pub, ack=True)
    for node in (first, back):
        if geode.hosts(node):
            geode.receive(node, timeout=TIMEOUT).ack()
    topic.unsubscribe(back)
    held = publish_held(geode, topic, pub, first, [1, 2, 3])
    topic.subscribe(back)
    seen = resends_come(geode, pub, first, [back])
    finish(geode, topic, pub, held, [first, back], seen)


@pytest.mark.parametrize("retain", [1, 2])
def test_late_subscribers_get_the_retained_messages_then_the_next(
    make: Callable[[int], Job], retain: int
) -> None:
    """The retained messages are replayed for them; the resends for the first subscriber
    (0 and 2) add nothing."""
    geode, topic, pub, first, late = make(retain)
    held = publish_held(geode, topic, pub, first, [0, 1, 2])
    topic.subscribe(late)
    replayed = [0, 1, 2][-retain:]
    for node in late:
        if geode.hosts(node):
            got = [geode.receive(node, timeout=TIMEOUT) for _ in replayed]
            for msg in got:
                msg.ack()
            assert [msg.data for msg in got] == replayed, node
    seen = resends_come(geode, pub, first, late)
    finish(geode, topic, pub, held, [first, *late], seen)


@pytest.mark.parametrize("resend_after", [None, RESEND])
def test_a_late_subscriber_saved_before_its_first_message_starts_at_its_next(
    directory: Path, resend_after: float | None
) -> None:
    """Subscribed after 0..2, saved before anything reached it: after the restart it started
    at number 0, and 99 (number 3) was held for ever behind numbers that never come (with
    resend_after, the resends of 0..2 for the first subscriber reached it instead)."""
    size = world_size()
    geode = Geode(3 * size + 1, checkpoint_dir=directory)
    pub = geode.nodes[0]
    first, late = [node for node in geode.nodes if geode.rank_of(node) == size - 1][-2:]
    topic = geode.topic("t", publishers=[pub], subscribers=[first])
    if geode.hosts(pub):
        for k in range(3):
            topic.publish(k, source=pub, ack=True)
    topic.subscribe(late)
    geode.checkpoint()  # 0..2 still queued at the first, unacked
    geode.close(timeout=TIMEOUT)
    geode = Geode(3 * size + 1, checkpoint_dir=directory, restart=True, resend_after=resend_after)
    topic = geode.topic("t", publishers=[pub], subscribers=[first])
    handle = topic.publish(99, source=pub, ack=True) if geode.hosts(pub) else None
    if geode.hosts(late):
        assert geode.receive(late, timeout=TIMEOUT).data == 99
    if geode.hosts(first):
        got = [geode.receive(first, timeout=TIMEOUT).data for _ in range(4)]
        assert got == [0, 1, 2, 99]
    if handle is not None:
        handle.wait(timeout=TIMEOUT)
    summary = geode.run(timeout=RUN)
    assert summary.reason == "quiescent", summary
    if geode.hosts(late):
        assert geode.try_receive(late) is None
    geode.close(timeout=TIMEOUT)
