"""The fast receive's direct take (`Engine.take_arrival`) gives the sink's, the queue's and
`codec.decode`'s result.

A receive waiting on an empty queue takes a message that arrives alone straight from the
transport, never queued. The same arrivals replayed through `sink` and `take_plain` must give
the same messages in the same order, the same counters on both sides and the same acks:
duplicates dropped, early arrivals held until the gap fills, control records and messages for
another node handled by the sink, a queued message taken before a newer arrival.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from general_path import count_general_done

from geode_mpi import DecodeError, Geode, Message, codec
from geode_mpi.codec import header
from geode_mpi.delivery import Engine
from geode_mpi.delivery.pairs import PairIn
from geode_mpi.queues import Parcel
from geode_mpi.transport import InProcHub

HOW = ("wait_seconds", "credit_wait_seconds", "acks_sent")


class Tagged(Message):
    """A subclass with an attribute: the direct take decodes it the general way."""


TAGGED = Tagged("tagged", headers={"k": 1})
TAGGED.note = "kept"  # type: ignore[attr-defined]
ITEMS: list[Any] = [
    "text",
    np.arange(5.0),
    {"a": [1, 2]},
    7,
    np.ones((2, 3), np.int32),
    None,
    TAGGED,
]


def captured() -> tuple[Geode, Geode, list[bytes]]:
    """Two simulated ranks (nodes 0 and 2 on rank 0, 1 and 3 on rank 1); every arrival at
    rank 1 is captured, in order, instead of reaching its engine."""
    hub = InProcHub(2)
    a, b = (Geode(4, transport=hub.endpoint(rank)) for rank in range(2))
    arrivals: list[bytes] = []

    def capture(source: int, meta: memoryview, frames: Any, nbytes: int) -> None:
        assert not frames  # (every item here travels inside its meta)
        arrivals.append(bytes(meta))

    # node1 sends to node0 first: node0's ack of it comes back to rank 1, a control record.
    b.send("first", "node1", "node0")
    assert a.receive("node0", timeout=10).data == "first"
    b.transport.attach(capture)
    a.flush()  # (the ack)
    for item in ITEMS:
        a.send(item, "node0", "node1")
    for text in ("to node3", "again"):  # another local node: the sink queues them there
        a.send(text, "node0", "node3")
    a.send("plain", "node0", "node1")
    a.isend("acked", "node0", "node1", ack=True)  # its sender waits: diverted, never direct
    a.send("expired", "node0", "node1", ttl=1e-6)  # expired when taken: dropped, not taken
    for item in ITEMS:
        a.send(item, "node2", "node1")
    assert len(arrivals) == 2 * len(ITEMS) + 6
    return a, b, arrivals


def scripted(arrivals: list[bytes]) -> list[bytes]:
    """The arrivals with a duplicate, an early one (two swapped) and a malformed one added."""
    # arrivals: node0's ack of "first", node0's ITEMS (seq 0-5), two for node3, "plain" and
    # "acked" and "expired" (seq 6-8), node2's ITEMS
    script = list(arrivals)
    script.insert(4, arrivals[3])  # a copy of an earlier message: dropped as a duplicate
    # seq 4 overtakes seq 3: held, then both queued at once, and seq 3 taken; seq 5 comes
    # next, while seq 4 is still queued
    script[5], script[6] = script[6], script[5]
    script.insert(9, b"\x07" * 10)  # too short to route: counted and dropped
    return script


def replay(
    direct: bool, express: bool = False
) -> tuple[list[Any], dict[str, Any], tuple[int, int]]:
    """Replay rank 1's captured arrivals, taking node1's messages as they come: directly
    (`take_arrival`; with ``express``, `take_express` spinning on them), or through the sink
    and the queue; what node1 and node3 received, every counter, and how many arrivals the
    sink saw (of how many)."""
    a, b, arrivals = captured()
    engine: Engine = b._runtime.engine
    sink = engine.sink
    sunk = [0]

    def counting(rank: int, meta: memoryview, frames: Any, nbytes: int) -> None:
        sunk[0] += 1
        sink(rank, meta, frames, nbytes)

    engine.sink = counting  # type: ignore[method-assign]
    b.transport.attach(engine.sink, engine.sink_run)
    got: list[Parcel | Message] = []
    take: Callable[[memoryview], Parcel | Message | None]

    def take(meta: memoryview) -> Parcel | Message | None:
        if express and not engine.inboxes[1].waiting:  # as `Geode.receive` does: the spin
            return engine.take_express(1, lambda seconds: (0, bytearray(meta)), 0.0)
        if express:  # (something queued: `Geode.receive` takes it first, without a spin)
            engine.sink(0, meta, (), len(meta))
            return engine.take_plain(1)
        if direct:  # as `take_express` does
            message = engine.take_arrival(0, meta, 1)
            if message is not None:
                return message
        engine.sink(0, meta, (), len(meta))
        return engine.take_plain(1)

    script = scripted(arrivals)
    for meta in script:
        parcel = take(memoryview(bytearray(meta)))
        if parcel is not None:
            got.append(parcel)
    while (parcel := engine.take_plain(1)) is not None:
        got.append(parcel)
    waited = sorted(engine.waited)  # nodes whose senders wait for an ack (`ack=True`)
    names = b._runtime.names
    seen = [
        summary(item if isinstance(item, Message) else codec.decode(item.meta, (), names))
        for item in got
    ]
    seen += [summary(b.receive("node3", timeout=10)) for _ in range(2)]
    b.flush()  # node1's acks go to rank 0
    a.pending()
    for geode in (a, b):
        geode.flush()
    counts = {
        node: {k: v for k, v in geode.stats(node).as_dict().items() if k not in HOW}
        for geode, node in ((a, "node0"), (a, "node2"), (b, "node1"), (b, "node3"))
    }
    pair = engine.pairs_in[(0, 1)]
    counts["pair"] = (pair.expected, pair.done_below, pair.acked_below, pair.ack_due)
    counts["waited"] = waited
    for geode in (a, b):
        geode.close(timeout=10)
    return seen, counts, (sunk[0], len(script))


def summary(message: Message) -> tuple[Any, ...]:
    data = message.data
    value = (data.dtype.str, data.tolist()) if isinstance(data, np.ndarray) else data
    extra = (type(message).__name__, message.headers, getattr(message, "note", None))
    return message.source, message.dest, message.seq, value, extra


def test_direct_take_gives_the_sink_and_queue_result() -> None:
    direct = replay(direct=True)
    queued = replay(direct=False)
    assert direct[:2] == queued[:2]
    seen, counts, sunk = direct
    assert len(seen) == 2 * len(ITEMS) + 4
    assert [s[2] for s in seen if s[0] == "node0" and s[1] == "node1"] == list(
        range(len(ITEMS) + 2)
    )
    assert counts["node1"]["duplicates"] == 1 and counts["node1"]["expired"] == 1
    assert counts["node0"]["unacked"] == 0 and counts["node2"]["unacked"] == 0
    # The direct take did take some straight (the sink saw fewer than every arrival).
    assert sunk[0] < sunk[1] == queued[2][0]


def test_a_small_array_taken_for_good_is_a_writable_view_of_its_buffer() -> None:
    # decode(owned=True) of a whole bytearray: the array is a view of it (no copy); not owned,
    # or a slice of a larger buffer (a batch), a copy.
    stamp = codec.make_stamp(1, 0, 2.5, 0, 1)
    meta = codec.encode(Message(np.arange(4, dtype=np.int16)), stamp)[0]
    names = ["node0", "node1"]
    whole = bytearray(meta)
    owned = codec.decode(memoryview(whole), (), names, None, True).data
    assert owned.base is not None and owned.flags.writeable
    assert np.shares_memory(owned, np.frombuffer(whole, np.uint8))
    owned[0] = 9
    assert owned.tolist() == [9, 1, 2, 3]
    copied = codec.decode(memoryview(whole), (), names).data
    assert not np.shares_memory(copied, np.frombuffer(whole, np.uint8))
    batch = bytearray(meta + bytes(16))
    part = codec.decode(memoryview(batch)[: len(meta)], (), names, None, True).data
    assert not np.shares_memory(part, np.frombuffer(batch, np.uint8))
    assert part.tolist() == [0, 1, 2, 3]


def test_an_arrival_that_does_not_decode_is_left_to_the_sink_untouched() -> None:
    # A damaged pickle: the direct take admits nothing (the sink queues it, and the receive
    # dead-letters it, as for any queued message).
    a, b, arrivals = captured()
    engine: Engine = b._runtime.engine
    b.transport.attach(engine.sink, engine.sink_run)
    damaged = bytearray(arrivals[3])  # node0's {"a": [1, 2]}, seq 2: a pickle
    damaged[-2] ^= 0xFF
    first = memoryview(bytearray(arrivals[1]))
    assert engine.take_arrival(0, first, 1) is None  # a pair's first arrival: the sink's
    engine.sink(0, first, (), len(first))
    assert b.receive("node1", timeout=10).data == "text"
    assert engine.take_arrival(0, memoryview(bytearray(arrivals[2])), 1) is not None
    before = b.stats("node1")
    assert engine.take_arrival(0, memoryview(damaged), 1) is None
    assert b.stats("node1") == before
    assert engine.pairs_in[(0, 1)].expected == 2
    engine.sink(0, memoryview(damaged), (), len(damaged))
    with pytest.raises(DecodeError):
        b.receive("node1", timeout=10)
    assert b.stats("node1").dead_letters == 1
    after = engine.take_arrival(0, memoryview(bytearray(arrivals[4])), 1)
    assert after is not None and after.data == 7
    for geode in (a, b):
        geode.close(timeout=10)


def test_with_acks_off_the_direct_take_never_takes_the_general_path() -> None:
    # Untracked messages are never acked, so `acked_below` stays at 0: the take must not fall
    # back to `Engine._done` (a parcel built for it) once a pair passed ACK_BATCH messages.
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank), acks=False) for rank in range(2))
    arrivals: list[bytes] = []

    def capture(source: int, meta: memoryview, frames: Any, nbytes: int) -> None:
        arrivals.append(bytes(meta))

    a.send("first", "node0", "node1")
    assert b.receive("node1", timeout=10).data == "first"  # the pair is known: direct from now
    b.transport.attach(capture)
    for i in range(300):
        a.send(i, "node0", "node1")
    engine: Engine = b._runtime.engine
    calls = count_general_done(engine)
    taken = [engine.take_arrival(0, memoryview(bytearray(meta)), 1) for meta in arrivals]
    assert [message.data for message in taken if message is not None] == list(range(300))
    assert calls == []
    assert b.stats("node1").processed == 301
    for geode in (a, b):
        geode.close(timeout=10)


def test_a_text_that_is_not_utf8_is_left_to_the_sink_untouched() -> None:
    # The direct take decodes a text inline: bytes that are not UTF-8 admit nothing, and the
    # receive of the queued copy raises the clear error (and dead-letters it).
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
    assert engine.take_arrival(0, memoryview(damaged), 1) is None
    assert b.stats("node1") == before and engine.pairs_in[(0, 1)].expected == 1
    engine.sink(0, memoryview(damaged), (), len(damaged))
    with pytest.raises(DecodeError, match="cannot decode"):
        b.receive("node1", timeout=10)
    assert b.stats("node1").dead_letters == 1
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize("data", ["text", 7, {"a": [1, 2]}, np.arange(3.0), None])
@pytest.mark.parametrize("reply_to", [codec.NO_REPLY, 41])
@pytest.mark.parametrize("source", [0, 9])
def test_the_direct_take_builds_the_general_decode_s_message(
    data: Any, reply_to: int, source: int
) -> None:
    # The same attributes, and nothing more, as `codec.decode` gives: a reply's reply_to, and
    # a source index this job does not name kept as its number.
    hub = InProcHub(2)
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    engine: Engine = b._runtime.engine
    engine.pairs_in[(source, 1)] = PairIn()
    stamp = codec.make_stamp(source << 40, 0, 2.5, source, 1)
    meta = codec.encode(Message(data), stamp, codec.FLAG_TRACKED, reply_to)[0]
    general = codec.decode(memoryview(bytes(meta)), (), b._runtime.names)
    taken = engine.take_arrival(1, bytearray(meta), 1)
    assert taken is not None and type(taken) is Message
    assert sorted(vars(taken)) == sorted(vars(general))
    for key, value in vars(general).items():
        got = vars(taken)[key]
        assert got.tolist() == value.tolist() if isinstance(value, np.ndarray) else got == value
    assert taken.source == ("node0" if source == 0 else "9")
    assert b.stats("node1").received == 1
    del engine.pairs_in[(source, 1)]  # (its message was never sent: nothing to ack at close)
    for geode in (a, b):
        geode.close(timeout=10)


@pytest.mark.parametrize("flags", [0, codec.FLAG_TRACKED, codec.FLAG_RESENT])
def test_only_a_plain_message_s_header_leads_as_plain(flags: int) -> None:
    # `header.PLAIN_LEADS`: what the direct take decodes without the general machinery.
    stamp = codec.make_stamp(1, 0, 2.5, 0, 1)
    plain = [Message("text"), Message(7), Message(np.arange(3.0))]
    other = [
        Tagged("x"),
        Message("x", headers={"k": 1}),
        Message(np.arange(1000.0)),  # its array in a frame
    ]
    lead = header.LEAD.unpack_from
    for message in plain:
        assert lead(codec.encode(message, stamp, flags)[0])[0] in header.PLAIN_LEADS
    for message in other:
        found = lead(codec.encode(message, stamp, flags)[0])
        assert found[0] not in header.PLAIN_LEADS or found[6] or found[7]  # (a name, frames)
    for route in (codec.qos_route(priority=3), codec.Route(header.ROUTE_TOPIC, 4)):
        meta = codec.encode(Message("x"), stamp, flags, route=route)[0]
        assert lead(meta)[0] not in header.PLAIN_LEADS
    for diverted in (codec.FLAG_WAITED, codec.FLAG_TOPIC, codec.FLAG_SEQUENCE, codec.FLAG_WORK):
        meta = codec.encode(Message("x"), stamp, flags | diverted)[0]
        assert lead(meta)[0] not in header.PLAIN_LEADS
    control = codec.encode_control(0, 1, b"ack")
    assert lead(control)[0] not in header.PLAIN_LEADS
