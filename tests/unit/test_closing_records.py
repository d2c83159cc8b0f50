"""What a sender keeps of its receivers' "closing" records, and how long: a stream's are kept
apart from the lost records, the refusals only while their message is in the outbox, and a
sequencer's "closing beyond" notice only while it holds the sender's messages. And the texts
of a publish's errors, worded from how many subscribers they name."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

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


def test_a_forwarder_tells_again_once_it_sent_on_what_it_held() -> None:
    """The forwarder's side: a source told once is told again if, after its messages went
    on (and it forgot the notice), another one is held for a closing subscriber."""
    g = Geode()
    engine = g._runtime.engine
    engine._told_held = frozenset({(1, 3), (2, 3)})
    parcel = SimpleNamespace(source=1, attempts=1)
    engine._done = lambda index, parcel: None  # (only the bookkeeping is looked at)
    engine.forwarded(0, parcel)
    assert engine._told_held == frozenset({(2, 3)})
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
