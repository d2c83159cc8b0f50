"""A run queued as one entry with a cursor: taken message by message, expanded when needed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from general_path import count_general_done
from test_runs import NAMES, engine, world

from geode_mpi import (
    Geode,
    Message,
    NodeNotLocalError,
    QueueConfig,
    ReceiveTimeout,
    UnknownNodeError,
)
from geode_mpi.codec import decode, encode, make_stamp
from geode_mpi.delivery.run_cursor import RunCursor
from geode_mpi.persistence.snapshot import capture, unpack_messages
from geode_mpi.queues import NEVER, Bundle, Inbox, Parcel
from geode_mpi.queues.bundles import add_bundle


def queued_run(count: int, acks: bool = True, **kwargs: Any) -> tuple[Geode, Geode]:
    """Two Geodes; node1's queue holds "start" taken, then one run of ``count`` ints."""
    a, b, _ = world(acks=acks, **kwargs)
    a.send("start", dest="node1")
    assert b.receive(timeout=0).data == "start"
    for i in range(count):
        a.isend(i, dest="node1")
    a.flush()
    return a, b


def entries(geode: Geode) -> list[Any]:
    """What node1's queue holds, entry by entry (a run whole: its cursor)."""
    return [parcel.frames for parcel in engine(geode).inboxes[1].waiting]


def test_a_run_waits_as_one_entry_and_is_taken_from_its_cursor() -> None:
    _, b = queued_run(10)
    (cursor,) = entries(b)
    assert isinstance(cursor, RunCursor) and (cursor.at, cursor.end) == (0, 10)
    assert b.pending() == 10 and b.stats().queue_depth == 10 and b.stats().queue_peak == 10
    first = [b.receive() for _ in range(4)]  # the fast path: taken from the cursor
    assert entries(b) == [cursor] and cursor.at == 4 and b.pending() == 6
    rest = [b.receive(timeout=0) for _ in range(6)]
    assert not entries(b) and b.pending() == 0
    got = first + rest
    assert [m.data for m in got] == list(range(10)) and [m.seq for m in got] == list(range(1, 11))
    assert len({m.id for m in got}) == 10 and {(m.source, m.dest) for m in got} == {tuple(NAMES)}
    assert all(type(m) is Message for m in got)
    assert b.stats().received == 11 and b.stats().processed == 11


def test_the_ack_covers_only_what_was_taken() -> None:
    a, b = queued_run(10)
    b.flush()
    assert a.stats().unacked == 10  # queued is not delivered: nothing of the run is acked
    for _ in range(3):
        b.receive()
    assert isinstance(entries(b)[0], RunCursor)
    b.flush()
    assert a.stats().unacked == 7 and a.stats().acked == 4  # "start" and three of the run
    for _ in range(7):
        b.receive()
    b.flush()
    assert a.stats().unacked == 0 and a.stats().acked == 11


def test_a_filter_expands_a_partly_taken_run_in_order() -> None:
    a, b = queued_run(8)
    assert [b.receive().data for _ in range(2)] == [0, 1]
    assert isinstance(entries(b)[0], RunCursor)
    assert b.receive(order="id", timeout=0).data == 2  # a take the cursor cannot serve
    assert not any(isinstance(frames, Bundle) for frames in entries(b))
    assert len(entries(b)) == 5 and b.pending() == 5
    assert b.receive(source="node0", timeout=0).data == 3
    assert [b.receive().data for _ in range(4)] == [4, 5, 6, 7]
    b.flush()
    assert a.stats().unacked == 0 and b.stats().duplicates == 0


def test_a_checkpoint_keeps_the_untaken_part_of_a_run_message_by_message() -> None:
    _, b = queued_run(8)
    taken = [b.receive() for _ in range(3)]
    assert isinstance(entries(b)[0], RunCursor)
    queued = capture(engine(b))["nodes"]["1"]
    kept = unpack_messages(queued["queue"])
    got = [decode(meta, frames, NAMES) for meta, frames in kept]
    assert [m.data for m in got] == [3, 4, 5, 6, 7] and [m.seq for m in got] == [4, 5, 6, 7, 8]
    ids = [m.id for m in got]
    assert ids == list(range(taken[-1].id + 1, taken[-1].id + 6))
    # Each kept byte for byte as if it had been sent alone.
    for (meta, _), m in zip(kept, got, strict=True):
        alone = make_stamp(m.id, m.seq, m.timestamp, 0, 1)
        assert bytes(meta) == encode(Message(m.data), alone, 2)[0]
    assert [b.receive().data for _ in range(5)] == [3, 4, 5, 6, 7] and b.pending() == 0


def test_a_failing_handler_dead_letters_each_message_of_a_run_alone() -> None:
    configs = {"node1": QueueConfig(max_attempts=2, retry_delay=0.0)}
    a, b = queued_run(6, configs=configs)
    assert isinstance(entries(b)[0], RunCursor)
    seen: list[int] = []

    @b.on(Message, node="node1")
    def handle(message: Message) -> None:
        seen.append(message.data)
        if message.data % 3 == 1:
            raise ValueError(f"no {message.data}")

    b.run("node1", count=6 + 2, timeout=5)  # six messages, two of them tried twice
    assert seen == [0, 1, 1, 2, 3, 4, 4, 5]
    dead = b.dead_letters("node1")
    assert [d.message.data for d in dead if d.message is not None] == [1, 4]
    assert [d.seq for d in dead] == [2, 5] and all(d.attempts == 2 for d in dead)
    assert b.pending() == 0 and not entries(b)
    b.flush()
    assert a.stats().unacked == 0


def test_a_run_is_not_queued_whole_where_messages_are_dropped() -> None:
    configs = {"node1": QueueConfig(capacity=3, policy="drop_oldest")}
    _, b = queued_run(10, configs=configs)
    assert not any(isinstance(frames, Bundle) for frames in entries(b))
    assert [b.receive(timeout=0).data for _ in range(3)] == [7, 8, 9]


class Numbers(Bundle):
    """A bundle of messages numbered ``seq + at`` from source 5."""

    __slots__ = ()

    def parcel(self, at: int) -> Parcel:
        return Parcel(5, at, 0, -1, memoryview(b""), (), 1, 0, 0, NEVER)


def alone(seq: int, source: int = 7) -> Parcel:
    return Parcel(source, seq, 0, -1, memoryview(b""), (), 1, 0, 0, NEVER)


def test_an_inbox_counts_a_bundle_s_messages_and_drops_the_oldest_of_them() -> None:
    inbox = Inbox(capacity=6, drop_oldest=True)
    inbox.push(alone(0))
    bundle = Numbers(0, 4)
    add_bundle(inbox, alone(0)._replace(frames=bundle))
    assert len(inbox) == 5 and len(inbox.waiting) == 2 and inbox.peak == 5
    assert inbox.pop() == alone(0) and inbox.pop() == alone(0, 5)  # the bundle's first
    assert len(inbox) == 3 and inbox.waiting[0].frames is bundle
    for seq in (1, 2, 3):
        assert inbox.push(alone(seq)) is None
    dropped = inbox.push(alone(4))  # seven messages for six places: the bundle's oldest goes
    assert dropped == alone(1, 5)
    assert [(p.source, p.seq) for p in inbox] == [(5, 2), (5, 3), (7, 1), (7, 2), (7, 3), (7, 4)]
    assert len(inbox) == 6 and not inbox.bundles and not inbox.extra


def test_a_retried_parcel_goes_before_the_rest_of_its_bundle() -> None:
    inbox = Inbox()
    add_bundle(inbox, alone(0)._replace(frames=Numbers(0, 5)))
    taken = inbox.pop()
    assert taken is not None and taken.seq == 0
    inbox.put_back(taken, -math.inf)  # due at once
    assert [p.seq for p in iter(lambda: inbox.pop(), None)] == [0, 1, 2, 3, 4]


def test_messages_after_a_run_keep_their_place() -> None:
    a, b, _ = world()
    a.send("start", dest="node1")
    for i in range(5):
        a.isend(i, dest="node1")
    a.send(np.arange(3), dest="node1")  # not batched: the run goes before it
    b.receive(timeout=0)
    first, *others = entries(b)
    assert isinstance(first, RunCursor) and len(others) == 1
    assert [b.receive().data for _ in range(5)] == list(range(5))
    assert np.array_equal(b.receive().data, np.arange(3))


@pytest.mark.parametrize("acks", [False, True])
def test_a_run_s_messages_are_counted_processed_without_the_general_path(acks: bool) -> None:
    """With acks off as on, the take from a run counts each message processed itself: the
    general path (`Engine._done`, and a parcel built for it) only once an ack is due or goes."""
    a, b, _ = world(acks=acks)
    a.send("start", dest="node1")
    b.receive(timeout=0)
    eng = engine(b)
    calls = count_general_done(eng)
    for i in range(300):
        a.isend(i, dest="node1")
    a.flush()
    assert [b.receive().data for _ in range(300)] == list(range(300))
    assert b.stats().processed == 301
    # With acks: once after each ack record went (every 128, or on a poll's timer: every 16th
    # receive polls, and under load 1 ms passes between two); without: never.
    assert len(calls) <= (300 // 16 + 300 // 128 + 1 if acks else 0), calls
    b.flush()
    assert a.stats().unacked == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        *({"timeout": 5}, {"timeout": 2.5}, {"timeout": 1e-9}),
        *({"node": "node1"}, {"node": 1}, {"node": "node1", "timeout": 5}),
        *({"source": "node0"}, {"source": 0, "timeout": 5}, {"node": 1, "source": "node0"}),
    ],
)
def test_a_receive_with_a_timeout_its_own_node_or_a_source_takes_from_the_cursor(
    kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer loop that passes a timeout (as the docs advise), names its own node, or
    filters by the source of the oldest queued message takes a queued run's messages by
    `receive()`'s fast case too: each once went through the general take for every message
    (a third of the rate of `receive()` over MPI)."""
    _, b = queued_run(10)
    (cursor,) = entries(b)
    general = []
    runtime = b._runtime  # (what the test watches: the general take, unused)
    monkeypatch.setattr(runtime, "take", lambda *args: general.append(args))
    got = [b.receive(**kwargs) for _ in range(4)]
    assert [m.data for m in got] == [0, 1, 2, 3] and not general
    assert entries(b) == [cursor] and cursor.at == 4 and b.pending() == 6
    assert [b.receive(**kwargs).data for _ in range(6)] == [4, 5, 6, 7, 8, 9]
    assert not general and not entries(b)


def test_a_receive_naming_another_node_or_a_bool_is_not_taken_as_its_own() -> None:
    _, b = queued_run(3)
    with pytest.raises(NodeNotLocalError):
        b.receive("node0", timeout=0)
    with pytest.raises(UnknownNodeError, match="unknown node True"):  # (not node1: 1 == True)
        b.receive(True, timeout=0)
    with pytest.raises(ReceiveTimeout):
        b.receive(source="node1", timeout=0)  # (nothing from node1: the queue untouched)
    with pytest.raises(UnknownNodeError, match="unknown source 'node7'"):
        b.receive(source="node7", timeout=0)
    assert b.pending() == 3 and [b.receive(node=1).data for _ in range(3)] == [0, 1, 2]
