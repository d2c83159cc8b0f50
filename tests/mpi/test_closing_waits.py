"""What a sender that waits for processing (ack=True, a request) sees when its destination's
rank is in close(): the messages a handler there takes are still served (their acks, replies
and credits come), the others are told not processed at once (`NotProcessed`, why "closing").

The last node's rank closes without receiving; every other rank's node sends to it. At size 1
(the embedded world) a wait for an ack that only a receive can end raises at once: skipped.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from geode_mpi import Geode, Message, NotProcessed, QueueConfig, QueueFull

TIMEOUT = 60.0
PROMPT = 8.0  # well under the sends' own timeouts (20 s): told, not timed out


class Job(Message):
    """What the closing rank has a handler for."""


class Ask(Message):
    """A request the closing rank has a handler for."""


class Unhandled(Message):
    """A request the closing rank has no handler for."""


def closing_world(queue: QueueConfig | None = None) -> tuple[Geode, str, list[int]]:
    """A Geode whose last node's rank closes at once, with handlers there for `Job` and `Ask`
    (what they handled goes in the list); skipped at size 1."""
    with Geode() as probe:
        size = probe.size
    if size == 1:
        pytest.skip("one process: ack=True to a node of this rank with no handler cannot wait")
    geode = Geode() if queue is None else Geode(queue=queue)
    receiver = geode.nodes[-1]
    seen: list[int] = []
    geode.on(Job, node=receiver)(lambda message: seen.append(message.data))
    geode.on(Ask, node=receiver)(lambda message: message.data + 1)
    return geode, receiver, seen


def test_ack_and_requests_without_a_handler_at_a_closing_rank_raise_not_processed() -> None:
    g, receiver, seen = closing_world()
    if not g.hosts(receiver):
        me = g.node
        g.send(Job(1), me, receiver, ack=True, timeout=20.0)  # handled there: acked
        assert g.request(Ask(1), receiver, source=me, timeout=20.0).data == 2
        started = time.monotonic()
        with pytest.raises(NotProcessed) as err:  # (before the fix: AckTimeout after 20 s)
            g.send("no handler", me, receiver, ack=True, timeout=20.0)
        assert time.monotonic() - started < PROMPT
        assert err.value.why == "closing" and err.value.dest == receiver
        text = str(err.value)
        assert f"{receiver}'s rank is in close() and {receiver} has no handler for it" in text
        assert err.value.handle.lost == "closing" and not err.value.handle.acked
        started = time.monotonic()
        with pytest.raises(NotProcessed) as err:  # (before the fix: ReceiveTimeout after 20 s)
            g.request(Unhandled(2), receiver, source=me, timeout=20.0)
        assert time.monotonic() - started < PROMPT
        assert err.value.why == "closing" and err.value.dest == receiver
        started = time.monotonic()
        with pytest.raises(NotProcessed, match=f"{receiver}'s rank is in close()"):
            asyncio.run(g.arequest(Unhandled(2), receiver, source=me, timeout=20.0))
        assert time.monotonic() - started < PROMPT  # (before the fix: ReceiveTimeout, 20 s)
        assert g.request(Ask(3), receiver, source=me, timeout=20.0).data == 4  # still served
    g.close(timeout=TIMEOUT)
    if g.hosts(receiver):
        assert seen == [1] * (g.size - 1)
        got = []
        while (message := g.try_receive(receiver)) is not None:
            got.append(message.data)
        assert sorted(got, key=repr) == sorted(["no handler", 2, 2] * (g.size - 1), key=repr)


def test_ack_without_a_timeout_to_a_closing_rank_without_a_handler_does_not_hang() -> None:
    g, receiver, _ = closing_world()
    if not g.hosts(receiver):
        with pytest.raises(NotProcessed, match=f"{receiver}'s rank is in close()"):
            g.send("no handler", g.node, receiver, ack=True)  # (before the fix: for ever)
    g.close(timeout=TIMEOUT)


def test_pipelined_acked_sends_to_a_closing_rank_that_serves_them_wait_for_credits() -> None:
    """Window 1: each isend waits for the credit of the one before, which the closing rank
    gives back once its handler took it (after its closing record): no QueueFull."""
    with Geode() as probe:
        size = probe.size
    g, receiver, seen = closing_world(QueueConfig(capacity=2 * size, policy="block", window=1))
    count = 50
    if not g.hosts(receiver):
        me = g.node
        g.send(Job(0), me, receiver, ack=True, timeout=20.0)  # served: its rank is in close()
        handles = [g.isend(Job(k), me, receiver, ack=True, timeout=20.0) for k in range(count)]
        for handle in handles:  # (before the fix: QueueFull "is closing" at the second isend)
            handle.wait(timeout=20.0)
    g.close(timeout=TIMEOUT)
    if g.hosts(receiver):
        assert sorted(seen) == sorted([0, *range(count)] * (g.size - 1))
        assert g.pending(receiver) == 0


def test_a_publisher_through_a_sequencer_to_a_closing_subscriber_gets_queue_full() -> None:
    """A total-order topic: node0 sequences, the last node subscribes and its rank closes at
    once, every other node publishes through node0 (window 1). The sequencer holds what it
    cannot send on to the closing subscriber; the publishers are told, and raise `QueueFull`
    naming it (before the fix: `SendTimeout` "no room at node0" after the full timeout)."""
    with Geode() as probe:
        size = probe.size
    if size < 3:
        pytest.skip("needs the publisher, the sequencer and the subscriber on three ranks")
    g = Geode(queue=QueueConfig(capacity=4, policy="block", window=1))
    receiver = g.nodes[-1]
    publishers = g.nodes[:-1]
    topic = g.topic("news", publishers, [receiver], total_order=True, sequencer="node0")
    if g.node not in ("node0", receiver):
        me = g.node
        published = []
        started = time.monotonic()
        with pytest.raises(QueueFull) as err:
            for k in range(6):
                topic.publish((me, k), me, timeout=20.0)
                published.append(k)
        assert time.monotonic() - started < PROMPT
        assert len(published) <= 2
        assert err.value.dest == receiver
        text = str(err.value)
        assert f"{receiver} is closing (rank {size - 1} called close())" in text, text
        assert f"node0, the sequencer {me}'s messages go through, holds" in text, text
    g.close(timeout=TIMEOUT)


@pytest.mark.parametrize("total_order", [False, True])
def test_a_publish_with_ack_to_a_closing_subscriber_without_a_handler_raises_not_processed(
    total_order: bool,
) -> None:
    """Each other rank's node publishes on its own topic (on a total-order one, as its
    sequencer) to the closing subscriber: a `Job` it serves (acked), then what it has no
    handler for: `NotProcessed` at once, naming the subscriber and the topic (before the fix:
    `AckTimeout` "t0 has not processed it" after the full timeout, for ever without one)."""
    g, receiver, seen = closing_world()
    publishers = g.nodes[:-1]
    topics = {
        pub: g.topic(f"t{k}", [pub], [receiver], total_order=total_order, sequencer=pub)
        if total_order
        else g.topic(f"t{k}", [pub], [receiver])
        for k, pub in enumerate(publishers)
    }
    if not g.hosts(receiver):
        me = g.node
        topic = topics[me]
        topic.publish(Job(1), me, ack=True).wait(timeout=20.0)  # served there: acked
        started = time.monotonic()
        handle = topic.publish("no handler", me, ack=True)
        with pytest.raises(NotProcessed) as err:
            handle.wait(timeout=20.0)
        assert time.monotonic() - started < PROMPT
        assert (err.value.why, err.value.dest, err.value.topic) == ("closing", receiver, topic.name)
        text = str(err.value)
        assert f"({me} on topic {topic.name!r} seq 1) was not processed by {receiver}:" in text
        assert f"{receiver}'s rank is in close() and {receiver} has no handler for it" in text
        assert handle.lost == "closing" and not handle.acked
        with pytest.raises(NotProcessed, match=f"not processed by {receiver}"):
            topic.publish("again", me, ack=True).wait()  # (before the fix: for ever)
        topic.publish(Job(2), me, ack=True).wait(timeout=20.0)  # still served
    g.close(timeout=TIMEOUT)
    if g.hosts(receiver):
        assert sorted(seen) == sorted([1, 2] * (g.size - 1))
        got = []
        while (message := g.try_receive(receiver)) is not None:
            got.append(message.data)
        assert sorted(got) == sorted(["again", "no handler"] * (g.size - 1))


def test_a_publisher_forgets_the_refusals_of_messages_a_closing_subscriber_dropped_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A closing subscriber with a small ``drop_oldest`` queue refuses each ack=True publish
    it has no handler for, then drops it as later ones come (acknowledged: out of the
    outbox). The publisher kept every refusal (`closing_told`) for the Geode's life; it keeps
    those still in its outbox, within its sweep's bound."""
    from geode_mpi.delivery import acks

    monkeypatch.setattr(acks, "LOST_KEPT", 32)  # (the sweep's bound, small: a quick test)
    g, receiver, _ = closing_world(QueueConfig(capacity=2, policy="drop_oldest"))
    engine = g._runtime.engine
    engine._told_limit = 32
    topics = {pub: g.topic(f"d{k}", [pub], [receiver]) for k, pub in enumerate(g.nodes[:-1])}
    if not g.hosts(receiver):
        me = g.node
        refused = 0
        for k in range(200):
            try:
                topics[me].publish(k, me, ack=True).wait(timeout=20.0)
            except NotProcessed as err:
                assert (err.why, err.dest) == ("closing", receiver)
                refused += 1
        assert refused > 0
        told = engine.closing_told or set()
        assert len(told) <= 64, len(told)  # (before: one per refused message, 200 or so)
        assert not engine.lost  # (a stream's refusals are not lost records: before, all)
    g.close(timeout=TIMEOUT)
