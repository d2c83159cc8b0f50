"""The join of a run from `Geode.isend` (`OpenRun.join`, `RunHandle`): every message keeps the
id, seq, handle, stats and acks a message sent alone has (issue 17's message rate)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from test_runs import NAMES, engine, world

from geode_mpi import Message, SendHandle
from geode_mpi.codec import encode, make_stamp
from geode_mpi.codec.runs import STATES, Run, count, encode_run, joinable
from geode_mpi.core import facade_sending
from geode_mpi.core.handles_run import RunHandle
from geode_mpi.delivery.runs import RUN_MAX
from geode_mpi.errors import AckTimeout, DecodeError


class Tick(Message):
    """A subclass with only ``data`` (joins a run of its own class)."""


class Stamped(Message):
    """A subclass with an attribute of its own: its runs carry each message's attributes."""

    def __init__(self, data: Any, step: int) -> None:
        super().__init__(data)
        self.step = step


def test_joined_messages_have_their_own_id_seq_and_handle() -> None:
    a, b, held = world()
    a.send("start", dest="node1")  # the route's first send
    sent: list[Any] = ["s", 3, 2.5, None, b"b", (1, "t"), [1, 2], {"k": 1}, Message("m")]
    handles = [a.isend(data, dest="node1") for data in sent]
    assert len(held.held[1]) == 1  # one run: every one of them joined it
    assert all(type(h) is RunHandle and isinstance(h, SendHandle) for h in handles)
    assert [h.seq for h in handles] == list(range(1, 10))
    first = handles[0].id
    assert first is not None and [h.id for h in handles] == list(range(first, first + 9))
    assert {(h.source, h.dest, h.local, h.ack) for h in handles} == {
        ("node0", "node1", True, False)
    }
    assert repr(handles[3]) == f"<SendHandle id={first + 3} node0->node1 seq=4 in flight>"
    assert a.stats().sent == 10
    a.flush()
    got = [b.receive(timeout=0) for _ in range(10)]
    assert [m.data for m in got] == [
        "start",
        "s",
        3,
        2.5,
        None,
        b"b",
        (1, "t"),
        [1, 2],
        {"k": 1},
        "m",
    ]
    assert [(m.id, m.seq) for m in got[1:]] == [(h.id, h.seq) for h in handles]
    assert all(type(m) is Message for m in got)


def test_a_run_handle_is_done_once_its_batch_went_and_acked_once_processed() -> None:
    a, b, _ = world()
    a.send("start", dest="node1")
    handles = [a.isend(f"m{i}", dest="node1") for i in range(5)]
    assert not any(h.done() or h.complete() or h.acked for h in handles)  # held in the batch
    a.flush()
    handles[2].wait(timeout=1)
    assert all(h.done() and h.complete() for h in handles)
    pair = engine(a).pairs_out[(0, 1)]
    assert pair.unacked() == 6 and not any(h.acked for h in handles)
    for _ in range(4):
        b.receive(timeout=0)
    b.flush()  # acks the first send and three of the run: the run's entry is cut
    assert [h.acked for h in handles] == [True, True, True, False, False]
    assert repr(handles[0]).endswith("acked>") and repr(handles[4]).endswith("done>")
    b.receive(timeout=0)
    b.receive(timeout=0)
    b.flush()
    assert all(h.acked for h in handles) and not pair.outbox
    assert a.stats().acked == 6 and a.stats().unacked == 0


def test_without_acks_a_run_handle_has_no_ack_to_wait_for() -> None:
    a, b, _ = world(acks=False)
    a.send("start", dest="node1")
    handle = a.isend("m", dest="node1")
    a.flush()
    handle.wait(timeout=1)
    assert handle.done() and not handle.acked  # (untracked, as a message sent alone)
    assert [b.receive(timeout=0).data for _ in range(2)] == ["start", "m"]
    assert not engine(a).pairs_out[(0, 1)].outbox


def test_a_dict_run_arrives_as_equal_dicts_copied_at_isend() -> None:
    a, b, held = world()
    a.send("start", dest="node1")
    record: dict[str, Any] = {"step": 0, "value": 0.5, "label": "x"}
    for step in range(RUN_MAX + 5):
        record["step"] = step
        a.isend(record, dest="node1")  # changed after each isend: each arrives as it was
    a.flush()
    assert [count(meta) for meta in held.sealed] == [RUN_MAX, 5]
    assert b.receive(timeout=0).data == "start"
    got = [b.receive(timeout=0).data for _ in range(RUN_MAX + 5)]
    assert got == [{"step": step, "value": 0.5, "label": "x"} for step in range(RUN_MAX + 5)]


def test_a_full_run_goes_at_once() -> None:
    a, b, held = world()
    a.send("start", dest="node1")
    handles = [a.isend(i, dest="node1") for i in range(RUN_MAX)]
    assert [count(meta) for meta in held.sealed] == [RUN_MAX]  # no flush needed
    assert all(h.done() for h in handles)
    extra = a.isend("next", dest="node1")  # opens the next run
    assert not extra.done() and extra.seq == RUN_MAX + 1
    a.flush()
    assert [b.receive(timeout=0).data for _ in range(RUN_MAX + 2)] == [
        "start",
        *range(RUN_MAX),
        "next",
    ]


@pytest.mark.parametrize("acks", [False, True])
def test_what_cannot_join_goes_alone_in_order(acks: bool) -> None:
    a, b, _ = world(acks=acks)
    a.send("start", dest="node1")
    sent: list[Any] = [
        Tick("t0"),  # opens a run of Tick
        Tick("t1"),  # joins it
        "bare",  # cannot join a run of Tick: opens a run of Message
        "bare again",  # joins that one
        Stamped("s", 4),  # an attribute of its own: a run of its attributes
        Message("h", headers={"k": 1}),  # headers: alone
        "x" * 5000,  # too long: alone
        {"nested": [1]},  # not flat: alone
        Tick("t2"),  # opens a new run (what went alone went after the last one)
    ]
    handles = [a.isend(item, dest="node1") for item in sent]
    assert [type(h) is RunHandle for h in handles] == [True] * 5 + [False] * 3 + [True]
    assert [h.seq for h in handles] == list(range(1, 10))
    a.flush()
    got = [b.receive(timeout=0) for _ in range(10)][1:]
    assert [type(m).__name__ for m in got] == ["Tick"] * 2 + ["Message"] * 2 + [
        "Stamped",
        "Message",
        "Message",
        "Message",
        "Tick",
    ]
    assert [m.seq for m in got] == list(range(1, 10))
    assert [m.data for m in got[:4]] == ["t0", "t1", "bare", "bare again"]
    assert got[4].step == 4 and got[5].headers == {"k": 1} and got[6].data == "x" * 5000
    assert got[7].data == {"nested": [1]} and got[8].data == "t2"
    assert a.stats().sent == 10 and b.stats().received == 10
    b.flush()
    assert not engine(a).pairs_out[(0, 1)].outbox


def test_a_dict_joins_only_with_atomic_keys_and_values() -> None:
    assert joinable({"a": 1, 2: "b", None: 2.5}) and not joinable({(1, 2): 3})
    a, b, _ = world()
    a.send("start", dest="node1")
    handles = [
        a.isend(data, dest="node1") for data in ({"a": 1}, {"b": 2}, {(1, 2): 3}, {"c": [1]})
    ]
    assert [type(h) is RunHandle for h in handles] == [True, True, False, False]
    a.flush()
    got = [b.receive(timeout=0).data for _ in range(5)]
    assert got == ["start", {"a": 1}, {"b": 2}, {(1, 2): 3}, {"c": [1]}]


def test_a_run_handle_s_done_moves_its_own_send_on_not_a_poll() -> None:
    """A loop that checks a handle per message checks the same batch's many times: every 64th
    unfinished check sends the due batches (held) or tests that send (in flight), and polls
    only on every 1024th."""
    a, _, held = world()
    calls: list[str] = []
    path = engine(a).path
    path.flush_due = lambda: calls.append("flush_due") or False
    path.finish_send = lambda ticket: calls.append("finish_send")
    engine(a).poll = lambda: calls.append("poll") or False  # type: ignore[method-assign]
    a.send("start", dest="node1")
    handle = a.isend("m", dest="node1")
    a._runtime.unfinished_checks = 0
    for _ in range(128):
        assert not handle.done()
    assert calls == ["flush_due", "flush_due"]
    held.tickets[-1].held = False  # its batch went, its send not complete yet
    calls.clear()
    for _ in range(1024):
        assert not handle.done()
    # (the checks count on from 128: the 1024th of all is the 14th of these)
    assert calls == ["finish_send"] * 13 + ["poll"] + ["finish_send"] * 2


def test_a_subclass_with_attributes_joins_a_run_of_its_attributes() -> None:
    a, b, held = world()
    a.send("start", dest="node1")
    handles = [a.isend(Stamped({"v": i}, i), dest="node1") for i in range(5)]
    received = Stamped("again", 9)
    received.id = 3  # as a received message has: it goes alone
    handles.append(a.isend(received, dest="node1"))
    handles.append(a.isend(Stamped([np.zeros(2)], 1), dest="node1"))  # an array: alone
    assert [type(h) is RunHandle for h in handles] == [True] * 5 + [False] * 2
    a.flush()
    assert count(held.sealed[0]) == 5
    run = Run(held.sealed[0], NAMES)
    assert (
        run.states
        and run.single(2)
        == encode(Stamped({"v": 2}, 2), make_stamp(handles[2].id, 3, run.stamps[2], 0, 1), 2)[0]
    )
    got = [b.receive(timeout=0) for _ in range(8)][1:]
    assert all(type(m) is Stamped for m in got)
    assert [(m.data, m.step, m.seq) for m in got[:5]] == [({"v": i}, i, i + 1) for i in range(5)]
    assert [m.id for m in got[:6]] == [h.id for h in handles[:6]]
    assert (got[5].data, got[5].step) == ("again", 9) and got[6].step == 1
    b.flush()
    assert not engine(a).pairs_out[(0, 1)].outbox and a.stats().unacked == 0


def test_a_run_s_route_byte_says_data_or_attributes() -> None:
    meta = bytearray(encode_run(b"", 0, 0, 0, 0, 1, ["x"], [1.0]))
    meta[3] = 7
    with pytest.raises(DecodeError, match="route byte 7"):
        Run(meta, NAMES)
    meta[3] = STATES  # the data is not a dict of attributes
    with pytest.raises(DecodeError, match="not dicts"):
        Run(meta, NAMES)


def test_long_bytes_and_nested_tuples_go_alone() -> None:
    a, b, _ = world()
    a.send("start", dest="node1")
    sent: list[Any] = [b"x", b"y" * 5000, (1, 2), (1, (2,)), 7, 2.5, True, None, 1j]
    handles = [a.isend(data, dest="node1") for data in sent]
    assert [type(h) is RunHandle for h in handles] == [True, False, True, False] + [True] * 5
    a.flush()
    assert [b.receive(timeout=0).data for _ in range(10)] == ["start", *sent]


def test_isend_s_lane_joins_without_send_plain_and_a_thread_falls_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, _ = world()
    runtime = a._runtime
    a.send("start", dest="node1")  # the route's first send: the dest gets its lane
    a.isend("opens", dest="node1")  # (opens the run, through `send_plain`)
    plain: list[Any] = []
    general = runtime.send_plain
    monkeypatch.setattr(
        runtime, "send_plain", lambda *args: plain.append(args[0]) or general(*args)
    )
    threads = [0]  # (other tests' threads may still be alive: what isend sees is set here)
    monkeypatch.setattr(facade_sending, "other_threads", lambda: threads[0])
    handles = [a.isend(data, dest="node1") for data in ("s", 7, Message("m"), {"k": 1})]
    assert plain == []  # the lane's join: no `send_plain`
    assert all(type(h) is RunHandle for h in handles)
    assert [h.seq for h in handles] == [2, 3, 4, 5]
    first = handles[0].id
    assert first is not None and [h.id for h in handles] == list(range(first, first + 4))
    assert a.stats().sent == 6
    threads[0] = 1
    alive = a.isend("x", dest="node1")  # another thread alive: through the gate
    assert plain == ["x"] and alive.seq == 6 and a.stats().sent == 7
    a.flush()
    handles[0].wait(timeout=1)
    assert [b.receive(timeout=0).data for _ in range(7)] == [
        "start", "opens", "s", 7, "m", {"k": 1}, "x"
    ]  # fmt: skip
    b.flush()
    assert all(h.done() and h.acked for h in [*handles, alive])
    assert a.stats().acked == 7 and a.stats().unacked == 0


def test_wait_on_a_sent_handle_returns_at_once_and_a_held_one_still_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``wait()`` on a handle whose send is done (no ack asked) returns without a wait loop
    (a loop that waits on every handle it keeps); one still held waits in it, a bad timeout
    is still refused, and ``ack=True`` still waits for the ack."""
    a, b, held = world()
    a.send("start", dest="node1")
    handles = [a.isend(f"m{i}", dest="node1") for i in range(3)]
    runtime = a._runtime
    loops: list[float | None] = []

    def wait_loop(done: Any, deadline: float | None, call: str | None = None) -> bool:
        loops.append(deadline)
        return True

    monkeypatch.setattr(runtime, "wait_until", wait_loop)
    handles[0].wait()  # held: into the wait loop
    assert loops == [None] and not handles[0].done()
    a.flush()
    assert all(h.done() for h in handles) and len(held.sealed) == 1
    for handle in handles:
        handle.wait()
        handle.wait(timeout=0)
    assert loops == [None]  # done: none of them waited
    with pytest.raises(ValueError, match="timeout must be >= 0, got -1"):
        handles[1].wait(timeout=-1)
    with pytest.raises(TypeError, match="timeout must be a number"):
        handles[1].wait(timeout="1")  # type: ignore[arg-type]
    monkeypatch.undo()
    asked = a.isend("acked", dest="node1", ack=True)
    assert asked.ack and not asked.done()
    with pytest.raises(AckTimeout):
        asked.wait(timeout=0)  # sent, not acknowledged: still waits (here: cannot)
    assert [b.receive(timeout=0).data for _ in range(5)] == ["start", "m0", "m1", "m2", "acked"]
    b.flush()
    asked.wait(timeout=1)
    assert asked.acked


def test_a_stream_of_runs_is_acked_once_per_ack_batch_and_whole_at_a_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Round 36: one ack record per ACK_BATCH (512) processed messages, 8 full runs, not one per
    # two runs (128): 577 messages taken make exactly one record at once, the rest wait for
    # the flush (a wait, ACK_DELAY, a checkpoint's drain), which acks every one of them.
    monkeypatch.setattr("geode_mpi.delivery.polling.ACK_DELAY", 1e9)  # only the batch counts
    a, b, _ = world()
    a.send("start", dest="node1")
    total = 1 + 9 * RUN_MAX
    handles = [a.isend(i, dest="node1") for i in range(total - 1)]
    a.flush()
    assert [b.receive(timeout=0).data for _ in range(total)] == ["start", *range(total - 1)]
    assert engine(b).stats[1].acks_sent == 1  # (4 with a batch of 128; `stats()` flushes)
    assert a.stats().unacked == total - 512
    assert sum(h.acked for h in handles) == 512 - 1
    b.flush()
    assert engine(b).stats[1].acks_sent == 2
    assert a.stats().unacked == 0 and all(h.acked for h in handles)
    assert not engine(a).pairs_out[(0, 1)].outbox


def four_runs_queued(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[int]]:
    """node1's Geode with four full runs queued (ints 0 on), and the list each of its polls
    after a take appends to (the polls themselves are not made)."""
    a, b, _ = world()
    a.send("start", dest="node1")
    assert b.receive(timeout=0).data == "start"
    for i in range(4 * RUN_MAX):
        a.isend(i, dest="node1")
    a.flush()
    polls: list[int] = []
    monkeypatch.setattr(engine(b), "poll_after_take", lambda: polls.append(1))
    return b, polls


@pytest.mark.parametrize("timeout", [None, 0])
def test_a_run_s_receives_poll_once_a_run_not_every_sixteenth(
    monkeypatch: pytest.MonkeyPatch, timeout: float | None
) -> None:
    # Round 37: a receive that takes a run's next message polls on every 64th (its run's
    # others are queued already; a poll cost a sixteenth of it on every message), and every
    # message still comes out, in order.
    b, polls = four_runs_queued(monkeypatch)
    got = [b.receive(timeout=timeout).data for _ in range(4 * RUN_MAX)]
    assert got == list(range(4 * RUN_MAX))
    assert len(polls) == 4  # (16 with a poll on every 16th receive)


def test_an_async_run_s_messages_poll_once_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same for `messages()` (core/aio.py `next_of_run`).
    b, polls = four_runs_queued(monkeypatch)

    async def take() -> list[Any]:
        got = []
        async for message in b.messages():
            got.append(message.data)
            if len(got) == 4 * RUN_MAX:
                break
        return got

    assert asyncio.run(take()) == list(range(4 * RUN_MAX))
    assert len(polls) == 4  # (16 with a poll on every 16th)
