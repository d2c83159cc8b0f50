"""Runs: small isends of one pair sealed into one wire entry, admitted at once (issue 17)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message, QueueConfig
from geode_mpi.codec import decode, encode, make_stamp
from geode_mpi.codec.runs import (
    INT_LIMIT,
    TEXT_MAX,
    Run,
    RunItem,
    count,
    encode_run,
    joinable,
)
from geode_mpi.delivery.engine import Engine
from geode_mpi.delivery.pairs import OutboxEntry, PairOut, RunEntry
from geode_mpi.delivery.runs import RUN_MAX, release
from geode_mpi.errors import DecodeError
from geode_mpi.persistence.snapshot import capture, unpack_messages
from geode_mpi.transport import InProcHub, InProcTransport, SendTicket
from geode_mpi.transport.base import Frame

NAMES = ["node0", "node1"]


class Held(InProcTransport):
    """An in-process endpoint that batches as the MPI transport does: lazy entries wait until
    a flush, a poll or a send that is not batched, in order with everything else."""

    def __init__(self, hub: InProcHub, rank: int) -> None:
        super().__init__(hub, rank)
        self.held: dict[int, list[Callable[[], bytes]]] = {}
        self.tickets: list[SendTicket] = []
        self.sealed: list[bytes] = []  # every run's meta, as it went

    def batch_lazy(self, dest: int, produce: Callable[[], bytes]) -> SendTicket:
        self.held.setdefault(dest, []).append(produce)
        ticket = SendTicket(dest, 0, held=True)
        self.tickets.append(ticket)
        return ticket

    def send(
        self, dest: int, meta: bytes, frames: Sequence[Frame], batch: bool = False
    ) -> SendTicket:
        self.flush_to(dest)  # what waits goes first
        return super().send(dest, meta, frames, batch)

    def flush_to(self, dest: int) -> None:
        for produce in self.held.pop(dest, []):
            meta = produce()
            self.sealed.append(meta)
            self.hub.post(self.rank, dest, meta, ())
        for ticket in self.tickets:
            ticket.done, ticket.held = True, False

    def flush(self) -> None:
        for dest in list(self.held):
            self.flush_to(dest)

    def progress(self) -> bool:
        return False  # (the MPI transport's poll sends batches only once they are old)


def world(
    acks: bool = True, configs: Any = None, resend_after: float | None = None
) -> tuple[Geode, Geode, Held]:
    hub = InProcHub(2)
    held = Held(hub, 0)
    hub.endpoints[0] = held
    kwargs: dict[str, Any] = {"acks": acks, "resend_after": resend_after}
    if configs is not None:
        kwargs["queues"] = configs
    a = Geode(NAMES, transport=held, **kwargs)
    b = Geode(NAMES, transport=hub.endpoint(1), **kwargs)
    return a, b, held


def engine(geode: Geode) -> Engine:
    return geode._runtime.engine  # type: ignore[no-any-return]


def test_a_run_round_trips_through_the_codec() -> None:
    payloads: list[Any] = ["a", 7, {"k": [1, 2.5]}, None, b"xy"]
    stamps = [100.0 + i for i in range(5)]
    meta = encode_run(b"", 2, 5 << 40, 10, 5, 1, payloads, stamps)
    assert count(meta) == 5
    run = Run(meta, [*NAMES, "n2", "n3", "n4", "n5"])
    for index, data in enumerate(payloads):
        got = run.message(index)
        assert type(got) is Message and got.data == data
        assert (got.id, got.seq, got.timestamp) == ((5 << 40) + index, 10 + index, 100.0 + index)
        assert (got.source, got.dest) == ("n5", "node1")
        # Alone, the same bytes as the message sent on its own with its stamp.
        alone = make_stamp((5 << 40) + index, 10 + index, 100.0 + index, 5, 1)
        assert run.single(index) == encode(Message(data), alone, 2)[0]
        assert decode(meta, RunItem(run, index, None), NAMES).__dict__ == got.__dict__


def test_a_damaged_run_is_refused_before_unpickling() -> None:
    meta = bytearray(encode_run(b"", 0, 0, 0, 0, 1, ["x", "y"], [1.0, 2.0]))
    meta[-3] ^= 0xFF
    with pytest.raises(DecodeError, match="checksum"):
        Run(meta, NAMES)
    with pytest.raises(DecodeError, match="do not add up"):
        Run(bytes(meta[:-1]), NAMES)


def test_what_joins_a_run() -> None:
    assert joinable("x") and joinable(3) and joinable({"a": 1, "b": 1.0}) and joinable(None)
    assert joinable((1, "x")) and joinable([1, 2])
    assert not joinable({"a": [1.0]})  # a list inside: it could change before the run goes
    assert not joinable(np.arange(3)) and not joinable({"a": np.arange(3)})
    assert not joinable("x" * 10_000) and not joinable(object())
    # Inside a container as alone: texts up to TEXT_MAX, ints that fit in TEXT_MAX bytes.
    assert joinable(("x" * TEXT_MAX, b"y" * TEXT_MAX)) and joinable([1 << (8 * TEXT_MAX - 2)])
    assert joinable({"x" * TEXT_MAX: -(INT_LIMIT - 1)}) and joinable(INT_LIMIT - 1)
    assert not joinable((1, "x" * (TEXT_MAX + 1))) and not joinable([b"y" * (TEXT_MAX + 1)])
    assert not joinable({"k": "x" * (TEXT_MAX + 1)}) and not joinable({"x" * (TEXT_MAX + 1): 1})
    assert not joinable(INT_LIMIT) and not joinable(-INT_LIMIT) and not joinable((1, INT_LIMIT))
    assert not joinable({"k": -INT_LIMIT}) and not joinable({INT_LIMIT: 1})


class Step(Message):
    """A subclass with an attribute of its own (its runs carry each message's attributes)."""

    def __init__(self, data: Any, step: Any) -> None:
        super().__init__(data)
        self.step = step


# Data too large for a run: each goes on its own, in its place (a run is one MPI message).
LARGE: list[Any] = [
    (1, "x" * 1_000_000),
    [b"y" * 1_000_000],
    {"k": b"z" * 1_000_000},
    {"k" * 100_000: 1},
    1 << 100_000,
    -(1 << 100_000),
    (2, 1 << 100_000),
    {"k": -(1 << 100_000)},
    Step("s", "x" * 1_000_000),
    Step((1, 2), 1 << 100_000),
]
RUN_BYTES = 16 * 1024  # more than any run of these tests' small messages takes


def test_large_data_inside_a_tuple_or_dict_or_a_huge_int_goes_on_its_own() -> None:
    """A run joins small data only, inside a container as alone: with an open run (a small
    isend before) and without one (after a send that is not batched), each large item
    arrives intact, in its place, and no run carries it."""
    a, b, held = world()
    a.send("start", dest="node1")
    sent: list[Any] = []
    for index, large in enumerate(LARGE):
        for data in (f"before {index}", large, Step(index, index), large, f"after {index}"):
            a.isend(data, dest="node1")
            sent.append(data)
        a.send(index, dest="node1")  # not batched: the next large isend opens no run
        a.isend(large, dest="node1")
        sent += [index, large]
    a.flush()
    got = [b.receive(timeout=0) for _ in range(len(sent) + 1)][1:]
    for want, message in zip(sent, got, strict=True):
        if isinstance(want, Step):
            assert (type(message), message.data, message.step) == (Step, want.data, want.step)
        else:
            assert message.data == want
    assert [m.seq for m in got] == list(range(1, len(sent) + 1))
    assert max(map(len, held.sealed)) < RUN_BYTES  # no run carried a large item
    in_runs = sum(map(count, held.sealed))
    assert in_runs == 3 * len(LARGE)  # the small ones (each alone in its run: Held flushes)


def test_data_changed_after_isend_is_sent_as_it_was() -> None:
    """A run is encoded when it is sealed: a dict or list changed after its isend (raw
    mpi4py's isend pickles at once, and code written for it reuses one dict) must arrive as
    it was sent."""
    a, b, _ = world()
    a.send("start", dest="node1")
    record: dict[str, Any] = {"step": 0}
    row = [0]
    for step in range(5):
        record["step"] = step
        row[0] = step
        a.isend(record, dest="node1")
        a.isend(row, dest="node1")
    a.flush()
    got = [b.receive(timeout=0).data for _ in range(11)][1:]
    assert got[0::2] == [{"step": step} for step in range(5)]
    assert got[1::2] == [[step] for step in range(5)]


def test_isends_of_a_pair_leave_as_one_run_with_ranges() -> None:
    a, b, held = world()
    a.isend("first", dest="node1")  # the route's first send: on its own
    handles = [a.isend(f"m{i}", dest="node1") for i in range(10)]
    assert len(held.held[1]) == 1  # one lazy entry for ten messages
    assert [h.seq for h in handles] == list(range(1, 11))
    ids = [h.id for h in handles]
    assert ids == list(range(ids[0], ids[0] + 10))
    assert not any(h.acked for h in handles)  # not sealed yet: held
    a.flush()
    assert len(held.sealed) == 1 and count(held.sealed[0]) == 10
    pair = engine(a).pairs_out[(0, 1)]
    assert [type(entry) for entry in pair.outbox.values()] == [OutboxEntry, RunEntry]
    got = [b.receive(timeout=0) for _ in range(11)]
    assert [m.data for m in got] == ["first"] + [f"m{i}" for i in range(10)]
    assert [m.id for m in got[1:]] == ids and [m.seq for m in got] == list(range(11))
    b.flush()
    assert not pair.outbox and all(h.acked for h in handles)
    assert a.stats().sent == 11 and a.stats().acked == 11 and a.stats().unacked == 0
    assert b.stats().received == 11 and b.stats().processed == 11


def test_received_messages_sent_on_join_a_run() -> None:
    # A received message holds its id, seq, source, dest and timestamp, which do not travel:
    # sent on as it is, it joins a run as a new message of its data would
    a, b, held = world()
    for i in range(11):
        b.send(f"m{i}", dest="node0")
    received = [a.receive(timeout=0) for _ in range(11)]
    assert all(m.id is not None and m.source == "node1" for m in received)
    a.isend(received[0], dest="node1")  # the route's first send: on its own
    handles = [a.isend(m, dest="node1") for m in received[1:]]
    assert len(held.held[1]) == 1  # one lazy entry for ten messages
    a.flush()
    assert len(held.sealed) == 1 and count(held.sealed[0]) == 10
    got = [b.receive(timeout=0) for _ in range(11)]
    assert [m.data for m in got] == [f"m{i}" for i in range(11)]
    assert [m.source for m in got] == ["node0"] * 11 and [m.seq for m in got] == list(range(11))
    assert [m.id for m in got[1:]] == [h.id for h in handles]
    received[5].headers["k"] = 1  # headers travel: not in a run
    a.isend(received[5], dest="node1")
    a.flush()
    assert b.receive(timeout=0).headers == {"k": 1} and len(held.sealed) == 1  # (no new run)


def test_runs_keep_order_with_messages_that_cannot_join() -> None:
    a, b, held = world()
    sent: list[Any] = []
    a.send("start", dest="node1")
    for i in range(200):
        if i % 17 == 5:
            data: Any = np.arange(i % 5 + 1)  # an array: on its own, batched behind the run
        elif i % 23 == 7:
            data = {"a": np.zeros(2)}  # an array inside: cannot join
        else:
            data = f"m{i}" if i % 2 else {"i": i}
        sent.append(data)
        if i % 31 == 30:
            a.send(data, dest="node1")  # not batched: what waits goes first
        else:
            a.isend(data, dest="node1")
    a.flush()
    got = [b.receive(timeout=0) for _ in range(201)]
    assert [m.seq for m in got] == list(range(201))
    for want, m in zip(sent, got[1:], strict=True):
        if isinstance(want, dict) and "a" in want:
            assert np.array_equal(m.data["a"], want["a"])
        elif isinstance(want, np.ndarray):
            assert np.array_equal(m.data, want)
        else:
            assert m.data == want
    assert len(held.sealed) > 1
    b.flush()
    assert not engine(a).pairs_out[(0, 1)].outbox


def test_a_full_run_makes_way_for_the_next() -> None:
    a, b, held = world(acks=False)
    a.send("start", dest="node1")
    for i in range(RUN_MAX * 2 + 3):
        a.isend(i, dest="node1")
    a.flush()
    assert [count(meta) for meta in held.sealed] == [RUN_MAX, RUN_MAX, 3]
    got = [b.receive(timeout=0).data for _ in range(RUN_MAX * 2 + 4)]
    assert got == ["start", *range(RUN_MAX * 2 + 3)]


def test_a_partial_ack_cuts_a_run_entry() -> None:
    pair = PairOut(None)
    pair.outbox[0] = RunEntry(b"run", (), 1, 64)
    pair.runs = 1
    pair.resends[0] = [5.0, 1]
    assert release(pair, 0, 10) == 10
    assert pair.outbox == {10: RunEntry(b"run", (), 1, 54)} and pair.resends == {10: [5.0, 1]}
    assert release(pair, 20, 30) == 10
    assert pair.outbox == {10: RunEntry(b"run", (), 1, 10), 30: RunEntry(b"run", (), 1, 34)}
    assert pair.holds(15) and not pair.holds(25) and pair.holds(63) and not pair.holds(64)
    assert pair.unacked() == 44 and pair.runs == 2
    assert release(pair, 0, 100) == 44 and not pair.outbox and pair.runs == 0


def test_acks_while_a_consumer_takes_part_of_a_run() -> None:
    """The receiver acknowledges what it processed so far: the sender's run entry is cut, and
    the rest is acknowledged later."""
    a, b, _ = world()
    a.send("start", dest="node1")
    handles = [a.isend(i, dest="node1") for i in range(40)]
    a.flush()
    for _ in range(11):
        b.receive(timeout=0)
    b.flush()  # acks 0..10 (the first send and ten of the run)
    pair = engine(a).pairs_out[(0, 1)]
    assert pair.unacked() == 30
    assert [h.acked for h in handles[9:11]] == [True, False]
    for _ in range(30):
        b.receive(timeout=0)
    b.flush()
    assert pair.unacked() == 0 and all(h.acked for h in handles)


def test_a_run_that_overlaps_what_arrived_lets_through_only_the_new_part() -> None:
    _, b, _ = world()
    eng = engine(b)
    first = encode_run(b"", 2, 0, 0, 0, 1, [f"m{i}" for i in range(10)], [1.0] * 10)
    again = encode_run(b"", 2 | 8, 5, 5, 0, 1, [f"m{i}" for i in range(5, 15)], [2.0] * 10)
    eng.sink(0, memoryview(first), (), len(first))
    eng.sink_run(0, [memoryview(again)])
    got = [b.receive(timeout=0) for _ in range(15)]
    assert [m.data for m in got] == [f"m{i}" for i in range(15)]
    assert [m.seq for m in got] == list(range(15))
    assert [m.timestamp for m in got] == [1.0] * 10 + [2.0] * 5
    assert b.stats().duplicates == 5 and b.stats().received == 15
    assert b.pending() == 0


def test_a_resent_run_is_delivered_once() -> None:
    a, b, _ = world(resend_after=0.0)
    a.send("start", dest="node1")
    for i in range(5):
        a.isend(i, dest="node1")
    a.flush()
    engine(a).poll()  # resend_after 0: everything unacked goes again, the run whole
    assert a.stats().resent >= 5
    got = [b.receive(timeout=0).data for _ in range(6)]
    assert got == ["start", 0, 1, 2, 3, 4] and b.pending() == 0
    assert b.stats().duplicates >= 5


def test_filters_and_orders_see_each_message_of_a_run() -> None:
    class Other(Message):
        pass

    a, b, _ = world()
    a.send("start", dest="node1")
    for i in range(6):
        a.isend(Other(i) if i % 2 else Message(i), dest="node1")
    a.flush()
    assert b.receive(timeout=0).data == "start"
    assert [b.receive(type=Other, timeout=0).data for _ in range(3)] == [1, 3, 5]
    assert b.receive(order="id", timeout=0).data == 0
    assert b.receive(order="timestamp", timeout=0).data == 2
    assert b.receive(source="node0", timeout=0).data == 4


def test_a_drop_oldest_queue_keeps_the_newest_of_a_run() -> None:
    configs = {"node1": QueueConfig(capacity=3, policy="drop_oldest")}
    a, b, _ = world(configs=configs)
    a.send("start", dest="node1")
    for i in range(10):
        a.isend(i, dest="node1")
    a.flush()
    assert [b.receive(timeout=0).data for _ in range(3)] == [7, 8, 9]
    assert b.stats().dropped == 8
    b.flush()
    assert a.stats().unacked == 0


def test_a_checkpoint_keeps_a_queued_run_and_an_outbox_run_message_by_message() -> None:
    a, b, _ = world()
    a.send("start", dest="node1")
    for i in range(8):
        a.isend({"i": i}, dest="node1")
    a.flush()
    assert b.receive(timeout=0).data == "start"
    assert b.receive(timeout=0).data == {"i": 0}
    b.flush()  # acks 0..1: the run entry is cut
    queued = capture(engine(b))["nodes"]["1"]
    messages = unpack_messages(queued["queue"])
    got = [decode(meta, frames, NAMES) for meta, frames in messages]
    assert [m.data for m in got] == [{"i": i} for i in range(1, 8)]
    assert [m.seq for m in got] == list(range(2, 9))
    outbox = capture(engine(a))
    fields = np.asarray(outbox["outbox_fields"]).reshape(-1, 4)
    assert [int(row[2]) for row in fields] == list(range(2, 9))
    kept = [decode(meta, frames, NAMES) for meta, frames in unpack_messages(outbox["outbox"])]
    assert [m.data for m in kept] == [{"i": i} for i in range(1, 8)]
    assert [m.id for m in kept] == [m.id for m in got]


def test_leaving_a_with_block_by_an_error_sends_what_isend_held() -> None:
    # The error may be caught and the job go on: what isend and publish held to batch is
    # sent all the same (not waited for), not dropped with the Geode
    a, b, held = world()
    a.send("start", dest="node1")
    with pytest.raises(RuntimeError, match="boom"), a:
        a.isend("m1", dest="node1")
        a.isend("m2", dest="node1")
        assert held.held  # (held to batch)
        raise RuntimeError("boom")
    assert not held.held
    assert [b.receive(timeout=0).data for _ in range(3)] == ["start", "m1", "m2"]
    b.close(timeout=10)
