"""Every fast path gives the general path's result for the same input.

Each test runs the same input twice, once where the fast path applies and once where a public
option or a condition sends it down the general path, and compares what a user sees: the
messages (class, data, metadata, headers, attributes), the counters, the bytes on the wire.
"""

from __future__ import annotations

import datetime
import fractions
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from faulty import Faults, FaultyHub
from mpirun import mpirun

from geode_mpi import Geode, Message, QueueConfig, codec
from geode_mpi.codec import fastpickle, pickling
from geode_mpi.transport import InProcHub
from geode_mpi.transport.envelope import (
    HEADER_SIZE,
    INLINE_MAX,
    build_envelope,
    one_frame_envelope,
    parse_envelope,
)

NODES = ["node0", "node1", "node2", "node3"]
# Counters that measure how, not what: seconds spent waiting, and ack records sent (how many
# acks share one record is what batching changes).
HOW = ("wait_seconds", "credit_wait_seconds", "acks_sent")


class Tagged(Message):
    """A subclass with an attribute of its own (it travels in the header's rest)."""

    def __init__(self, data: Any, label: str) -> None:
        super().__init__(data)
        self.label = label


def payloads() -> list[Any]:
    """Messages and plain values of every kind the codec tells apart."""
    return [
        np.arange(5.0),  # small array: inline in the meta
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.arange(40)[::2],  # strided
        np.asfortranarray(np.ones((3, 2))),
        np.linspace(0, 1, 50_000),  # large array: a frame of its own
        "text",
        "lone surrogate \ud800",  # not UTF-8: pickled instead of sent as text
        b"bytes",
        7,
        2.5,
        None,
        {"a": [1, 2, (3, "x")], "b": 1.5},  # plain: C pickle
        [[[[1]]]],  # deeper than the plain shortcut looks: the array-aware pickler
        {"array": np.ones(3), "n": 1},  # an array inside: out of band
        # Plain data C pickle alone takes (no arrays), whatever `pickling.is_plain` says:
        {1, 2, 3},
        fractions.Fraction(1, 3),  # an object of a class
        {"when": datetime.date(2026, 12, 4), "n": [1, {2: (3,)}]},
        {"loss": np.float64(0.25)},  # a numpy scalar: named by numpy, but no array
        [b"\x93_reconstruct", 1],  # the names the fast path looks for, as data
        # Arrays inside containers, which the fast path's C pickle hands back:
        [np.arange(40)[::2], 1],  # strided: numpy pickles it in band
        (np.asfortranarray(np.ones((3, 2))), "fortran"),  # out of band, transposed
        {"t": np.array(["2026-12-04"], dtype="datetime64[D]")},  # exports no buffer
        [np.array([1, "x"], dtype=object)],
        Message("with headers", headers={"h": 1, "k": "v"}),
        Tagged(np.arange(3), "tag"),
        Tagged("text", "tag"),
    ]


def seen(message: Message) -> tuple[Any, ...]:
    """What a user sees of a received message (not its timestamp: clocks differ)."""
    state = {k: v for k, v in vars(message).items() if k not in ("data", "timestamp")}
    return (type(message).__name__, as_value(message.data), repr(state), dict(message.headers))


def as_value(data: Any) -> Any:
    if isinstance(data, np.ndarray):
        values = data.tolist() if data.dtype.hasobject else data.tobytes()
        return ("array", data.dtype.str, data.shape, values)
    if isinstance(data, dict):
        return {k: as_value(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return (type(data).__name__, [as_value(item) for item in data])
    return data


def counters(geode: Geode, node: str) -> dict[str, Any]:
    found = geode.stats(node).as_dict()
    return {k: v for k, v in found.items() if k not in HOW}


def embedded(**options: Any) -> Geode:
    return Geode(NODES, transport=InProcHub(1).endpoint(0), **options)


def sent_and_received(
    geode: Geode, receive: Callable[[Geode], Message], dest: str = "node0"
) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """Send every payload from node1 to ``dest``, then receive them all with ``receive``."""
    items = payloads()
    for item in items:
        geode.send(item, "node1", dest)
    got = [seen(receive(geode)) for _ in items]
    geode.flush()  # the acks, so that the sender's counters are final
    return got, {node: counters(geode, node) for node in ("node1", dest)}


# -- core: receive -------------------------------------------------------------------------


def test_plain_receive_gives_the_general_receive_result() -> None:
    # receive() with no argument on this rank's node takes the plain queue's fast path; a
    # timeout (or any filter) takes the general one.
    with embedded() as fast, embedded() as general:
        assert sent_and_received(fast, lambda g: g.receive()) == sent_and_received(
            general, lambda g: g.receive(timeout=10)
        )


def test_receive_from_a_queue_without_window_gives_the_windowed_result() -> None:
    # A queue without capacity has no window: taking a message skips the credit accounting.
    with embedded() as plain, embedded(queue=QueueConfig(capacity=1000)) as windowed:
        first = sent_and_received(plain, lambda g: g.receive(timeout=10))
        second = sent_and_received(windowed, lambda g: g.receive(timeout=10))
    assert first == second
    assert first[1]["node0"]["processed"] == first[1]["node1"]["acked"] == len(payloads())


def test_single_thread_calls_give_the_locked_calls_result() -> None:
    # With no other thread, send, isend and receive skip the gate's lock; a thread that merely
    # exists makes them take it.
    with embedded() as alone:
        expected = sent_and_received(alone, lambda g: g.receive())
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, daemon=True)
    other.start()
    try:
        with embedded() as shared:
            assert sent_and_received(shared, lambda g: g.receive()) == expected
    finally:
        idle.set()
        other.join()


# -- delivery: arrival in order, acknowledgements -------------------------------------------


def two_ranks(hub: Any) -> tuple[Geode, Geode]:
    a, b = (Geode(2, transport=hub.endpoint(rank)) for rank in range(2))
    return a, b


def delivered(hub: Any, count: int = 120) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """node0 sends ``count`` varied messages to node1 on another simulated rank; node1 takes
    them all (driving both ranks with non-blocking calls, as faulty.py asks)."""
    a, b = two_ranks(hub)
    items = [payloads()[k % len(payloads())] for k in range(count)]
    for item in items:
        a.isend(item, "node0", "node1")
    got = []
    for _ in range(100 * count):
        a.pending()
        found = b.try_receive("node1")
        if found is not None:
            got.append(seen(found))
        if len(got) == count:
            break
    # (not the queue's peak: how many wait at once depends on when the delayed ones arrive)
    result = got, {k: v for k, v in counters(b, "node1").items() if k != "queue_peak"}
    for geode in (a, b):
        geode.close(timeout=10)
    return result


def test_in_order_arrival_gives_the_reordering_result() -> None:
    # In order with nothing held: the arrival goes straight to the queue. Reordered on the way
    # (a lossless transport that overtakes): held, then put back in order by the general path.
    in_order = delivered(InProcHub(2))
    reordered = delivered(FaultyHub(2, Faults(reorder=0.5, delay=0.3, control=False), seed=3))
    assert len(in_order[0]) == 120
    assert reordered == in_order


def acked_sends(geode: Geode, reverse: bool) -> dict[str, Any]:
    """node1 sends to node2 (explicit acks) with ack=True; node2 acks in or out of order."""
    handles = [geode.isend(item, "node1", "node2", ack=True) for item in payloads()]
    taken = [geode.receive("node2", timeout=10) for _ in handles]
    for message in reversed(taken) if reverse else taken:
        message.ack()
    for handle in handles:
        handle.wait(timeout=10)
    assert all(handle.acked for handle in handles)
    return {"node1": counters(geode, "node1"), "node2": counters(geode, "node2")}


def test_acks_in_order_give_the_out_of_order_result() -> None:
    # Processed in order, a pair's acks are one range; out of order, each is acked by number.
    explicit = {"node2": QueueConfig(ack="explicit")}
    with embedded(queues=explicit) as in_order, embedded(queues=explicit) as backwards:
        assert acked_sends(in_order, False) == acked_sends(backwards, True)


def batched(geode: Geode, wait_each: bool) -> dict[str, Any]:
    """200 tracked messages node1 -> node3: acks batched (isend) or sent at once (ack=True)."""
    if wait_each:
        handles = [geode.isend(k, "node1", "node3", ack=True) for k in range(200)]
    else:
        handles = [geode.isend(k, "node1", "node3") for k in range(200)]
    assert [geode.receive("node3", timeout=10).data for _ in handles] == list(range(200))
    geode.flush()
    for handle in handles:
        handle.wait(timeout=10)
    return {node: counters(geode, node) for node in ("node1", "node3")}


def test_batched_acks_give_the_immediate_acks_result() -> None:
    # Tracked sends are acked in batches of records; a sender that waits (ack=True) has each
    # of its messages acked at once. Either way every message is acked, once.
    with embedded() as batching, embedded() as waiting:
        first, second = batched(batching, False), batched(waiting, True)
    assert first == second
    assert first["node1"]["acked"] == 200 and first["node1"]["unacked"] == 0


# -- codec ----------------------------------------------------------------------------------


def encoded_twice(item: Any) -> Iterator[tuple[bytes, list[bytes]]]:
    """Encode the same message with a new class twice: the first time the encoder knows
    neither the class nor the array layout (the general path); the second time it does."""

    class Fresh(Message):
        pass

    message = Fresh(item)
    stamp = codec.Stamp(id=5, seq=2, timestamp=1.5, source=1, dest=0)
    for _ in range(2):
        # every flag bit set: both paths keep only the sender's own
        meta, frames = codec.encode(message, stamp, 0xFF, reply_to=3)
        yield bytes(meta), [np.ascontiguousarray(frame).tobytes() for frame in frames]


@pytest.fixture(autouse=True)
def _fast_path_fresh() -> Iterator[None]:
    # After data with arrays the encoder skips its C-pickle attempt for a while: each test
    # starts with the attempt on, so that its second encoding is the fast path's.
    fastpickle._plain_misses[0] = 0
    yield
    fastpickle._plain_misses[0] = 0


@pytest.mark.parametrize("index", range(len(payloads())))
def test_encode_fast_paths_give_the_general_encoding(index: int) -> None:
    # Known class and layout: a small array from its template, a large one as one frame, and
    # plain data (text, numbers, small containers) without the general assembly.
    item = payloads()[index]
    if isinstance(item, Message):
        item = item.data
    general, fast = encoded_twice(item)
    assert fast == general
    decoded = codec.decode(fast[0], [np.frombuffer(f, np.uint8) for f in fast[1]], NODES)
    assert as_value(decoded.data) == as_value(item)


def test_plain_data_pickles_as_the_array_aware_pickler_does() -> None:
    # Plain data (no arrays) is pickled by C pickle alone; the array-aware pickler, which the
    # rest takes, reads back the same value.
    for item in payloads():
        if isinstance(item, Message) or not pickling.is_plain(item):
            continue
        frames: list[np.ndarray[Any, Any]] = []
        general = pickling.loads(pickling.dumps(item, frames), frames)
        assert frames == []
        assert pickling.loads(pickle.dumps(item, 5), []) == general == item
    assert not pickling.is_plain([[[[1]]]])  # what it turns away still round-trips:
    frames = []
    assert pickling.loads(pickling.dumps([[[[1]]]], frames), frames) == [[[[1]]]]


def test_make_stamp_gives_the_named_tuple() -> None:
    stamp = codec.make_stamp(7, 3, 2.5, 1, 2)
    assert stamp == codec.Stamp(id=7, seq=3, timestamp=2.5, source=1, dest=2)
    assert type(stamp) is codec.Stamp and stamp.dest == 2


# -- transport: envelopes --------------------------------------------------------------------


def test_one_frame_envelope_is_the_general_envelope() -> None:
    meta = b"m" * 40
    frame = np.arange(10_000, dtype=np.float64)
    for address in (0, 16, 4096 + 48, 123 * 4096 + 4000):
        general, oob = build_envelope(meta, [frame], inline_max=0, offsets=[address])
        assert one_frame_envelope(meta, frame.nbytes, address) == general
        assert len(oob) == 1 and oob[0] is frame


def test_inline_frames_read_back_as_out_of_band_ones() -> None:
    # Frames up to INLINE_MAX travel inside the envelope; larger ones (here: all of them, with
    # inline_max=-1) as messages of their own. The receiver gets the same meta and bytes.
    meta = b"header and meta"
    frames = [np.arange(n, dtype=np.uint8) for n in (0, 1, 15, 16, 1000, INLINE_MAX)]
    inline, none_out = build_envelope(meta, frames, inline_max=INLINE_MAX)
    apart, all_out = build_envelope(meta, frames, inline_max=-1)
    assert none_out == [] and len(all_out) == len(frames)
    meta_in, read_in, _ = parse_envelope(inline)
    meta_out, read_out, sizes = parse_envelope(apart)
    assert bytes(meta_in) == bytes(meta_out) == meta
    assert [bytes(frame) for frame in read_in] == [frame.tobytes() for frame in frames]
    assert all(frame is None for frame in read_out) and len(sizes) == len(frames)


def test_meta_only_arrival_is_what_the_envelope_parser_reads() -> None:
    # The MPI transport takes a frame-less envelope's meta by slicing off the fixed header,
    # without parsing it; the parser finds the same meta.
    meta = bytes(range(60))
    envelope, oob = build_envelope(meta, [], inline_max=INLINE_MAX)
    parsed, inline, _ = parse_envelope(envelope)
    assert oob == [] and list(inline) == []
    assert bytes(memoryview(envelope)[HEADER_SIZE:]) == bytes(parsed) == meta


# -- under MPI: runs of frame-less arrivals, batches, broadcasts to one rank -----------------

MPI_SCRIPT = """
import numpy as np
from geode_mpi import Geode, Message, QueueConfig

# 12 nodes on 3 ranks: rank 1 hosts node1, node4, node7, node10. node1 gets isends: batched on the
# wire, taken in as runs of frame-less arrivals, received by the plain receive. node4's queue
# drops its oldest when full (it never is): its arrivals go through the sink one by one. node7
# gets sends, never batched. node10 subscribes to both topics.
queues = {"node4": QueueConfig(policy="drop_oldest", capacity=10**6)}
items = [k if k % 3 else ("text", k) for k in range(300)]
items += [np.arange(5.0), np.arange(100_000.0), Message("h", headers={"h": 1})]

def seen(message):
    data = message.data
    data = data.tolist() if isinstance(data, np.ndarray) else data
    return (type(message).__name__, data, message.source, message.seq, dict(message.headers))

with Geode(12, queues=queues) as geode:
    # Topic one has its subscribers on rank 1 alone: its broadcast is a send. Topic two
    # reaches ranks 1 and 2: a broadcast.
    one = geode.topic("one", ["node0"], ["node10"])
    two = geode.topic("two", ["node0"], ["node10", "node2"])
    if geode.rank == 0:
        for item in items:
            geode.isend(item, "node0", "node1")
            geode.isend(item, "node0", "node4")
            geode.send(item, "node0", "node7")
            one.publish(item, "node0")
            two.publish(item, "node0")
        geode.flush()
    elif geode.rank == 1:
        runs = [seen(geode.receive()) for _ in items]
        single = [seen(geode.receive("node4", timeout=60)) for _ in items]
        unbatched = [seen(geode.receive("node7", timeout=60)) for _ in items]
        assert runs == single == unbatched
        counted = [geode.stats(node).as_dict() for node in ("node1", "node4", "node7")]
        for name in ("received", "processed"):
            assert counted[0][name] == counted[1][name] == counted[2][name], name
        # (the isends joined runs, which count their own bytes; the sends did not)
        bytes_in = [count["received_bytes"] for count in counted]
        assert bytes_in[0] == bytes_in[1] and abs(bytes_in[2] / bytes_in[0] - 1) < 0.05, bytes_in
        assert counted[0]["received"] == len(items)
        sent = [seen(geode.receive("node10", topic="one", timeout=60)) for _ in items]
        cast = [seen(geode.receive("node10", topic="two", timeout=60)) for _ in items]
        assert sent == cast
        print("same", len(items))
    else:
        for _ in items:
            geode.receive("node2", topic="two", timeout=60)
"""


@pytest.mark.mpi
def test_mpi_fast_paths_give_the_general_result(tmp_path: Any) -> None:
    # Runs of small arrivals (sink_run) vs one by one; batched isends vs sends; a broadcast to
    # one rank sent point-to-point vs a real broadcast.
    script = tmp_path / "paths.py"
    script.write_text(MPI_SCRIPT)
    result = mpirun(3, [str(script)], timeout=180)
    assert result.returncode == 0, result.explain()
    assert "same 303" in result.stdout


def test_decode_fast_path_gives_the_general_decoding() -> None:
    # decode() reads a plain Message (text, plain pickle, an array) itself; given what peek()
    # read (a public argument), it takes the general path.
    for index, item in enumerate(payloads()):
        message = item if isinstance(item, Message) else Message(item)
        stamp = codec.Stamp(id=index, seq=index, timestamp=2.5, source=2, dest=3)
        meta, frames = codec.encode(message, stamp, codec.FLAG_TRACKED, reply_to=1)
        received = [np.frombuffer(np.ascontiguousarray(f).tobytes(), np.uint8) for f in frames]
        fast = codec.decode(meta, received, NODES)
        general = codec.decode(meta, received, NODES, codec.peek(meta))
        assert seen(fast) == seen(general), index
        assert (fast.timestamp, fast.source, fast.dest) == (2.5, "node2", "node3")


def test_send_by_cached_route_gives_the_explicit_source_result() -> None:
    # A send from this rank's node to a dest it sent to before reuses the route it found; a
    # send naming its source looks the route up again.
    with embedded() as cached, embedded() as explicit:
        for item in payloads() * 2:
            cached.send(item, dest="node2")
            explicit.send(item, "node0", "node2")
        first = [seen(cached.receive("node2", timeout=10)) for _ in payloads() * 2]
        second = [seen(explicit.receive("node2", timeout=10)) for _ in payloads() * 2]
        assert first == second
        assert counters(cached, "node0") == counters(explicit, "node0")


def test_topic_arrival_gives_the_point_to_point_result() -> None:
    # A topic's arrivals skip the header check a point-to-point pair makes on its first one;
    # what the subscriber receives is the same message, with its topic named.
    with embedded() as published, embedded() as sent:
        topic = published.topic("news", ["node1"], ["node3"])
        for item in payloads():
            topic.publish(item, "node1")
            sent.send(item, "node1", "node3")
        for _ in payloads():
            via_topic = published.receive("node3", timeout=10)
            direct = sent.receive("node3", timeout=10)
            assert direct.topic is None and vars(via_topic).pop("topic") == "news"
            assert seen(via_topic) == seen(direct)


@pytest.mark.parametrize("tracked", [False, True])
def test_to_node_stamps_and_encodes_as_stamp_does(
    tracked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`SendPath.to_node` has `stamp` inline: the same id, stamp and bytes for each message."""
    from geode_mpi.delivery.pairs import PairOut
    from geode_mpi.delivery.sending import SendPath
    from geode_mpi.delivery.stats import NodeStats

    sent: list[bytes] = []

    class Recorder:
        rank = 0

        def send(self, dest: int, meta: bytes, frames: Any, batch: bool = False) -> Any:
            sent.append(meta)
            return None

    monkeypatch.setattr("time.time", lambda: 1234.5)  # the stamps' timestamp, the same twice
    stats = {1: NodeStats("node1"), 2: NodeStats("node2")}

    def path() -> SendPath:
        return SendPath(Recorder(), NODES, stats, lambda node: node % 2, [1], tracked, None)  # type: ignore[arg-type]

    fast, general = path(), path()
    pair = PairOut(None)
    for value in payloads():
        message = value if isinstance(value, Message) else Message(value)
        seq = pair.next_seq
        _, stamp = fast.to_node(message, 1, 1, 2, 0, pair, False, 0, 77, True)
        flags = codec.FLAG_TRACKED if tracked else 0
        expected, meta, _ = general.stamp(message, 1, 1, 2, seq, flags, 77)
        assert stamp == expected
        assert sent[-1] == meta
    assert fast.counter == general.counter == {1: len(payloads())}
