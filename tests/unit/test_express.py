"""The express path of a small message (`Lane.express`, `Engine.take_express`) keeps every
guarantee of the general path, and sends the bytes `codec.encode` gives.

The in-process transport lends no express parts (it delivers as it sends); here a lane is
lent parts that send through it, so that the whole send path runs in one process. The
receive side is replayed from captured arrivals (see test_take_arrival.py) and from scripted
spins: each test fails if the express path skips a guarantee (order, dedup, counters, acks
emptying the outbox, a typed or filtered receive, a second source, threads, damaged bytes).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_take_arrival import captured, replay

from geode_mpi import DecodeError, EncodeError, Geode, Message, codec
from geode_mpi.codec import classes, wire
from geode_mpi.core import facade_sending as facade
from geode_mpi.delivery import Engine, express
from geode_mpi.delivery.direct import Lane
from geode_mpi.message import RESERVED
from geode_mpi.transport import InProcHub, SendTicket

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mpi"))
from payloads import Sample

ROUNDS = 60
TAG = 4


class Tagged(Message):
    """A subclass: a typed receive takes only these."""


class Point(Message):
    """A subclass as users write one: attributes set in ``__init__``."""

    def __init__(self, data: Any = None, x: Any = 0, label: str = "") -> None:
        super().__init__(data)
        self.x = x
        self.label = label


class Slotted(Message):
    """A subclass with ``__slots__``: always the general path."""

    __slots__ = ("weight",)


def slotted(data: Any) -> Slotted:
    message = Slotted(data)
    message.weight = 0.5
    return message


class Request:
    """An `Isend`'s request, finished at its ``finish_at``-th test."""

    def __init__(self, finish_at: int) -> None:
        self.tests = 0
        self.finish_at = finish_at

    def Test(self) -> bool:
        self.tests += 1
        return self.tests >= self.finish_at


class Lent:
    """Express parts for a lane over the in-process transport: each `Isend` recorded and
    delivered through the transport."""

    def __init__(self, transport: Any, size: int, finish_at: int = 1) -> None:
        self.transport = transport
        self.sent: list[tuple[bytes, int, int]] = []
        self.tracked: list[tuple[int, bytes]] = []
        self.batches: dict[int, SendTicket] = {}
        self.sent_to = [0] * size
        self.finish_at = finish_at
        self.done = SendTicket(-1, 0, done=True)

    def isend(self, meta: bytes, rank: int, tag: int) -> Request:
        self.sent.append((meta, rank, tag))
        self.transport.send(rank, meta, ())
        return Request(self.finish_at)

    def track(self, rank: int, meta: bytes, request: Any) -> SendTicket:
        self.tracked.append((rank, meta))
        return SendTicket(rank, len(meta))

    def parts(self) -> Any:
        return self.isend, TAG, self.done, self.batches, self.sent_to, self.track


@pytest.fixture
def lent(monkeypatch: pytest.MonkeyPatch) -> list[Lent]:
    """Every lane made from now on to another rank gets express parts (one `Lent` a lane)."""
    made: list[Lent] = []
    real = Lane.__init__

    def init(self: Lane, path: Any, src: int, dst: int, rank: int, pair: Any) -> None:
        real(self, path, src, dst, rank, pair)
        transport = path.transport
        if rank != transport.rank and not self.resends:
            parts = Lent(transport, transport.size)
            made.append(parts)
            self.express_parts = parts.parts()

    monkeypatch.setattr(Lane, "__init__", init)
    # Threads an earlier test left behind (a daemon's) would keep every send off the fast
    # case: only the threads started from now on count.
    before = set(threading.enumerate())
    monkeypatch.setattr(facade, "other_threads", lambda: len(set(threading.enumerate()) - before))
    return made


@pytest.fixture
def ranks() -> Iterator[tuple[Geode, Geode]]:
    """Two simulated ranks: node0 and node2 on rank 0, node1 and node3 on rank 1."""
    hub = InProcHub(2)
    a, b = (Geode(4, transport=hub.endpoint(rank)) for rank in range(2))
    yield a, b
    for geode in (a, b):
        geode.close(timeout=10)


def express_sent(made: list[Lent]) -> int:
    return sum(len(parts.sent) for parts in made)


@pytest.mark.parametrize("acks", [True, False])
@pytest.mark.parametrize("text", ["hello world", "", "héllo ✓", "x" * 100_000])
def test_express_bytes_are_encode_s(lent: list[Lent], acks: bool, text: str) -> None:
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank), acks=acks) for rank in range(2))
    a.send("first", dest="node1")  # (the lane is made by the first send)
    handles = [a.send(text, dest="node1"), a.send(Message(text), dest="node1")]
    (parts,) = lent
    assert len(parts.sent) == 2
    assert b.receive(timeout=10).data == "first"
    got = [b.receive(timeout=10) for _ in handles]
    flags = codec.FLAG_TRACKED if acks else 0
    for handle, message, (meta, rank, tag) in zip(handles, got, parts.sent, strict=True):
        assert message.data == text and (message.id, message.seq) == (handle.id, handle.seq)
        stamp = codec.make_stamp(handle.id, handle.seq, message.timestamp, 0, 1)
        assert meta == codec.encode(Message(text), stamp, flags)[0]
        assert (rank, tag) == (1, TAG)
    assert parts.sent_to == [0, 2]
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize("acks", [True, False])
def test_express_sends_arrive_once_in_order_counted_and_acked(lent: list[Lent], acks: bool) -> None:
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank), acks=acks) for rank in range(2))
    handles = [a.send(f"text {k}", dest="node1") for k in range(ROUNDS)]
    assert express_sent(lent) == ROUNDS - 1  # every send after the first
    got = [b.receive(timeout=10) for _ in range(ROUNDS)]
    assert [m.data for m in got] == [f"text {k}" for k in range(ROUNDS)]
    assert [m.seq for m in got] == [h.seq for h in handles] == list(range(ROUNDS))
    assert [m.id for m in got] == [h.id for h in handles]
    assert all(h.done() and h.local and h.dest == "node1" for h in handles)
    sent, received = a.stats(), b.stats()
    assert sent.sent == received.received == received.processed == ROUNDS
    assert sent.sent_bytes == received.received_bytes > 0
    assert sent.unacked + sent.acked == (ROUNDS if acks else 0)
    b.flush()  # the acks empty the outbox
    assert a.stats().unacked == 0 and not a._runtime.engine.pair_out(0, 1).outbox
    assert all(h.acked for h in handles) == acks
    for geode in (a, b):
        geode.close(timeout=10)


def test_an_unfinished_isend_is_tracked_and_waited_for(lent: list[Lent]) -> None:
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    a.send("first", dest="node1")
    (parts,) = lent
    parts.finish_at = 3  # not finished at the two tests: handed to the transport's tracker
    a.isend("x", dest="node1").wait(timeout=10)  # (isend is not express: a run)
    lane = a._runtime.path.dests["node1"]
    sent = lane.express("late", None)
    assert sent is not None
    ticket, stamp = sent
    assert parts.tracked == [(1, parts.sent[-1][0])] and not ticket.done
    assert stamp.seq == 2 and a.stats().sent == 3
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize("data", ["hello world", {"step": 3, "e": 1.5}, np.arange(4.0)])
def test_a_received_message_forwarded_takes_the_express_path(lent: list[Lent], data: Any) -> None:
    # A message received (its id, seq, source, dest and timestamp set), sent on as it is: its
    # metadata does not travel, so it goes express, in the bytes `encode` gives its data
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    a.send(data, dest="node1")  # (the lanes are made by the first sends; an array's template)
    b.send("first", dest="node0")
    received = b.receive(timeout=10)
    assert received.id is not None and received.source == "node0"
    assert a.receive(timeout=10).data == "first"
    parts = lent[1]  # (b's lane to node0: made second)
    before = len(parts.sent)
    handle = b.send(received, dest="node0")
    assert len(parts.sent) == before + 1  # express: one Isend, straight from the lane
    meta = parts.sent[-1][0]
    got = a.receive(timeout=10)
    stamp = codec.make_stamp(handle.id, handle.seq, got.timestamp, 1, 0)
    assert meta == codec.encode(Message(data), stamp, codec.FLAG_TRACKED)[0]
    assert (got.source, got.seq, got.id) == ("node1", handle.seq, handle.id) != (None,) * 3
    assert np.array_equal(got.data, data) if isinstance(data, np.ndarray) else got.data == data
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize("extra", [{"priority": 2}, {"ttl": 5.0}, {"_headers": {"k": 1}}])
def test_a_received_message_with_qos_or_headers_is_not_express(
    lent: list[Lent], extra: dict[str, Any]
) -> None:
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    a.send("first", dest="node1")
    received = b.receive(timeout=10)
    received.__dict__.update(extra)
    lane = a._runtime.path.dests["node1"]
    assert lane.express(received.data, received) is None
    assert set(RESERVED) >= {"id", "seq", "source", "dest", "timestamp"}
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize(
    "message",
    [
        slotted("x"),
        Point("x", np.arange(3.0)),  # an attribute holding an array
        Point(np.arange(3.0), 1),  # a small array with attributes
        Message("x", headers={"k": np.arange(3.0)}),  # headers holding an array
        "\ud800",  # a lone surrogate: pickle keeps it
        Message("\ud800"),
        np.arange(3.0),  # a small array's first send: `encode` makes its template
        np.arange(300.0),  # not small: a frame
        np.arange(6.0)[::2],  # strided
        {"a": np.arange(3.0)},  # arrays inside a container go as frames
        Message([1, np.arange(3.0)]),
        [np.arange(6.0)[::2]],  # a strided one, pickled in band by numpy
    ],
)
def test_anything_else_falls_back_with_nothing_done(lent: list[Lent], message: Any) -> None:
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    a.send("first", dest="node1")
    lane = a._runtime.path.dests["node1"]
    before = (lane.pair.next_seq, dict(lane.counter), a.stats())
    # What `Geode.send` offers the lane's express (it checks the class)
    base = 0
    if type(message) is Message:
        assert lane.express(message.data, message) is None
    elif not isinstance(message, Message):
        assert lane.express(message, None) is None
    else:
        a.send(message, dest="node1")  # (its first send: the general path, its name known)
        assert b.receive(timeout=10).data == "first"
        assert type(b.receive(timeout=10)) is type(message)
        a.send("first", dest="node1")
        base = express_sent(lent)  # ("first")
        before = (lane.pair.next_seq, dict(lane.counter), a.stats())
        assert lane.express_named(message) is None
    assert (lane.pair.next_seq, dict(lane.counter), a.stats()) == before
    a.send(message, dest="node1")  # the general path
    assert b.receive(timeout=10).data == "first"
    got = b.receive(timeout=10)
    expected = message.data if isinstance(message, Message) else message
    assert repr(got.data) == repr(expected)
    assert type(got) is type(message if isinstance(message, Message) else Message())
    assert express_sent(lent) == base
    if isinstance(got, Point):
        assert repr((got.x, got.label)) == repr((message.x, message.label))
    wire.plain_misses[0] = 0  # (an array met: the next sends would skip the fast pickle)
    for geode in (a, b):
        geode.close(timeout=10)


def test_a_held_batch_goes_first(lent: list[Lent]) -> None:
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    a.send("first", dest="node1")
    (parts,) = lent
    parts.batches[1] = SendTicket(1, 0, held=True)  # the transport holds a batch for rank 1
    a.send("after the batch", dest="node1")
    assert not parts.sent  # `send_meta` sends it (and the batch before it)
    del parts.batches[1]
    a.send("express", dest="node1")
    assert len(parts.sent) == 1
    assert [b.receive(timeout=10).data for _ in range(3)] == ["first", "after the batch", "express"]
    for geode in (a, b):
        geode.close(timeout=10)


def test_filtered_typed_and_second_source(ranks: tuple[Geode, Geode], lent: list[Lent]) -> None:
    a, b = ranks
    for k in range(3):  # two sources on rank 0, to node1; a Tagged now and then
        a.send(f"from node0 {k}", dest="node1")
        a.send(f"from node2 {k}", "node2", "node1")
        a.send(Tagged(f"tagged {k}"), dest="node1")
    # node0's texts after its first, its Tagged after its first (unless sent before)
    assert express_sent(lent) in (4, 5)
    assert b.receive(source="node2", timeout=10).data == "from node2 0"
    assert b.receive(type=Tagged, timeout=10).data == "tagged 0"
    assert b.receive(timeout=10).data == "from node0 0"
    rest = [b.receive(timeout=10) for _ in range(6)]
    assert [m.data for m in rest if m.source == "node2"] == ["from node2 1", "from node2 2"]
    assert [m.data for m in rest if m.source == "node0"] == [
        "from node0 1",
        "tagged 1",
        "from node0 2",
        "tagged 2",
    ]
    assert b.try_receive() is None


def test_sends_from_threads_never_take_the_express_path(
    ranks: tuple[Geode, Geode], lent: list[Lent]
) -> None:
    a, b = ranks
    a.send("first", dest="node1")
    errors: list[BaseException] = []

    def sender(name: str) -> None:
        try:
            for k in range(50):
                a.send(f"{name} {k}", dest="node1")
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(name,)) for name in "xy"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and express_sent(lent) == 0
    got = [b.receive(timeout=10).data for _ in range(101)][1:]
    for name in "xy":
        assert [int(text.split()[1]) for text in got if text[0] == name] == list(range(50))


# -- the express receive -------------------------------------------------------------------


def test_express_take_gives_the_sink_and_queue_result() -> None:
    express = replay(direct=True, express=True)
    queued = replay(direct=False)
    assert express[:2] == queued[:2]
    assert express[2][0] < queued[2][0]  # some taken straight, the sink never saw them


def spun(*metas: bytes | bool) -> Any:
    """A transport spin that hands back these arrivals, one a spin (bytes: a meta alone from
    rank 0, to take; True: something the transport delivered; False: nothing came)."""
    script = list(metas)

    def spin(seconds: float) -> tuple[int, bytearray] | bool:
        got = script.pop(0)
        return got if isinstance(got, bool) else (0, bytearray(got))

    return spin


def test_a_damaged_text_is_refused_and_dead_lettered() -> None:
    a, b, arrivals = captured()
    engine: Engine = b._runtime.engine
    b.transport.attach(engine.sink, engine.sink_run)
    first = memoryview(bytearray(arrivals[1]))  # node0's "text", seq 0
    engine.sink(0, first, (), len(first))
    assert b.receive("node1", timeout=10).data == "text"
    good = codec.encode(Message("ok"), codec.make_stamp(5, 1, 1.0, 0, 1), codec.FLAG_TRACKED)[0]
    damaged = bytearray(good)
    damaged[-2:] = b"\xff\xfe"
    before = b.stats("node1")
    taken = engine.take_express(1, spun(bytes(damaged)), 0.0)
    assert taken is not None and not isinstance(taken, Message)  # queued, then taken as is
    assert b.stats("node1").received == before.received + 1
    with pytest.raises(DecodeError, match="cannot decode"):
        b._runtime.decode(taken, 1)
    for geode in (a, b):
        geode.close(timeout=10)


def test_duplicates_and_early_arrivals_are_the_sink_s() -> None:
    a, b, arrivals = captured()
    engine: Engine = b._runtime.engine
    b.transport.attach(engine.sink, engine.sink_run)
    first = memoryview(bytearray(arrivals[1]))  # "text", seq 0: the pair's first (the sink's)
    assert engine.take_express(1, spun(bytes(first)), 0.0) is not None
    pair = engine.pairs_in[(0, 1)]
    assert pair.expected == 1
    again = engine.take_express(1, spun(arrivals[1], False), 0.0)  # a copy: dropped
    assert again is None and b.stats("node1").duplicates == 1
    early = engine.take_express(1, spun(arrivals[3]), 0.0)  # seq 2 before seq 1: held
    assert early is None and pair.expected == 1 and pair.held
    got = engine.take_express(1, spun(arrivals[2]), 0.0)  # seq 1: both let through
    assert got is not None
    assert pair.expected == 3
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.fixture
def first_taken() -> Iterator[tuple[Geode, Engine, list[bytes]]]:
    """node1 (in process, its arrivals replayed) with node0's first message, "text", taken:
    node1's Geode, its engine and the captured arrivals."""
    a, b, arrivals = captured()
    engine: Engine = b._runtime.engine
    b.transport.attach(engine.sink, engine.sink_run)
    engine.sink(0, memoryview(bytearray(arrivals[1])), (), len(arrivals[1]))
    assert b.receive("node1", timeout=10).data == "text"
    yield b, engine, arrivals
    for geode in (a, b):
        geode.close(timeout=10)


def test_an_ack_record_first_then_the_reply_is_taken_express(
    first_taken: tuple[Geode, Engine, list[bytes]],
) -> None:
    # What a ping-pong meets every ACK_DELAY: an ack record arrives before the reply; the
    # take spins once more instead of leaving the receive to the general wait.
    b, engine, arrivals = first_taken
    engine.sink(0, memoryview(bytearray(arrivals[0])), (), len(arrivals[0]))  # the ack record
    got = engine.take_express(1, spun(True, arrivals[2]), 0.0)
    assert isinstance(got, Message) and got.data.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert b.stats("node1").processed == 2
    assert engine.take_express(1, spun(True, False), 0.0) is None


def test_an_ack_record_handed_back_alone_is_taken_in_then_the_reply(
    first_taken: tuple[Geode, Engine, list[bytes]],
) -> None:
    # On MPI an ack record alone comes back from the spin as its bytes (a meta on TAG_META),
    # not as True: it is sunk, and the take spins once more for the reply.
    b, engine, arrivals = first_taken
    got = engine.take_express(1, spun(arrivals[0], arrivals[2]), 0.0)
    assert isinstance(got, Message) and got.data.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert b.stats("node1").processed == 2


def test_no_second_spin_while_a_forward_waits(
    first_taken: tuple[Geode, Engine, list[bytes]],
) -> None:
    # A sequencer's forward (or a served request) goes first: `take`'s wait does it, so the
    # express take returns instead of spinning again and handing back a later reply.
    b, engine, arrivals = first_taken
    engine.forwards.append((1, None))  # type: ignore[arg-type]  # (only its presence counts)
    script = spun(True, arrivals[2])
    assert engine.take_express(1, script, 0.0) is None
    engine.forwards.clear()
    assert b.stats("node1").processed == 1  # the reply was not spun for


# -- every plain payload -------------------------------------------------------------------

PAYLOADS: list[Any] = [
    7,
    2.5,
    True,
    None,
    b"raw",
    -(2**70),
    {"x": 1, "y": 2.0, "name": "abc"},
    (1, 2.0),
    [1.0, 2.0],
    {"nested": [(1, "a"), {"b": None}], "set": {3}},
    np.zeros(1),
    np.arange(128.0),  # 1 KiB
    np.ones((2, 3), np.int32),
    np.float64(1.5),  # a numpy scalar: a pickle (no buffer)
]


def primed(lent: list[Lent], acks: bool, first: Any) -> tuple[Geode, Geode, int]:
    """Two in-process ranks; node0 sent node1 "first" (which made its lane) and ``first``
    (a class's first send names it, a small array's makes its template); the express sends
    so far."""
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank), acks=acks) for rank in range(2))
    a.send("first", dest="node1")
    a.send(first, dest="node1")
    (parts,) = lent
    return a, b, len(parts.sent)


NAMED = [
    lambda: Tagged("hello world"),
    lambda: Tagged(7),
    lambda: Tagged({"x": 1, "name": "abc"}),
    lambda: Tagged(np.arange(3.0)),
    lambda: Point("hello world", 1, "a"),
    lambda: Point((1, 2.0), 2.5, "b"),
    lambda: Point({"x": [1, 2]}, None, "c"),
    lambda: Tagged("h", headers={"step": 1}),
    lambda: Point(7, 1, "d"),
    lambda: headed(Point("hello world", 1, "e"), {"step": 2, "tag": "t"}),
    lambda: headed(Point({"y": 2.0}, {"nested": [1, ("a", None)]}, "f"), {"n": 3}),
    lambda: Point("hello world", np.float64(0.5), "g"),  # (a numpy scalar: no buffer)
    lambda: received(Point("again", 3, "h")),
    lambda: Forgot(4),
]
# A base-class Message with headers: sent as a subclass's message with headers is
HEADED = [
    lambda: Message("hello world", headers={"step": 1}),
    lambda: Message(7, headers={"k": 1, "tag": "t"}),
    lambda: received(Message("again", headers={"n": 2})),
]


class Forgot(Message):
    """A subclass whose ``__init__`` forgot ``super().__init__()``: its data is its class's."""

    data = "the class's"

    def __init__(self, x: Any) -> None:
        self.x = x


def received(message: Message) -> Message:
    """``message`` as if received, to be sent on: its metadata in its ``__dict__`` too."""
    vars(message).update(id=5, seq=2, timestamp=1.0, source="node0", dest="node1")
    return message


def headed(message: Message, headers: dict[str, Any]) -> Message:
    """``message`` with user headers as well as its attributes."""
    message.headers = headers
    return message


@pytest.mark.parametrize("acks", [True, False])
@pytest.mark.parametrize("make", [*NAMED, *HEADED], ids=lambda make: repr(vars(make())))
def test_a_subclass_goes_express_with_encode_s_bytes(
    lent: list[Lent], acks: bool, make: Any
) -> None:
    a, b, before = primed(lent, acks, make())
    parts = lent[0]
    sent = make()
    handle = a.send(sent, dest="node1")
    assert len(parts.sent) == before + 1
    assert b.receive(timeout=10).data == "first"
    b.receive(timeout=10)  # (the first send's)
    got = b.receive(timeout=10)
    assert type(got) is type(sent) and same(got.data, sent.data)
    assert (got.id, got.seq, got.source) == (handle.id, handle.seq, "node0")
    for key, value in vars(sent).items():  # (its attributes and headers; not its metadata)
        assert key in RESERVED or vars(got)[key] == value
    flags = codec.FLAG_TRACKED if acks else 0
    stamp = codec.make_stamp(handle.id, handle.seq, got.timestamp, 0, 1)
    assert parts.sent[-1][0] == codec.encode(sent, stamp, flags)[0]
    for geode in (a, b):
        geode.close(timeout=10)


def same(got: Any, expected: Any) -> bool:
    if isinstance(expected, np.ndarray):
        return bool(got.dtype == expected.dtype and np.array_equal(got, expected))
    return type(got) is type(expected) and got == expected


@pytest.mark.parametrize("acks", [True, False])
@pytest.mark.parametrize("data", PAYLOADS, ids=repr)
def test_every_plain_payload_goes_express_with_encode_s_bytes(
    lent: list[Lent], acks: bool, data: Any
) -> None:
    a, b, before = primed(lent, acks, data)
    parts = lent[0]
    handles = [a.send(data, dest="node1"), a.send(Message(data), dest="node1")]
    assert len(parts.sent) == before + 2
    assert b.receive(timeout=10).data == "first"
    assert same(b.receive(timeout=10).data, data)  # (the first send's)
    got = [b.receive(timeout=10) for _ in handles]
    flags = codec.FLAG_TRACKED if acks else 0
    for handle, message, (meta, rank, tag) in zip(handles, got, parts.sent[-2:], strict=True):
        assert same(message.data, data) and type(message) is Message
        assert (message.id, message.seq) == (handle.id, handle.seq)
        stamp = codec.make_stamp(handle.id, handle.seq, message.timestamp, 0, 1)
        assert meta == codec.encode(Message(data), stamp, flags)[0]
        assert (rank, tag) == (1, TAG)
    sent, received = a.stats(), b.stats()
    assert sent.sent == received.received == 4 and sent.sent_bytes == received.received_bytes
    b.flush()  # the acks empty the outbox
    assert not a._runtime.engine.pair_out(0, 1).outbox
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize("data", [lambda: 1, {"f": lambda: 1}, Message(threading.Lock())])
def test_what_does_not_pickle_raises_encode_error_with_nothing_sent(
    lent: list[Lent], data: Any
) -> None:
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    a.send("first", dest="node1")
    lane = a._runtime.path.dests["node1"]
    before = (lane.pair.next_seq, dict(lane.counter), a.stats())
    with pytest.raises(EncodeError):
        a.send(data, dest="node1")
    wire.plain_misses[0] = 0  # (the refused pickle made the next sends skip the fast one)
    assert (lane.pair.next_seq, dict(lane.counter), a.stats()) == before
    a.send({"after": 1}, dest="node1")
    assert express_sent(lent) == 1
    assert [b.receive(timeout=10).data for _ in range(2)] == ["first", {"after": 1}]
    for geode in (a, b):
        geode.close(timeout=10)


def arrival(data: Any, seq: int = 1) -> bytes:
    """node0's message of ``data`` to node1, seq ``seq``, as a lane sends it (tracked)."""
    stamp = codec.make_stamp(seq, seq, 1.0, 0, 1)
    return codec.encode(Message(data), stamp, codec.FLAG_TRACKED)[0]


@pytest.mark.parametrize("data", PAYLOADS, ids=repr)
def test_the_express_take_decodes_every_plain_payload_inline(
    first_taken: tuple[Geode, Engine, list[bytes]], monkeypatch: pytest.MonkeyPatch, data: Any
) -> None:
    b, engine, _ = first_taken

    def not_here(*args: Any) -> None:
        raise AssertionError("a plain message went to take_arrival")

    monkeypatch.setattr(engine, "take_arrival", not_here)
    before = b.stats("node1")
    meta = arrival(data)
    got = engine.take_express(1, spun(meta), 0.0)
    assert isinstance(got, Message) and same(got.data, data)
    assert (got.seq, got.source, got.dest) == (1, "node0", "node1")
    assert engine.pairs_in[(0, 1)].expected == 2
    after = b.stats("node1")
    assert after.received == before.received + 1 and after.processed == before.processed + 1
    assert after.received_bytes == before.received_bytes + len(meta)
    if isinstance(data, np.ndarray):  # taken for good: writable
        got.data[...] = 0


@pytest.mark.parametrize("data", ["text", {"x": 1}, np.zeros(1)], ids=repr)
def test_a_damaged_length_field_is_refused_everywhere(
    first_taken: tuple[Geode, Engine, list[bytes]], data: Any
) -> None:
    # A length field one short decoded silently to a shorter text: now a DecodeError on the
    # express take, the direct take and the general decode alike.
    b, engine, _ = first_taken
    damaged = bytearray(arrival(data))
    at = codec.header.DATA_LEN_AT
    damaged[at : at + 4] = (len(damaged) - codec.header.SIZE - 1).to_bytes(4, "little")
    names = ["node0", "node1", "node2", "node3"]
    with pytest.raises(DecodeError, match="says its data is"):
        codec.decode(memoryview(bytes(damaged)), (), names)
    assert engine.take_arrival(0, memoryview(bytearray(damaged)), 1) is None
    taken = engine.take_express(1, spun(bytes(damaged)), 0.0)
    assert taken is not None and not isinstance(taken, Message)  # queued, then taken as is
    with pytest.raises(DecodeError, match="says its data is"):
        b._runtime.decode(taken, 1)


def test_a_damaged_pickle_is_never_unpickled(
    first_taken: tuple[Geode, Engine, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    b, engine, _ = first_taken
    damaged = bytearray(arrival({"x": 1}))
    damaged[-3] ^= 0x01
    monkeypatch.setattr(express, "_loads", lambda _: pytest.fail("unpickled"))
    taken = engine.take_express(1, spun(bytes(damaged)), 0.0)
    assert taken is not None and not isinstance(taken, Message)
    with pytest.raises(DecodeError, match="checksum"):
        b._runtime.decode(taken, 1)


class Guarded(Message):
    """A subclass with a ``__setattr__`` of its own: never built attribute by attribute."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "__dict__":  # (the decode sets that one: then it is received as sent)
            raise AttributeError(f"{name} is read-only")
        super().__setattr__(name, value)


class Renamed(Message):
    """A subclass naming one of the metadata (a property): never built inline either."""

    @property
    def source(self) -> str:  # type: ignore[override]
        return "always here"


def spy_take_arrival(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The nodes of ``engine``'s `take_arrival` calls from now on, as they come."""
    calls: list[int] = []
    real = engine.take_arrival

    def spied(rank: int, meta: Any, index: int) -> Message | None:
        calls.append(index)
        return real(rank, meta, index)

    monkeypatch.setattr(engine, "take_arrival", spied)
    return calls


@pytest.mark.parametrize("cls", [Tagged, Guarded, Renamed])
def test_a_subclass_goes_to_take_arrival_first_then_inline_and_keeps_its_class(
    first_taken: tuple[Geode, Engine, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    cls: type[Message],
) -> None:
    _, engine, _ = first_taken
    calls = spy_take_arrival(engine, monkeypatch)
    for seq in (1, 2, 3):
        stamp = codec.make_stamp(seq, seq, 1.0, 0, 1)
        message = cls.__new__(cls)
        message.__dict__["data"] = {"x": seq}
        meta = codec.encode(message, stamp, codec.FLAG_TRACKED)[0]
        got = engine.take_express(1, spun(meta), 0.0)
        assert type(got) is cls and got.data == {"x": seq} and got.seq == seq
        assert engine.pairs_in[(0, 1)].expected == seq + 1
        want = codec.decode(meta, (), ["node0", "node1"], codec.peek(meta))
        assert got.__dict__ == want.__dict__
    # its first message only (none if one came before), then its class is kept; never for
    # a class that sets its own attributes
    assert calls in ([1], []) if cls is Tagged else calls == [1, 1, 1]


def sample_arrival(seq: int) -> bytes:
    """node0's `Sample` of seq ``seq`` to node1, as a lane sends it (tracked)."""
    stamp = codec.make_stamp(seq, seq, 1.0, 0, 1)
    return codec.encode(Sample({"x": seq}, f"t{seq}"), stamp, codec.FLAG_TRACKED)[0]


def test_a_subclass_with_a_slotted_mixin_keeps_the_general_path_and_its_slots(
    first_taken: tuple[Geode, Engine, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `remember_inline` looked at the bases before Message only, kept this class, and the
    # express take's `__class__` assignment raised TypeError with the message taken from MPI:
    # never delivered, and the pair's next one held behind it.
    _, engine, _ = first_taken
    calls = spy_take_arrival(engine, monkeypatch)
    for seq in (1, 2, 3):
        got = engine.take_express(1, spun(sample_arrival(seq)), 0.0)
        assert type(got) is Sample and got.data == {"x": seq} and got.tag == f"t{seq}"
        assert engine.pairs_in[(0, 1)].expected == seq + 1
    assert calls == [1, 1, 1]  # (each the general take's: never kept)


def test_a_class_the_inline_build_cannot_give_is_refused_and_the_next_flows(
    first_taken: tuple[Geode, Engine, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any failure of the express take's build, the class's too, leaves the message where an
    # undecodable one goes: queued, the receive's DecodeError, the dead letters; the pair's
    # next message is taken after it.
    _, engine, _ = first_taken
    raw = classes.class_name(Sample).encode()
    monkeypatch.setitem(classes._inline, raw, (Sample, None, ""))  # (as if kept, wrongly)
    taken = engine.take_express(1, spun(sample_arrival(1)), 0.0)
    assert taken is not None and not isinstance(taken, Message)  # queued, then taken as is
    assert engine.undecoded is not None and engine.undecoded[0] is taken
    assert "__class__ assignment" in str(engine.undecoded[1])
    assert isinstance(engine.undecoded[1], DecodeError)
    engine.undecoded = None
    assert engine.pairs_in[(0, 1)].expected == 2
    monkeypatch.delitem(classes._inline, raw)
    got = engine.take_express(1, spun(sample_arrival(2)), 0.0)
    assert type(got) is Sample and got.tag == "t2" and got.seq == 2


def test_a_send_naming_this_ranks_own_node_goes_express(
    lent: list[Lent], ranks: tuple[Geode, Geode]
) -> None:
    """`send(msg, geode.node, dest)` (the docs' three-argument form) made no lane: only a send
    with no source did, so a job that always names its source paid the general path (7.7 us
    one way against 6.1-6.7 for `send(msg, dest=...)`, MPICH, 2 ranks). A send from another
    node of the rank still goes the general way, from that node."""
    a, b = ranks
    a.send("first", "node0", "node1")
    assert "node1" in a._runtime.path.dests
    a.send("second", 0, "node1")  # (by index too)
    assert express_sent(lent) == 1
    a.send("third", "node2", "node1")  # another node of rank 0: not the lane's source
    assert express_sent(lent) == 1
    got = [b.receive("node1", timeout=10) for _ in range(3)]
    assert [(msg.data, msg.source) for msg in got] == [
        ("first", "node0"),
        ("second", "node0"),
        ("third", "node2"),
    ]
