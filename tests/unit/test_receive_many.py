"""`Geode.receive_many`: the messages queued now in one list, a run's taken together, with
every guarantee a `receive` of each keeps (issue 17's message rate)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from general_path import count_general_done
from test_run_handles import Stamped
from test_runs import NAMES, engine, world
from test_runs_queued import entries, queued_run

from geode_mpi import Geode, Message, QueueConfig, ReceiveTimeout
from geode_mpi.codec import decode
from geode_mpi.delivery.run_cursor import RunCursor
from geode_mpi.errors import DecodeError
from geode_mpi.persistence.snapshot import capture, unpack_messages


def fields(messages: list[Message]) -> list[tuple[Any, ...]]:
    return [(m.data, m.id, m.seq, m.timestamp, m.source, m.dest, type(m)) for m in messages]


def drain(b: Geode, count: int, limit: int = 64) -> list[Message]:
    got: list[Message] = []
    while len(got) < count:
        got += b.receive_many(limit=limit, timeout=0)
    return got


@pytest.mark.parametrize("acks", [False, True])
def test_each_message_is_the_one_receive_gives(acks: bool) -> None:
    a1, one = queued_run(150, acks=acks)
    a2, many = queued_run(150, acks=acks)
    singles = [one.receive() for _ in range(150)]
    bulk = drain(many, 150)
    assert [m.data for m in bulk] == list(range(150))
    assert [m.seq for m in bulk] == list(range(1, 151))  # ("start" was seq 0)
    first = bulk[0].id
    assert [m.id for m in bulk] == list(range(first, first + 150))
    # The same fields as one receive at a time gives (ids and stamps relative to the first).
    assert [(m.data, m.seq, m.source, m.dest, type(m)) for m in bulk] == [
        (m.data, m.seq, m.source, m.dest, type(m)) for m in singles
    ]
    assert all(type(m) is Message and m.__dict__.keys() == singles[0].__dict__.keys() for m in bulk)
    assert many.stats().processed == one.stats().processed == 151
    assert many.stats().received == 151 and many.pending() == 0
    one.flush()
    many.flush()
    assert a1.stats().unacked == a2.stats().unacked == 0
    assert a1.stats().acked == a2.stats().acked == (151 if acks else 0)


def test_limit_and_a_run_taken_in_parts() -> None:
    _, b = queued_run(10)
    (cursor,) = entries(b)
    got = b.receive_many(limit=3)
    assert [m.data for m in got] == [0, 1, 2] and cursor.at == 3 and b.pending() == 7
    assert b.receive().data == 3  # the plain receive goes on from the cursor
    assert [m.data for m in b.receive_many()] == [4, 5, 6, 7, 8, 9]
    assert not entries(b) and b.pending() == 0
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        b.receive_many(limit=0)
    with pytest.raises(ReceiveTimeout):
        b.receive_many(timeout=0)


def test_a_filtered_receive_between_bulk_takes_takes_the_right_message() -> None:
    a, b = queued_run(12)
    assert [m.data for m in b.receive_many(limit=4)] == [0, 1, 2, 3]
    assert b.receive(source="node0", timeout=0).data == 4  # (its source heads the queue:
    assert isinstance(entries(b)[0], RunCursor)  # taken from the cursor, as receive() does)
    assert b.receive(order="id", timeout=0).data == 5  # (expands the rest of the run)
    assert not any(isinstance(frames, RunCursor) for frames in entries(b))
    assert [m.data for m in b.receive_many(limit=3)] == [6, 7, 8]
    assert [m.data for m in b.receive_many(source="node0")] == [9, 10, 11]
    b.flush()
    assert a.stats().unacked == 0 and b.stats().duplicates == 0 and b.stats().processed == 13


def test_acks_clear_the_outbox_for_what_was_taken_only() -> None:
    a, b = queued_run(100)
    b.flush()
    assert a.stats().unacked == 100
    assert len(b.receive_many(limit=30)) == 30
    b.flush()
    assert a.stats().unacked == 70 and a.stats().acked == 31  # "start" and 30 of the run
    drain(b, 70)
    b.flush()
    assert a.stats().unacked == 0 and a.stats().acked == a.stats().sent == 101
    assert b.stats().acks_sent >= 2


def test_a_bulk_take_goes_through_the_general_path_once_a_run_at_most() -> None:
    a, b, _ = world(acks=True)
    a.send("start", dest="node1")
    b.receive(timeout=0)
    calls = count_general_done(engine(b))
    for i in range(640):
        a.isend(i, dest="node1")
    a.flush()
    assert [m.data for m in drain(b, 640)] == list(range(640))
    assert len(calls) <= 10, calls  # (the last of each run's take, when its ack is due)
    b.flush()
    assert a.stats().unacked == 0 and b.stats().processed == 641


def test_a_checkpoint_mid_run_restores_without_loss_or_duplicate() -> None:
    _, b = queued_run(20)
    taken = b.receive_many(limit=7)
    assert isinstance(entries(b)[0], RunCursor)
    queued = capture(engine(b))["nodes"]["1"]
    kept = [decode(meta, frames, NAMES) for meta, frames in unpack_messages(queued["queue"])]
    assert [m.data for m in kept] == list(range(7, 20))
    assert [m.seq for m in kept] == list(range(8, 21))
    assert [m.id for m in kept] == list(range(taken[-1].id + 1, taken[-1].id + 14))
    assert [m.data for m in drain(b, 13)] == list(range(7, 20)) and b.pending() == 0


def test_other_messages_and_explicit_acks() -> None:
    configs = {"node1": QueueConfig(ack="explicit")}
    a, b = queued_run(5, configs=configs)
    a.send("after", dest="node1")
    got = b.receive_many()
    assert [m.data for m in got] == [0, 1, 2, 3, 4, "after"]
    b.flush()
    assert a.stats().unacked == 7  # nothing acked until each is ("start" is never)
    for message in got:
        message.ack()
    b.flush()
    assert a.stats().unacked == 1 and b.stats().processed == 6


def test_messages_after_a_run_come_in_the_same_call() -> None:
    a, b = queued_run(5)
    a.send({"not": "a run"}, dest="node1")  # sent alone, after the run
    for i in range(3):
        a.isend(i, dest="node1")
    a.flush()
    got = b.receive_many()
    assert [m.data for m in got] == [0, 1, 2, 3, 4, {"not": "a run"}, 0, 1, 2]
    assert [m.seq for m in got] == list(range(1, 10))


def test_a_message_that_does_not_decode_is_raised_by_the_next_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_here(name: str) -> type[Message]:
        raise DecodeError(f"class {name} cannot be imported here")

    monkeypatch.setattr("geode_mpi.codec.decoding.resolve", not_here)  # (as on another rank)
    a, b = queued_run(2)
    a.send(Stamped("lost", step=1), dest="node1")
    a.send("last", dest="node1")
    assert [m.data for m in b.receive_many()] == [0, 1]
    with pytest.raises(DecodeError):
        b.receive_many()
    assert [m.data for m in b.receive_many()] == ["last"]
    assert b.stats().dead_letters == 1 and b.stats().processed == 5


def test_subclass_runs_and_another_thread() -> None:
    a, b, _ = world(acks=True)
    a.send("start", dest="node1")
    b.receive(timeout=0)
    for i in range(100):
        a.isend(Stamped(i, step=i), dest="node1")
    a.flush()
    other = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    other.start()  # (receive_many then goes through the gate, as receive does)
    got = drain(b, 100, limit=30)
    assert [(m.data, m.step, type(m)) for m in got] == [(i, i, Stamped) for i in range(100)]
    b.flush()
    assert a.stats().unacked == 0


def test_async_messages_take_a_run_s_messages_one_at_a_time() -> None:
    """`messages()` takes each of a run's messages from its cursor, counted and acked as a
    receive of each; breaking out leaves the rest queued."""
    a, b = queued_run(100)
    cursor = entries(b)[0]
    calls = count_general_done(engine(b))

    async def first(count: int) -> list[Message]:
        got = []
        async for message in b.messages():
            got.append(message)
            if len(got) == count:
                break
        return got

    got = asyncio.run(first(30))
    assert [m.data for m in got] == list(range(30)) and [m.seq for m in got] == list(range(1, 31))
    assert entries(b)[0] is cursor and cursor.at == 30 and b.pending() == 70
    got += asyncio.run(first(70))
    assert [m.data for m in got] == list(range(100)) and b.pending() == 0
    assert b.stats().processed == 101 and len(calls) <= 3, calls
    b.flush()
    assert a.stats().unacked == 0


def test_bad_arguments_are_refused_before_anything_is_taken() -> None:
    _, b = queued_run(10)
    with pytest.raises(TypeError, match=r"limit must be an int >= 1, got 2\.5"):
        b.receive_many(limit=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit must be >= 1, got 0"):
        b.receive_many(limit=0)
    with pytest.raises(ValueError, match="timeout must be >= 0, got -1"):
        b.receive_many(timeout=-1)  # (a run is queued: refused all the same)
    assert [m.data for m in b.receive_many(limit=64, timeout=0)] == list(range(10))
    assert b.pending() == 0  # (the node still works: nothing was half-taken)


def test_a_postponed_decode_error_is_raised_for_its_own_node_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_here(name: str) -> type[Message]:
        raise DecodeError(f"class {name} cannot be imported here")

    monkeypatch.setattr("geode_mpi.codec.decoding.resolve", not_here)
    with Geode(["a", "b"]) as g:
        g.send("ok", source="b", dest="a")
        g.send(Stamped("bad", step=1), source="b", dest="a")
        g.send("for b", source="a", dest="b")
        assert [m.data for m in g.receive_many("a", timeout=0)] == ["ok"]
        assert [m.data for m in g.receive_many("b", timeout=0)] == ["for b"]
        with pytest.raises(DecodeError):
            g.receive_many("a", timeout=0)
        with pytest.raises(ReceiveTimeout):
            g.receive_many("a", timeout=0)  # (raised once)
