"""Large broadcasts down relay trees (transport/relay.py): order, content, membership, close.

A stream relays when it has two members or more (`relayplan.shape_for`), so the relay itself runs
from 3 ranks on; tests/test_mpi_suite.py runs this file at 8 ranks too.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from geode_mpi import DecodeError, Geode, Message
from geode_mpi.transport import open_world, relayplan
from geode_mpi.transport.base import Frame
from geode_mpi.transport.relayplan import CHUNK, RELAY_MIN

TIMEOUT = 60.0
Got = list[tuple[int, str, int, bytes]]


@pytest.fixture(autouse=True)
def _no_shared_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relays only: without it, members on the root's node (all of them here) would get large
    broadcasts through the node's shared segment (transport/shared.py, tests/mpi/test_shared.py)."""
    monkeypatch.setenv("GEODE_SHARED_BYTES", "0")


def big(root: int, k: int) -> Frame:
    """A relayed frame: above the threshold, not a whole number of chunks."""
    return np.full(max(RELAY_MIN, CHUNK) + 4096 * k + 40, root * 16 + k % 16, np.uint8)


def sent(root: int, k: int) -> Frame:
    """A point-to-point frame: out of band, but smaller than a relayed one (the test sends
    one to every other rank)."""
    return big(root, k)[: CHUNK + 40]


def collect(transport: Any) -> Got:
    """Attach a sink recording (source, kind, k, frame bytes) of every arrival."""
    got: Got = []

    def sink(source: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> None:
        kind, k = struct.unpack("<1si", bytes(meta))
        data = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
        got.append((source, kind.decode(), k, data))

    transport.attach(sink)
    return got


def test_relayed_small_and_point_to_point_messages_keep_one_order_per_root() -> None:
    """Every rank roots a stream to all others and sends each of them point-to-point too:
    large broadcasts come down the tree, small ones and sends straight from the root, and each
    member sees one root's messages in the order sent."""
    transport = open_world()
    rank, size = transport.rank, transport.size
    got = collect(transport)
    others = [r for r in range(size) if r != rank]
    for root in range(size):
        transport.open_streams([(700 + root, root)], [r for r in range(size) if r != root])
    count = 12
    tickets = []
    for k in range(count if others else 0):
        if k % 3 == 0:
            frames: list[Frame] = [big(rank, k), np.arange(3, dtype=np.int16)]
            tickets.append(transport.broadcast(700 + rank, struct.pack("<1si", b"L", k), frames))
        elif k % 3 == 1:
            tickets.append(transport.broadcast(700 + rank, struct.pack("<1si", b"S", k), []))
        else:
            for dest in others:
                tickets.append(transport.send(dest, struct.pack("<1si", b"P", k), [sent(rank, k)]))
    for root in range(size):
        transport.close_stream(700 + root, timeout=TIMEOUT)
    assert transport.wait(lambda: all(t.done for t in tickets), time.monotonic() + TIMEOUT)
    transport.flush()
    for root in others:
        mine = [(kind, k, data) for source, kind, k, data in got if source == root]
        assert [k for _, k, _ in mine] == list(range(count))
        for kind, k, data in mine:
            assert kind == "LSP"[k % 3]
            if kind == "L":
                assert data == big(root, k).tobytes() + np.arange(3, dtype=np.int16).tobytes()
            elif kind == "P":
                assert data == sent(root, k).tobytes()
    relayed = getattr(transport, "relayed", 0)  # the in-process transport never relays
    family = getattr(transport, "family", None)
    relays = relayplan.shape_for(big(rank, 0).nbytes, size - 1, family) is not None
    assert relayed == (count // 3 * size if relays else 0)  # its own, the others'
    transport.close(timeout=TIMEOUT)


def test_ranks_outside_a_relayed_stream_see_none_of_it() -> None:
    """A stream from rank 0 to every rank but the middle one: the members get everything, in
    order, the middle rank nothing (its close returns at once)."""
    transport = open_world()
    rank, size = transport.rank, transport.size
    got = collect(transport)
    outside = size // 2 if size > 2 else -1
    members = [r for r in range(1, size) if r != outside]
    transport.open_streams([(900, 0)], members)
    count = 4
    if rank == 0 and members:
        for k in range(count):
            transport.broadcast(900, struct.pack("<1si", b"L", k), [big(0, k)])
    transport.close_stream(900, timeout=TIMEOUT)
    if rank in members:
        assert [(kind, k) for _, kind, k, _ in got] == [("L", k) for k in range(count)]
        assert all(data == big(0, k).tobytes() for _, _, k, data in got)
        relays = relayplan.shape_for(big(0, 0).nbytes, len(members), transport.family) is not None
        assert transport.relayed == (count if relays else 0)
    if rank == outside:
        assert got == [] and transport.relayed == 0
    transport.close(timeout=TIMEOUT)


def payload(publisher: int, k: int) -> Any:
    """Small and relayed messages, interleaved."""
    if k % 2:
        return f"{publisher}:{k}"
    return np.full(RELAY_MIN // 8 + 100 * k, publisher * 1000 + k, np.int64)


def same(got: Any, want: Any) -> bool:
    if isinstance(want, np.ndarray):
        return isinstance(got, np.ndarray) and np.array_equal(got, want)
    return bool(got == want)


def test_topic_publishers_with_subscribers_on_their_ranks_and_changing() -> None:
    """Two nodes per rank, so a publisher's rank hosts subscribers too; two publishers on one
    topic; subscribers leave and come back between publishes. Every subscriber gets each
    publisher's messages in order, once, small and large alike."""
    geode = Geode(2 * open_world_size())
    nodes = geode.nodes
    publishers = [nodes[0], nodes[-1]]
    topic = geode.topic("relay", publishers=publishers, subscribers=nodes)
    expected: dict[str, dict[str, list[Any]]] = {n: {p: [] for p in publishers} for n in nodes}
    seq = dict.fromkeys(publishers, 0)

    def publish(rounds: int) -> None:
        for _ in range(rounds):
            for index, publisher in enumerate(publishers):
                data = payload(index, seq[publisher])
                seq[publisher] += 1
                if geode.hosts(publisher):
                    topic.publish(data, source=publisher)
                for node in topic.subscribers:
                    expected[node][publisher].append(data)

    publish(4)
    leaving = nodes[1::3]
    topic.unsubscribe(leaving)
    publish(3)
    if geode.size > 1:  # the in-process hub agrees on a topic's subscribers only once
        topic.subscribe(leaving)
        publish(3)
    for node in geode.local_nodes:
        want = expected[node]
        got = [geode.receive(node, timeout=TIMEOUT) for _ in range(sum(map(len, want.values())))]
        for publisher in publishers:
            mine = [msg.data for msg in got if msg.source == publisher]
            assert len(mine) == len(want[publisher])
            assert all(same(a, b) for a, b in zip(mine, want[publisher], strict=True))
        assert geode.try_receive(node) is None
        assert geode.stats(node).duplicates == 0
    geode.close(timeout=TIMEOUT)


def open_world_size() -> int:
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.Get_size())


def test_a_forwarding_member_busy_in_its_own_receive_still_forwards() -> None:
    """Each member waits for a point-to-point message that is sent only once the last rank
    has the relayed arrays: the members in between forward while they wait in receive()."""
    geode = Geode(acks=False)
    nodes = geode.nodes
    topic = geode.topic("chain", publishers=nodes[:1], subscribers=nodes[1:] or nodes)
    arrays = [np.full(RELAY_MIN + 12345, k, np.uint8) for k in range(3)]
    if geode.hosts(nodes[0]):
        handles = [topic.publish(array, source=nodes[0]) for array in arrays]
    last = nodes[-1]
    for node in sorted(geode.local_nodes, key=lambda n: n != last):  # one process: last first
        if node == nodes[0]:
            for handle in handles:
                handle.wait(timeout=TIMEOUT)
        if node == last and len(nodes) > 1:
            got = [geode.receive(node, topic=topic, timeout=TIMEOUT) for _ in arrays]
            for other in nodes[:-1]:
                geode.send(Message("done"), dest=other, source=last)
            assert all(np.array_equal(m.data, a) for m, a in zip(got, arrays, strict=True))
        elif len(nodes) > 1:
            assert geode.receive(node, source=last, timeout=TIMEOUT).data == "done"
            if node != nodes[0]:
                got = [geode.receive(node, topic=topic, timeout=TIMEOUT) for _ in arrays]
                assert all(np.array_equal(m.data, a) for m, a in zip(got, arrays, strict=True))
    geode.close(timeout=TIMEOUT)


def test_a_relayed_chunk_shorter_or_longer_than_its_head_says_is_refused() -> None:
    """A member posts every chunk's receive when the head arrives, so a chunk of the wrong
    length lands in a posted receive: it must still be refused, not taken as the frame's
    bytes (shorter: its length is checked; longer: the receive fails)."""
    transport = open_world()
    if transport.size > 1:  # one rank: no parent to send a chunk
        comm = transport.comm  # type: ignore[attr-defined]
        for wrong in (CHUNK // 2, CHUNK + 4096):
            comm.Barrier()
            tag = relayplan.CHUNK_TAG + 7
            if transport.rank == 0:
                number = 1000 + wrong
                head = relayplan.pack_head(0, number, CHUNK, tag, [(2 * CHUNK, 0)], [1])
                comm.Send(head, 1, relayplan.TAG_RELAY_HEAD)
                comm.Send(np.zeros(wrong, np.uint8), 1, tag)
            elif transport.rank == 1:
                with pytest.raises(DecodeError, match="relayed chunk"):
                    deadline = time.monotonic() + TIMEOUT
                    while time.monotonic() < deadline:
                        transport.progress()
                assert not transport.busy  # given up: nothing left moving
    transport.close(timeout=TIMEOUT)


@pytest.mark.parametrize("shape", ["split", "chain", "tree"])
def test_every_relay_shape_delivers_every_frame_in_order(
    shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each shape forced on every broadcast of two frames (not whole chunks, not whole pieces)
    to every other rank, between small messages: every member gets the same bytes, in order.
    (By size alone, a split takes the frames here, and a chain or tree only larger ones or
    more members than these tests have.)"""
    from geode_mpi.transport import mpi_streams  # (broadcast, which asks shape_for)

    chosen = {"split": relayplan.SPLIT, "chain": relayplan.CHAIN, "tree": relayplan.TREE}[shape]
    monkeypatch.setattr(mpi_streams, "shape_for", lambda total, members, family: chosen)
    transport = open_world()
    rank, size = transport.rank, transport.size
    got = collect(transport)
    members = [r for r in range(1, size)]
    transport.open_streams([(950, 0)], members)

    def frames(k: int) -> list[Frame]:
        return [big(0, k)[: 2 * CHUNK + 4096 * k + 5], np.full(3 * 4096 + 7 * k, k, np.uint8)]

    count = 4
    if rank == 0 and members:
        for k in range(count):
            transport.broadcast(950, struct.pack("<1si", b"L", k), frames(k))
            transport.broadcast(950, struct.pack("<1si", b"S", k), [])
    transport.close_stream(950, timeout=TIMEOUT)
    if rank in members:
        assert [(kind, k) for _, kind, k, _ in got] == [
            (kind, k) for k in range(count) for kind in "LS"
        ]
        for _, kind, k, data in got:
            if kind == "L":
                assert data == b"".join(frame.tobytes() for frame in frames(k))
        assert transport.relayed == (count if len(members) > 1 else 0)
    transport.close(timeout=TIMEOUT)
