"""Credits in the embedded world: what a send that found no room says, and what it did.

A send to a full ``block`` queue waits only while another thread (not a daemon) could take
from the queue; these tests keep one such thread alive, idle, so that the send waits out its
timeout. The MPI tier runs the same cases across ranks (tests/mpi/test_credits.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from geode_mpi import Geode, NotProcessed, QueueConfig, SendTimeout
from geode_mpi.delivery import acks


@pytest.fixture
def idle_thread() -> Iterator[None]:
    """A thread that is not a daemon and does nothing until the test ends."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(30.0,))
    thread.start()
    yield
    stop.set()
    thread.join()


def test_a_send_that_found_no_room_in_time_says_it_was_not_sent(idle_thread: None) -> None:
    g = Geode(queue=QueueConfig(capacity=4, policy="block"))  # a window of 1 per sender
    g.send("first", "node0", "node1")
    with pytest.raises(SendTimeout) as err:
        g.send("second", "node0", "node1", timeout=0.2)
    error = err.value
    assert error.in_flight is False and error.message_id == -1
    assert str(error) == (
        "message from node0 to node1 not sent: no room at node1 within 0.2 s (node1's queue "
        "stayed full for node0: is node1 receiving?); send it again"
    )
    assert "in flight" not in str(error)
    assert g.receive("node1", timeout=1).data == "first"
    assert g.try_receive("node1") is None  # it was not sent: the text says so, truly
    g.send("second", "node0", "node1", timeout=1)  # sent again, as it says
    assert g.receive("node1", timeout=1).data == "second"
    g.close()


def test_a_message_sent_but_not_released_stays_in_flight() -> None:
    error = SendTimeout(7, "node0", "node1", 0.5)
    assert error.in_flight is True
    assert str(error).endswith("within 0.5 s (is node1 receiving?); the message is still in flight")


def test_isend_many_names_the_timeout_it_was_given(idle_thread: None) -> None:
    g = Geode(queue=QueueConfig(capacity=4, policy="block"))
    with pytest.raises(SendTimeout) as err:
        g.isend_many(["a", "b", "c"], dest="node1", timeout=0.2)
    error = err.value
    assert error.sent == 1 and error.in_flight is False
    assert "no room at node1 within 0.2 s" in str(error), str(error)
    assert "isend_many: item 1 of 3 (str)" in str(error)
    assert "items 0..0 were sent; item 1 and the 1 after it were not" in str(error)
    assert [m.data for m in g.receive_many("node1", timeout=1)] == ["a"]
    g.close()


def test_a_message_sent_with_ack_that_a_drop_oldest_queue_dropped_says_so() -> None:
    g = Geode(queue=QueueConfig(capacity=2, policy="drop_oldest"))
    handle = g.isend("important", "node0", "node1", ack=True)
    for k in range(3):
        g.send(k, "node0", "node1")  # the third drops "important", the oldest
    assert g.stats("node1").dropped == 2
    assert handle.acked and handle.done()  # acknowledged: node0 forgets it
    assert handle.lost == "dropped"
    with pytest.raises(NotProcessed) as err:
        handle.wait(timeout=1)
    assert err.value.why == "dropped" and err.value.handle is handle
    assert str(err.value) == (
        f"message {handle.id} (node0->node1 seq 0) was not processed: node1's full drop_oldest "
        "queue dropped it (counted in stats().dropped); it never will be (send it again if it "
        "must be)"
    )
    kept = g.isend("kept", "node0", "node1", ack=True)  # (drops 0)
    assert [m.data for m in g.receive_many("node1")] == [2, "kept"]
    kept.wait(timeout=1)  # processed: no error
    assert kept.lost is None and g.stats("node0").unacked == 0
    g.close()


def test_lost_records_are_kept_for_point_to_point_handles_only_and_bounded() -> None:
    """A publish's handle is not told (it counts its subscribers' acks), so its subscribers'
    drops keep nothing; the records kept for sends are bounded (the oldest go)."""
    g = Geode(queue=QueueConfig(capacity=2, policy="drop_oldest"))
    news = g.topic("news", publishers=["node0"], subscribers=["node1"])
    handles = [news.publish(k, ack=True) for k in range(4)]  # the first two are dropped
    assert [m.data for m in g.receive_many("node1")] == [2, 3]
    for handle in handles:
        handle.wait(timeout=1)  # acknowledged by the subscriber: complete, no error
    assert g.stats("node1").dropped == 2 and handles[0].lost is None
    assert not g._runtime.engine.lost
    count = acks.LOST_KEPT + 10
    sent = [g.isend(k, "node0", "node1", ack=True) for k in range(count)]
    assert sent[-3].lost == "dropped" and sent[0].lost == "dropped"  # (kept by the handles)
    table = g._runtime.engine.lost or {}
    assert len(table) <= acks.LOST_KEPT and (0, 1, sent[0].seq) not in table  # (the oldest go)
    del sent
    for k in range(count):  # handles nobody keeps: their records are bounded
        g.isend(k, "node0", "node1", ack=True)
    assert len(g._runtime.engine.lost or ()) <= acks.LOST_KEPT
    g.close()


def test_a_message_sent_with_ack_that_expired_unprocessed_says_so() -> None:
    g = Geode()
    handle = g.isend("expiring", "node0", "node1", ack=True, ttl=0.05)
    time.sleep(0.1)  # (its ttl runs out: nothing is waited for)
    assert g.stats("node1").expired == 1  # (stats() drops what expired)
    assert handle.lost == "expired"
    with pytest.raises(NotProcessed, match="its ttl ran out in node1's queue before it was"):
        handle.wait(timeout=1)
    assert g.try_receive("node1") is None
    g.close()


def test_close_names_the_nodes_holding_messages_taken_and_never_acked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = Geode(queue=QueueConfig(ack="explicit"))
    for k in range(5):
        g.send(k, "node0", "node1")
    g.send("x", "node0", "node2")
    taken = [g.receive("node1", timeout=1) for _ in range(3)]
    taken[0].ack()
    taken[1].nack(ValueError("again"))  # (queued again: not in hand)
    g.receive("node2", timeout=1)
    with caplog.at_level("WARNING", logger="geode_mpi"):
        g.close()
    assert (
        "close() on rank 0: messages taken with an explicit ack were neither acked nor nacked: "
        "node1: 1; node2: 1 (their senders keep them as unacknowledged;" in caplog.text
    ), caplog.text


def test_close_says_nothing_when_every_message_taken_was_acked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = Geode(queue=QueueConfig(ack="explicit"))
    g.send("a", "node0", "node1")
    g.receive("node1", timeout=1).ack()
    with caplog.at_level("WARNING", logger="geode_mpi"):
        g.close()
    assert "explicit ack" not in caplog.text


def test_a_capacity_below_the_number_of_nodes_is_refused_as_the_docs_say() -> None:
    with pytest.raises(ValueError, match="node0's queue capacity 2 is below the number of nodes"):
        Geode(queue=QueueConfig(capacity=2, policy="block"))
    Geode(queue=QueueConfig(capacity=2, policy="block", window=1)).close()  # (a window: fine)
    delivery = (Path(__file__).resolve().parents[2] / "docs" / "delivery.md").read_text()
    rule = " ".join(
        delivery.split("`block` and `raise` are **credit-based flow control**")[1][:600].split()
    )
    assert "at least 1" not in rule
    assert "a capacity below the number of nodes without a `window=` raises `ValueError`" in rule


def test_a_message_sent_with_ack_then_dead_lettered_says_so() -> None:
    g = Geode(queue=QueueConfig(ack="explicit", max_attempts=1))
    handle = g.isend("bad", "node0", "node1", ack=True)
    g.receive("node1", timeout=1).nack(ValueError("cannot"))  # its one attempt failed
    assert [d.message.data for d in g.dead_letters("node1")] == ["bad"]
    assert handle.acked and handle.lost == "dead-lettered"  # (before: None, as processed)
    with pytest.raises(NotProcessed) as err:
        handle.wait(timeout=1)
    assert err.value.why == "dead-lettered"
    assert str(err.value) == (
        f"message {handle.id} (node0->node1 seq 0) was not processed: its last attempt failed "
        "at node1, which put it in its dead letters (see dead_letters('node1')); it never "
        "will be (send it again if it must be)"
    )
    g.close()


def test_a_handle_kept_learns_it_was_not_processed_however_many_drops_come_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The table of records kept for handles nobody holds is bounded (the newest three here);
    a handle still held is told all the same. Before: a handle whose record the table had
    forgotten said None, and its wait() returned as if the message had been processed (904
    of 5000 with the table's 4096; 2 processed)."""
    monkeypatch.setattr("geode_mpi.delivery.acks.LOST_KEPT", 3)
    g = Geode(queue=QueueConfig(capacity=2, policy="drop_oldest"))
    handles = [g.isend(k, "node0", "node1", ack=True) for k in range(8)]  # 6 dropped
    g.stats("node1")  # (drives progress: the records arrive)
    assert [h.lost for h in handles] == ["dropped"] * 6 + [None] * 2
    assert [m.data for m in g.receive_many("node1")] == [6, 7]
    g.stats("node0")
    processed = []
    for k, handle in enumerate(handles):
        with contextlib.suppress(NotProcessed):
            handle.wait(timeout=1)
            processed.append(k)
    assert processed == [6, 7]
    del handles, handle
    for k in range(20):  # no handle kept: the table keeps the newest three records
        g.isend(k, "node0", "node1", ack=True)
    g.stats("node1")
    assert len(g._runtime.engine.lost) == 3  # (before: one entry per message, for ever)
    g.close()


def test_the_handles_watched_for_lost_records_do_not_pile_up() -> None:
    """A long job that never keeps its ack=True handles keeps few entries for them."""
    g = Geode()
    for k in range(3 * acks.LOST_KEPT):
        g.isend(k, "node0", "node1", ack=True)  # (not kept)
        g.receive("node1")
    assert len(g._runtime.engine._watched or ()) <= acks.LOST_KEPT
    g.close()


def test_a_closing_receiver_s_refusals_count_however_many_records_come() -> None:
    """`closed_to` (a send out of credits to a closing rank stops waiting once none of its
    waited-for messages there can give a credit back) read the refusals from the table of the
    latest 4096 lost records: past it, the oldest refusal was forgotten and the send waited
    until its timeout (for ever without one)."""
    from types import SimpleNamespace

    from geode_mpi import codec
    from geode_mpi.codec import header

    g = Geode()
    engine = g._runtime.engine
    count = acks.LOST_KEPT + 100
    meta = bytearray(header.FLAGS_AT + 1)
    meta[header.FLAGS_AT] = codec.FLAG_WAITED
    pair = SimpleNamespace(outbox={seq: SimpleNamespace(meta=meta) for seq in range(count)})
    engine.pairs_out[(0, 1)] = pair  # (its refusals are kept while their messages are in it)
    engine.closing_nodes = frozenset({1})
    for seq in range(count):
        engine._tell_lost((0, 1, seq), "closing")
    engine._tell_lost((0, 2, 0), "dropped")  # (another pair's record: pushes one more out)
    assert len(engine.lost) <= acks.LOST_KEPT
    assert engine.closed_to(0, 1, pair)  # every message there was refused: no credit comes
    pair.outbox[count] = SimpleNamespace(meta=meta)  # one not refused: it may still be served
    assert not engine.closed_to(0, 1, pair)
    g.close()
