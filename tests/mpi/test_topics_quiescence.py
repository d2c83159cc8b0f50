"""Topic arrivals that its subscribers do not count one for one as the publisher counted them
sent, and run()'s quiescence, which needs the job's sent and received totals to meet.

A subscriber that leaves and comes back, with retained messages: the replay for it is counted
resent by its publisher, and the copies it had are skipped on its rank. A resend after an ack
timeout, sent for one subscriber, reaches every subscriber on its rank. Until this was fixed
its rank counted the skipped copies nowhere, and a resend once per local subscriber, and a
quiescent run() at 2 ranks or more never ended (reason 'timeout'), however idle the job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from test_credits import world_size

from geode_mpi import Geode, QueueConfig, ReceiveTimeout

TIMEOUT = 60.0
RUN = 20.0  # a quiet job is found quiet in milliseconds


@pytest.fixture
def geode() -> Iterator[Geode]:
    g = Geode(max(3, 2 * world_size()))  # (a subscriber beside one that came back)
    yield g
    g.close(timeout=TIMEOUT)


def take(geode: Geode, nodes: list[str], count: int) -> dict[str, list[object]]:
    return {
        node: [geode.receive(node, timeout=TIMEOUT).data for _ in range(count)]
        for node in nodes
        if geode.hosts(node)
    }


def test_a_quiescent_run_ends_after_a_subscriber_left_and_came_back(geode: Geode) -> None:
    """It had 0 and 1 (retained 3: replayed, skipped); 2 was published while it was away
    (replayed, and it resumes there). Beside it on its rank a subscriber that stayed."""
    nodes = geode.nodes
    pub, back, stays = nodes[0], nodes[-1], nodes[-2]
    log = geode.topic("log", publishers=[pub], subscribers=[pub, back, stays], retain=3)
    for k in range(2):
        log.publish(k, source=pub)
    take(geode, [pub, back, stays], 2)
    log.unsubscribe(back)
    log.publish(2, source=pub)
    log.subscribe(back)
    got = take(geode, [pub, stays], 1) | take(geode, [back], 1)
    assert all(data == [2] for data in got.values()), got
    summary = geode.run(timeout=RUN)
    assert summary.reason == "quiescent", summary
    for node in (pub, back, stays):
        if geode.hosts(node):
            assert geode.try_receive(node) is None
            assert geode.stats(node).duplicates == 0


def test_a_later_subscriber_s_replay_is_not_counted_for_one_that_came_back(geode: Geode) -> None:
    """Back first (its replay skipped), then another node subscribes: the replay for that one
    reaches the first again, which skips it uncounted (its publisher counted it for the new
    subscriber only)."""
    nodes = geode.nodes
    pub, back, late = nodes[0], nodes[-1], nodes[-2]
    log = geode.topic("log", publishers=[pub], subscribers=[pub, back], retain=2)
    for k in range(3):
        log.publish(k, source=pub)
    take(geode, [pub, back], 3)
    log.unsubscribe(back)
    log.subscribe(back)
    assert geode.run(timeout=RUN).reason == "quiescent"
    log.subscribe(late)
    got = take(geode, [late], 2)
    assert all(data == [1, 2] for data in got.values()), got
    summary = geode.run(timeout=RUN)
    assert summary.reason == "quiescent", summary
    for node in (pub, back, late):
        if geode.hosts(node):
            assert geode.try_receive(node) is None


def test_a_resend_to_a_rank_with_two_subscribers_counts_once_for_quiescence() -> None:
    """Two subscribers on the last rank hold their copy unacked while the publisher resends
    it to each (resend_after): each resend reaches both, a duplicate for each."""
    size = world_size()
    explicit = QueueConfig(ack="explicit")
    with Geode(2 * size, resend_after=0.02, queue=explicit) as geode:
        nodes = geode.nodes
        pub = nodes[0]
        subs = [node for node in nodes if geode.rank_of(node) == size - 1][:2]
        topic = geode.topic("t", publishers=[pub], subscribers=subs)
        if geode.hosts(pub):
            topic.publish("m", source=pub, ack=True)
        got = [geode.receive(sub, timeout=TIMEOUT) for sub in subs if geode.hosts(sub)]
        here = next(node for node in nodes if geode.hosts(node))
        deadline = time.monotonic() + TIMEOUT
        waits = size > 1 and (geode.hosts(pub) or bool(got))
        while waits and time.monotonic() < deadline:  # resends come, and are dropped
            with pytest.raises(ReceiveTimeout):
                geode.receive(here, timeout=0.2)
            if geode.hosts(pub) and geode.stats(pub).resent >= 4:
                break
            if got and sum(geode.stats(sub).duplicates for sub in subs) >= 4:
                break
        for message in got:
            message.ack()
        summary = geode.run(timeout=RUN)
        assert summary.reason == "quiescent", summary
