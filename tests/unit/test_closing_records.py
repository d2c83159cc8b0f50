"""What a sender keeps of its receivers' "closing" records, and how long: a stream's are kept
apart from the lost records, the refusals only while their message is in the outbox, and a
sequencer's "closing beyond" notice only while it holds the sender's messages. And the texts
of a publish's errors, worded from how many subscribers they name."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from geode_mpi import AckTimeout, Geode, NotProcessed, QueueConfig, SendTimeout
from geode_mpi.delivery import acks


def test_a_stream_s_closing_records_do_not_push_lost_records_out() -> None:
    """A publish's handle reads its subscribers' refusals from `closing_told` only: in the
    bounded table of lost records they pushed out the records of point-to-point sends."""
    g = Geode(queue=QueueConfig(capacity=2, policy="drop_oldest"))
    engine = g._runtime.engine
    news = g.topic("news", publishers=["node0"], subscribers=["node1"])
    number = news.numbers and min(news.numbers)
    for seq in range(acks.LOST_KEPT):
        engine._tell_lost((0, 2, seq), "dropped")
    for seq in range(100):
        engine._tell_lost((number, 1, seq), "closing")
    table = engine.lost or {}
    assert len(table) == acks.LOST_KEPT and (0, 2, 0) in table  # (before: 100 pushed out)
    assert not any(key[0] == number for key in table)
    assert (number, 1, 99) in (engine.closing_told or ())
    g.close()


def test_closing_refusals_are_forgotten_once_out_of_the_outbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message told "closing" and later acknowledged (dropped or expired at its receiver,
    say) can be asked about no more: `closing_told` kept every one for the Geode's life."""
    monkeypatch.setattr(acks, "LOST_KEPT", 64)  # (the bound, small: the test runs fast)
    g = Geode()
    engine = g._runtime.engine
    engine._told_limit = 64
    count = 20 * 64
    for k in range(count):
        handle = g.isend(k, "node0", "node1", ack=True)
        engine._tell_lost((0, 1, handle.seq), "closing")  # (as a closing rank tells)
        g.receive("node1")  # then taken after all: acknowledged, out of the outbox
        g.flush()
    told = engine.closing_told or set()
    assert len(told) <= 64, len(told)  # (before: 1280, one per message)
    kept = g.isend("kept", "node0", "node2", ack=True)
    engine._tell_lost((0, 2, kept.seq), "closing")  # still in the outbox: kept, and read
    for k in range(count):
        handle = g.isend(k, "node0", "node1", ack=True)
        engine._tell_lost((0, 1, handle.seq), "closing")
        g.receive("node1")
    assert (0, 2, kept.seq) in (engine.closing_told or ())
    assert kept.lost == "closing" and not kept.acked
    assert len(engine.closing_told or ()) <= 64
    g.close()


def test_a_closing_beyond_notice_is_forgotten_once_every_credit_came_back() -> None:
    """`closing_beyond` (a sequencer holds a sender's message for a closing subscriber) was
    never cleared: once the sequencer sent everything on (every credit back), it is."""
    g = Geode(queue=QueueConfig(capacity=8, policy="block"))
    engine = g._runtime.engine
    for k in range(2):
        g.isend(k, "node0", "node1")
    engine.closing_beyond = {(0, 1): 2, (0, 3): 2}  # (as the records arriving set it)
    assert engine.closed_to(0, 1, engine.pairs_out[(0, 1)])
    g.receive("node1")
    g.flush()
    g.pending()
    assert (0, 1) in engine.closing_beyond  # one credit of two back: the forwarder may hold
    g.receive("node1")
    g.flush()
    g.pending()
    assert engine.closing_beyond == {(0, 3): 2}  # (before: (0, 1) kept for ever)
    assert not engine.closed_to(0, 1, engine.pairs_out[(0, 1)])
    g.close()


def _telling(engine: Any) -> tuple[list[tuple[int, int]], Callable[[], None]]:
    """Make every subscriber of a stream out of credits and closing; the (forwarder, source)
    of each "closing beyond" record the engine sends from then on, and what undoes it."""
    told: list[tuple[int, int]] = []
    kept = engine.path
    engine.pair_out = lambda number, sub: SimpleNamespace(credits=0)
    engine.closed_to = lambda number, sub, pair: True
    engine.path = SimpleNamespace(control=lambda src, dst, payload: told.append((src, dst)))
    engine._done = lambda index, parcel: None  # (only the bookkeeping is looked at)
    engine._credit = lambda index, parcel: None

    def undo() -> None:
        for name in ("pair_out", "closed_to", "_done", "_credit"):
            del engine.__dict__[name]
        engine.path = kept

    return told, undo


def test_a_forwarder_tells_a_source_once_while_it_holds_one_of_its() -> None:
    """A sequencer holding a source's message for a closing subscriber told the source again
    at every message of the source's that it (or another sequencer) sent on meanwhile: one
    record per forwarded message (300 for 300 publishes on another topic; 1 before it)."""
    g = Geode()
    engine = g._runtime.engine
    told, undo = _telling(engine)
    stream = SimpleNamespace(number=9, subscribers=[3])
    engine.tell_held(0, 1, stream)
    for _ in range(5):
        engine.forwarded(0, SimpleNamespace(source=1, attempts=1))  # (another channel)
        engine.forwarded(2, SimpleNamespace(source=1, attempts=1))  # (another sequencer)
        engine.tell_held(0, 1, stream)  # (`Sequencer.resume` retries the stuck channel)
    assert told == [(0, 1)]  # (before: 11)
    engine.sent_on_all(0, 1)  # it holds none of 1's now: one held again is told again
    engine.tell_held(0, 1, stream)
    assert told == [(0, 1), (0, 1)]
    undo()
    g.close()


def test_two_sequencers_each_tell_a_source_of_what_they_hold() -> None:
    """The notices were kept by (source, subscriber): once one sequencer told a source of a
    closing subscriber, another sequencer holding the source's message for it did not, and
    the source's next send to it waited for a credit that never comes (its notice is kept
    by (source, sequencer))."""
    g = Geode()
    engine = g._runtime.engine
    told, undo = _telling(engine)
    stream = SimpleNamespace(number=9, subscribers=[3])
    engine.tell_held(0, 1, stream)
    engine.tell_held(2, 1, stream)
    assert told == [(0, 1), (2, 1)]  # (before: [(0, 1)])
    undo()
    g.close()


def test_a_publish_s_error_texts_follow_the_number_of_subscribers() -> None:
    """The wording for one or several subscribers came from ", " in their names: a node
    named "a, b" was worded as two."""
    one = AckTimeout(1, "p", "a, b", 0, 2.0, topic="t", count=1)
    assert "a, b has not processed it yet (is it receiving?)" in str(one)
    two = AckTimeout(1, "p", "a, b, c", 0, 2.0, topic="t", count=2)
    assert "a, b, c have not processed it yet (are they receiving?)" in str(two)
    refused = NotProcessed(1, "p", "a, b", 0, "closing", topic="t", count=1)
    assert "a, b's rank is in close()" in str(refused)
    assert "the ranks of" not in str(refused) and "a, b's queue" in str(refused)
    both = NotProcessed(1, "p", "a, b, c", 0, "closing", topic="t", count=2)
    assert "the ranks of a, b, c are in close()" in str(both)

    geode = Geode(["pub", "x, y", "z"])  # one process: nothing takes it while it waits
    topic = geode.topic("u", publishers=["pub"], subscribers=["x, y"])
    with pytest.raises(AckTimeout) as err:
        topic.publish("m", ack=True).wait(timeout=5.0)
    assert err.value.dest == "x, y"
    assert "from x, y's queue" in str(err.value), str(err.value)  # (before: "the queues of")
    geode.close()


def test_a_publish_still_in_flight_names_its_topic_not_a_node() -> None:
    geode = Geode()
    topic = geode.topic("mytopic", publishers=["node0"], subscribers=["node1"])
    handle = topic.publish("m")
    handle._ticket = SimpleNamespace(done=False, held=False)  # (MPI never released it)
    with pytest.raises(SendTimeout) as err:
        handle.wait(timeout=0.01)
    text = str(err.value)
    assert "publish on topic 'mytopic'" in text and "to mytopic" not in text, text
    assert err.value.topic == "mytopic" and err.value.in_flight
    geode.close()


def test_close_says_why_a_sequencer_holds_a_topic_never_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Restarted, the job never made a total-order topic again: what its sequencer holds
    was reported as held for want of room at a full subscriber."""
    nodes = [f"node{k}" for k in range(4)]
    bounded = {"node3": QueueConfig(capacity=4, policy="block")}
    first = Geode(nodes, checkpoint_dir=tmp_path, queues=bounded)
    topic = first.topic("to", nodes[:2], ["node3"], total_order=True)
    for k in range(7):
        topic.publish(k, source="node1", timeout=5.0)
    first.checkpoint()
    first.close(timeout=5.0)
    second = Geode(nodes, checkpoint_dir=tmp_path, queues=bounded, restart=True)
    caplog.clear()  # (the first close's report: held for want of room, rightly)
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        second.close(timeout=5.0)
    text = " ".join(record.getMessage() for record in caplog.records)
    assert "for a total-order topic this rank never made again ('to')" in text, text
    assert "full subscriber" not in text, text
