"""The thin single-message path: `Geode.send` through a destination's lane
(delivery/direct.py), and the plain receive's direct take, keep every guarantee.

Each test fails if the lane skips one: order, dedup of a copy, acks and the outbox emptied,
counters, a typed or filtered receive, a second source, threads, a closed Geode.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from geode_mpi import ClosedError, Geode, Message, ReceiveTimeout
from geode_mpi.delivery.direct import Lane
from geode_mpi.transport import InProcHub

ROUNDS = 60


class Tagged(Message):
    """A subclass: a typed receive takes only these."""


@pytest.fixture
def lane_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every message a lane sends (its seq), in order."""
    sent: list[int] = []
    real = Lane.send

    def counted(self: Lane, message: Message, batch: bool = False) -> Any:
        ticket, stamp = real(self, message, batch)
        sent.append(stamp.seq)
        return ticket, stamp

    monkeypatch.setattr(Lane, "send", counted)
    return sent


@pytest.fixture
def ranks() -> Iterator[tuple[Geode, Geode]]:
    """Two simulated ranks: node0 and node2 on rank 0, node1 and node3 on rank 1."""
    hub = InProcHub(2)
    a, b = (Geode(4, transport=hub.endpoint(rank)) for rank in range(2))
    yield a, b
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize("acks", [True, False])
def test_sends_on_a_lane_arrive_once_in_order_counted_and_acked(
    acks: bool, lane_sends: list[int]
) -> None:
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank), acks=acks) for rank in range(2))
    try:
        handles = [a.send(Message(k), dest="node1") for k in range(ROUNDS)]
        assert lane_sends == list(range(1, ROUNDS))  # every send after the first
        got = [b.receive(timeout=10) for _ in range(ROUNDS)]
        assert [m.data for m in got] == list(range(ROUNDS))
        assert [m.seq for m in got] == [h.seq for h in handles] == list(range(ROUNDS))
        assert [m.id for m in got] == [h.id for h in handles]
        assert len({h.id for h in handles}) == ROUNDS
        assert {(m.source, m.dest) for m in got} == {("node0", "node1")}
        assert all(h.done() and h.local for h in handles)
        sent, received = a.stats(), b.stats()
        assert sent.sent == received.received == received.processed == ROUNDS
        assert sent.sent_bytes == received.received_bytes > 0
        # Held in the outbox until acked (a loaded machine may have seen some acked already:
        # a due ack goes after ACK_DELAY while its node keeps calling geode_mpi).
        assert sent.unacked + sent.acked == (ROUNDS if acks else 0)
        b.flush()  # the acks
        assert a.stats().unacked == 0
        assert all(h.acked for h in handles) == acks
        assert received.duplicates == 0
    finally:
        for geode in (a, b):
            geode.close(timeout=10)


def test_a_copy_of_a_lane_s_message_is_dropped(ranks: tuple[Geode, Geode]) -> None:
    a, b = ranks
    metas: list[bytes] = []
    to_b = b.transport
    sink = to_b._sink  # type: ignore[attr-defined]

    def capture(source: int, meta: memoryview, frames: Any, nbytes: int) -> None:
        metas.append(bytes(meta))
        sink(source, meta, frames, nbytes)

    a.send("first", dest="node1")
    assert b.receive(timeout=10).data == "first"
    to_b.attach(capture)
    a.send("second", dest="node1")  # through the lane
    assert b.receive(timeout=10).data == "second"
    sink(0, memoryview(bytearray(metas[-1])), (), len(metas[-1]))  # the same message again
    a.send("third", dest="node1")
    assert b.receive(timeout=10).data == "third"
    assert b.try_receive() is None
    assert b.stats().duplicates == 1
    assert b.stats().processed == 3


def test_filtered_and_typed_receives_take_only_their_own(
    ranks: tuple[Geode, Geode], lane_sends: list[int]
) -> None:
    a, b = ranks
    for k in range(3):  # two sources on rank 0, to node1; a Tagged now and then
        a.send(f"from node0 {k}", dest="node1")
        a.send(f"from node2 {k}", "node2", "node1")
        a.send(Tagged(f"tagged {k}"), dest="node1")
    assert lane_sends  # (node0's sends after its first)
    assert b.receive(source="node2", timeout=10).data == "from node2 0"
    assert b.receive(type=Tagged, timeout=10).data == "tagged 0"
    assert b.receive(timeout=10).data == "from node0 0"  # the oldest left
    rest = [b.receive(timeout=10) for _ in range(6)]
    by_source = {
        source: [m.data for m in rest if m.source == source] for source in ("node0", "node2")
    }
    assert by_source["node2"] == ["from node2 1", "from node2 2"]
    assert by_source["node0"] == ["from node0 1", "tagged 1", "from node0 2", "tagged 2"]
    assert [type(m) for m in rest if m.data.startswith("tagged")] == [Tagged, Tagged]
    assert b.try_receive() is None


def test_arrays_and_large_frames_go_through_the_lane(
    ranks: tuple[Geode, Geode], lane_sends: list[int]
) -> None:
    a, b = ranks
    items = [np.arange(3.0), np.zeros(100_000), {"k": np.ones(2)}, "text"]
    a.send("first", dest="node1")
    for item in items:
        a.send(item, dest="node1")
    assert len(lane_sends) == len(items)
    assert b.receive(timeout=10).data == "first"
    for item in items:
        got = b.receive(timeout=10).data
        if isinstance(item, dict):
            assert np.array_equal(got["k"], item["k"])
        elif isinstance(item, np.ndarray):
            assert np.array_equal(got, item)
        else:
            assert got == item


def test_sends_from_threads_keep_each_thread_s_order(ranks: tuple[Geode, Geode]) -> None:
    # With other threads alive the send holds the gate (the general path): every message
    # arrives, each thread's in its order.
    a, b = ranks
    a.send("first", dest="node1")
    errors: list[BaseException] = []

    def sender(name: str) -> None:
        try:
            for k in range(50):
                a.send((name, k), dest="node1")
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(name,)) for name in "xy"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    got = [b.receive(timeout=10).data for _ in range(101)][1:]
    for name in "xy":
        assert [k for who, k in got if who == name] == list(range(50))
    assert a.stats().sent == 101


def test_a_closed_geode_refuses_a_send_even_on_a_lane() -> None:
    geode = Geode()
    geode.send("one", dest="node1")
    geode.send("two", dest="node1")  # (the lane exists now)
    assert [geode.receive("node1").data for _ in range(2)] == ["one", "two"]
    geode.close()
    with pytest.raises(ClosedError):
        geode.send("three", dest="node1")


@pytest.mark.parametrize("resend_after", [None, 30.0])
def test_a_lane_keeps_what_a_resend_needs_only_when_resends_are_on(
    lane_sends: list[int], resend_after: float | None
) -> None:
    # Without resends an outbox entry keeps the header alone; with them, the frames too and
    # a resend record per message (until acknowledged).
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank), resend_after=resend_after) for rank in range(2))
    big = np.arange(1000.0)  # its array in a frame
    for data in ("warm", "text", big):
        a.send(data, dest="node1")
    assert lane_sends == [1, 2]  # every send after the first
    pair = a._runtime.engine.pair_out(0, 1)
    entry = pair.outbox[2]
    assert (len(entry.frames) == 1) is (resend_after is not None)
    assert (2 in pair.resends) is (resend_after is not None)
    for expected in ("warm", "text"):
        assert b.receive("node1", timeout=10).data == expected
    assert b.receive("node1", timeout=10).data.tolist() == big.tolist()
    b.flush()
    a.pending()
    assert not pair.outbox and not pair.resends
    for geode in (a, b):
        geode.close(timeout=10)


def test_a_send_asks_once_whether_other_threads_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # A first send to a dest has no lane yet: the fast case falls back to the general path,
    # which needs the same answer (asked once, not twice).
    from geode_mpi.core import facade_sending as facade

    asked: list[int] = []

    def counted() -> int:  # (no other thread: one left by an earlier test would serialise)
        asked.append(1)
        return 0

    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    monkeypatch.setattr(facade, "other_threads", counted)
    for k in range(3):  # the first falls back (no lane yet), the others take the lane
        a.send(k, dest="node1")
        assert len(asked) == k + 1
    assert [b.receive(timeout=10).data for _ in range(3)] == [0, 1, 2]
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize("call", ["timeout0", "try_receive"])
def test_a_poll_takes_a_queued_message_as_receive_does(
    call: str, ranks: tuple[Geode, Geode], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``receive(timeout=0)`` and `try_receive` take a message already queued the way
    ``receive()`` does (issue 17: a poll cost 3x a receive): no general take, and the
    progress engine run once every 16 takes, not on each; order, counters and acks kept."""
    a, b = ranks
    for k in range(ROUNDS):
        a.send(Message(k), dest="node1")
    b.flush()  # (everything arrived and queued: the takes below find it there)
    runtime = b._runtime
    general: list[int] = []
    polls: list[int] = []
    real_take, real_poll = runtime.take, runtime.engine.poll
    monkeypatch.setattr(runtime, "take", lambda *args: general.append(1) or real_take(*args))
    monkeypatch.setattr(runtime.engine, "poll", lambda: polls.append(1) or real_poll())
    take = (lambda: b.receive(timeout=0)) if call == "timeout0" else b.try_receive
    got = [take() for _ in range(ROUNDS)]
    assert [m.data for m in got if m is not None] == list(range(ROUNDS))
    assert [m.seq for m in got if m is not None] == list(range(ROUNDS))
    assert not general and len(polls) <= ROUNDS // 16 + 1
    assert b.stats().processed == b.stats().received == ROUNDS
    monkeypatch.undo()
    assert b.try_receive() is None  # (nothing queued: the general case says so)
    with pytest.raises(ReceiveTimeout):
        b.receive(timeout=0)
    b.flush()
    assert a.stats().unacked == 0
