"""`Geode.isend_many`: a batch sent in one call, each item its own message (issue 17's rate)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
from test_runs import NAMES, engine, world

from geode_mpi import BatchHandle, Geode, Message, QueueConfig
from geode_mpi.codec import decode
from geode_mpi.codec.runs import count
from geode_mpi.delivery.runs import RUN_MAX
from geode_mpi.errors import ClosedError, DecodeError, EncodeError, QueueFull, UnknownNodeError
from geode_mpi.persistence.snapshot import capture, unpack_messages


class Tick(Message):
    """A subclass with only ``data``."""


def drain(geode: Geode, count: int) -> list[Message]:
    return [geode.receive(timeout=5) for _ in range(count)]


def test_each_item_is_its_own_message_in_order_joined_in_bulk() -> None:
    a, b, held = world()
    items = [f"t{i}" for i in range(300)]
    handle = a.isend_many(items, dest="node1")
    assert isinstance(handle, BatchHandle) and len(handle) == handle.count == 300
    a.flush()
    assert held.sealed and len(held.sealed) <= 300 // RUN_MAX + 2  # runs, not 300 messages
    got = drain(b, 300)
    assert [m.data for m in got] == items
    assert [m.seq for m in got] == list(range(300))
    assert len({m.id for m in got}) == 300
    assert {(m.source, m.dest) for m in got} == {("node0", "node1")}
    assert a.stats().sent == 300 and b.stats().received == 300
    handle.wait(timeout=5)
    assert handle.done()
    a.close()
    b.close()


def test_every_kind_of_item_keeps_its_place_and_value() -> None:
    a, b, _ = world()
    a.send("start", dest="node1")
    array = np.arange(5.0)
    big = "x" * 10_000  # too long for a run: sent alone, in its place
    items: list[Any] = [1, 2.5, None, b"b", "s", {"k": 1}, (1, "t"), [1], array, big, Tick("m")]
    items += [*range(200), Message("last")]
    handle = a.isend_many(iter(items), dest=1)  # (any iterable; a dest by index)
    assert handle.count == len(items)
    a.flush()
    got = drain(b, len(items) + 1)
    assert got[0].data == "start"
    values = [m.data for m in got[1:]]
    assert values[:8] == items[:8] and np.array_equal(values[8], array)
    assert values[9] == big and type(got[11]) is Tick and got[11].data == "m"
    assert values[11:-1] == list(range(200)) and values[-1] == "last"
    assert [m.seq for m in got] == list(range(len(items) + 1))
    handle.wait(timeout=5)


def test_acks_come_back_for_every_message_and_the_outbox_empties() -> None:
    a, b, _ = world(acks=True)
    handle = a.isend_many(range(1000), dest="node1")
    a.flush()
    handle.wait(timeout=5)
    got: list[Message] = []
    while len(got) < 1000:
        got += b.receive_many(limit=1000, timeout=5)
    assert [m.data for m in got] == list(range(1000))
    b.flush()  # (its ack records go now)
    for _ in range(100):
        a.pending()
        if a.stats().acked == 1000:
            break
    assert (a.stats().sent, a.stats().acked, a.stats().unacked) == (1000, 1000, 0)


def test_an_unknown_or_missing_dest_is_named_even_for_no_items() -> None:
    a, _, _ = world()
    with pytest.raises(UnknownNodeError, match="unknown dest 'node9'"):
        a.isend_many([], dest="node9")
    with pytest.raises(UnknownNodeError, match="unknown dest 'node9'"):
        a.isend_many(["x"], dest="node9")
    with pytest.raises(TypeError, match="needs a dest"):
        a.isend_many(["x"])
    assert a.isend_many([], dest="node1").done()
    assert a.stats().sent == 0


def test_a_closed_geode_refuses() -> None:
    a, _, _ = world()
    a.close()
    with pytest.raises(ClosedError, match="isend_many") as raised:
        a.isend_many(["x"], dest="node1")
    assert raised.value.sent == 0  # (items[error.sent:] were not sent: all of them)


def test_an_item_that_does_not_encode_names_itself_and_what_was_sent() -> None:
    a, b, _ = world()
    items: list[Any] = ["a", "b", "c", lambda: 0, "d"]
    with pytest.raises(
        EncodeError, match=r"item 3 of 5 \(function\).*items 0\.\.2 were sent"
    ) as err:
        a.isend_many(items, dest="node1")
    assert err.value.sent == 3
    a.flush()
    assert [m.data for m in drain(b, 3)] == ["a", "b", "c"]
    assert b.try_receive() is None
    a.isend_many(items[4:], dest="node1")  # the rest, sent again
    a.flush()
    assert b.receive(timeout=5).data == "d"


def test_a_full_raise_queue_stops_the_batch_where_it_is_full() -> None:
    configs = {"node1": QueueConfig(capacity=10, policy="raise", window=10)}
    a, b, _ = world(configs=configs)
    with pytest.raises(QueueFull, match="item 10 of 25") as err:
        a.isend_many(range(25), dest="node1")
    assert err.value.sent == 10
    a.flush()
    assert [m.data for m in drain(b, 10)] == list(range(10))
    assert b.try_receive() is None


def test_a_full_block_queue_in_one_process_says_so_with_what_was_sent() -> None:
    # (nothing can take from the queue while the sender waits here: the MPI test waits)
    configs = {"node1": QueueConfig(capacity=8, policy="block", window=8)}
    a, b, _ = world(configs=configs)
    with pytest.raises(QueueFull, match="item 8 of 20") as err:
        a.isend_many(range(20), dest="node1", timeout=0.05)
    assert err.value.sent == 8 and "nothing was sent" not in str(err.value)
    a.flush()
    assert [m.data for m in drain(b, 8)] == list(range(8))
    a.isend_many(range(8, 16), dest="node1")  # room again once b took them (and acked)
    a.flush()
    assert [m.data for m in drain(b, 8)] == list(range(8, 16))


def test_threads_each_send_a_whole_batch_in_order() -> None:
    a, b, _ = world()
    a.send("start", dest="node1")
    handles: list[BatchHandle] = []

    def send(tag: str) -> None:
        handles.append(a.isend_many([f"{tag}{i}" for i in range(500)], dest="node1"))

    threads = [threading.Thread(target=send, args=(tag,)) for tag in "xy"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    a.flush()
    got = [m.data for m in drain(b, 1001)][1:]
    for tag in "xy":
        assert [d for d in got if d[0] == tag] == [f"{tag}{i}" for i in range(500)]
    assert len(handles) == 2 and sum(map(len, handles)) == 1000
    assert a.stats().sent == 1001


def test_the_handle_waits_and_is_awaitable() -> None:
    a, b, _ = world()
    handle = a.isend_many(["x"] * 100, dest="node1")
    assert "100 message(s)" in repr(handle)
    assert asyncio.run(handle.wait_async(timeout=5)) is handle
    assert handle.done() and "done" in repr(handle)
    assert len(drain(b, 100)) == 100


def test_a_drop_oldest_queue_keeps_the_newest_of_a_batch() -> None:
    configs = {"node1": QueueConfig(capacity=3, policy="drop_oldest")}
    a, b, _ = world(configs=configs)
    a.isend_many(range(100), dest="node1")
    a.flush()
    assert [b.receive(timeout=0).data for _ in range(3)] == [97, 98, 99]
    assert b.stats().dropped == 97
    b.flush()
    assert a.stats().unacked == 0


def test_a_checkpoint_keeps_a_batch_in_flight_message_by_message() -> None:
    a, b, _ = world()
    a.isend_many([f"m{i}" for i in range(150)], dest="node1")
    a.flush()
    assert [m.data for m in b.receive_many(limit=10, timeout=5)] == [f"m{i}" for i in range(10)]
    b.flush()  # acks 0..9: the first run is cut
    outbox = capture(engine(a))
    kept = [decode(meta, frames, NAMES) for meta, frames in unpack_messages(outbox["outbox"])]
    kept.sort(key=lambda m: m.seq)  # (a cut run's remainder is kept after the others)
    assert [m.data for m in kept] == [f"m{i}" for i in range(10, 150)]
    assert [m.seq for m in kept] == list(range(10, 150))
    queued = capture(engine(b))["nodes"]["1"]
    waiting = [decode(meta, frames, NAMES) for meta, frames in unpack_messages(queued["queue"])]
    assert [m.data for m in waiting] == [f"m{i}" for i in range(10, 150)]


def test_dicts_are_copied_and_tuples_checked_as_they_join() -> None:
    a, b, held = world()
    dicts = [{"i": i, "v": 0.5} for i in range(100)]
    tuples: list[Any] = [(i, "t") for i in range(100)]
    tuples[50] = (50, [1, 2])  # (a list inside: not a run's, sent on its own path)
    a.isend_many(dicts, dest="node1")
    for entry in dicts:
        entry["i"] = -1  # changed after the send: what was sent is not
    a.isend_many(tuples, dest="node1")
    a.flush()
    assert len(held.sealed) <= 6  # (runs of 64 at most, and the one sent alone between)
    got = [m.data for m in drain(b, 200)]
    assert got[:100] == [{"i": i, "v": 0.5} for i in range(100)]
    assert got[100:] == tuples


def test_an_error_of_a_poll_between_slices_says_how_many_were_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, _ = world()
    a.send("start", dest="node1")
    runtime = a._runtime  # (a damaged arrival met by the poll a batch makes as it passes 128)

    def poll(before: int, after: int) -> None:
        raise DecodeError("a damaged arrival")

    monkeypatch.setattr(runtime, "joined_many", poll)
    with pytest.raises(DecodeError, match=r"after item 63 of 300 was sent.*items 0\.\.63") as err:
        a.isend_many(range(300), dest="node1")
    assert err.value.sent == 64
    monkeypatch.undo()
    a.flush()
    assert [m.data for m in drain(b, 65)][1:] == list(range(64))
    assert b.try_receive() is None


def test_an_error_of_the_poll_after_an_item_counts_that_item_as_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, _ = world()
    a.send("start", dest="node1")

    def poll() -> bool:
        raise DecodeError("a damaged arrival")

    monkeypatch.setattr(a._runtime.engine, "poll", poll)  # (every 32nd send polls)
    items = [np.full(2, i) for i in range(100)]  # (each sent alone, by send_plain)
    with pytest.raises(DecodeError, match="after item 30 of 100 was sent") as err:
        a.isend_many(items, dest="node1")
    assert err.value.sent == 31
    monkeypatch.undo()
    a.flush()
    got = [m.data for m in drain(b, 32)][1:]
    assert [int(x[0]) for x in got] == list(range(31))
    assert b.try_receive() is None


def test_messages_holding_only_data_join_by_the_slice_and_others_one_by_one() -> None:
    a, b, held = world()
    plain = [Message(f"m{i}") for i in range(128)]
    ticks: list[Any] = [Tick(i) for i in range(64)]
    mixed: list[Any] = [Message(i) for i in range(10)]
    mixed[5] = Message(5, headers={"h": 1})  # (headers: not a run's, sent on its own)
    mixed[6].step = 6  # (an attribute of its own: not this run's)
    for batch in (plain, ticks, mixed):
        a.isend_many(batch, dest="node1")
    a.flush()
    assert len(held.sealed) <= 8
    got = drain(b, 202)
    assert [m.data for m in got[:128]] == [f"m{i}" for i in range(128)]
    assert len({m.timestamp for m in got[:128]}) <= 8  # (slices joined whole: one stamp each)
    assert [type(m) for m in got[128:192]] == [Tick] * 64
    assert [m.data for m in got[128:192]] == list(range(64))
    assert [m.data for m in got[192:]] == list(range(10))
    assert got[197].headers == {"h": 1} and got[198].step == 6
    assert [m.seq for m in got] == list(range(202))


def test_large_data_inside_a_slice_goes_on_its_own_and_the_rest_in_runs() -> None:
    """A slice of one kind of value joins whole only if each value is small: one tuple with a
    1 MB text among tuples (of one length or several, with one type in each place or not),
    a dict with a large bytes value among dicts, a huge int among ints, arrive intact and
    in place, sent on their own; their neighbours still go in runs."""
    a, b, held = world()
    a.send("start", dest="node1")
    batches: list[list[Any]] = [
        [(i, "t") for i in range(100)],
        [{"i": i, "v": b"b"} for i in range(100)],
        list(range(100)),
        [(i, 0.5) for i in range(100)],
        [{i: "k"} for i in range(100)],
        [(i,) if i % 2 else (i, "t") for i in range(100)],  # (of several lengths)
        [(i if i % 2 else f"{i}", 0.5) for i in range(100)],  # (of several types in place)
    ]
    batches[0][30] = (30, "x" * 1_000_000)
    batches[1][60] = {"i": 60, "v": b"y" * 1_000_000}
    batches[2][10] = 1 << 100_000
    batches[3][90] = (90, -(1 << 100_000))
    batches[4][0] = {1 << 100_000: "k"}
    batches[5][70] = (70, "x" * 1_000_000)
    batches[6][20] = (b"y" * 1_000_000, 0.5)
    batches[6][21] = (1 << 100_000, 0.5)
    for batch in batches:
        a.isend_many(batch, dest="node1")
    a.flush()
    got = [m.data for m in drain(b, 701)][1:]
    assert got == [item for batch in batches for item in batch]
    assert max(map(len, held.sealed)) < 16 * 1024  # no run carried a large item
    assert sum(map(count, held.sealed)) == 692  # every other item in a run
