"""Point-to-point at any size: all-to-all, big exchanges, arrays bit-exact, subclasses, errors."""

from __future__ import annotations

import pickle
import re
import time
from typing import Any

import numpy as np
import pytest
from payloads import Point, array_cases

from geode_mpi import (
    ClosedError,
    EncodeError,
    Geode,
    GeodeTimeoutError,
    Message,
    NodeNotLocalError,
    NotProcessed,
    ReceiveTimeout,
    UnknownNodeError,
)

TIMEOUT = 60.0


def payload(src: int, k: int) -> Any:
    """The k-th message from node index src: a mix of objects and arrays."""
    kind = k % 5
    if kind == 0:
        return np.full(10 + k, src * 1000 + k, dtype=np.int64)
    if kind == 1:
        return {"src": src, "k": k, "grid": np.arange(k * 100, dtype=np.float32).reshape(-1, 10)}
    if kind == 2:
        return f"text from {src} #{k}"
    if kind == 3:
        return Point(np.full(20_000, float(k)), label=f"p{src}-{k}")  # 160 kB: out of band
    return [src, k, (np.ones(3, bool), None)]


def check(msg: Message, src: int, k: int) -> None:
    expected = payload(src, k)
    if isinstance(expected, Point):
        assert isinstance(msg, Point)
        assert msg.label == expected.label
        assert np.array_equal(msg.data, expected.data)
        return
    got = msg.data
    if isinstance(expected, np.ndarray):
        assert np.array_equal(got, expected)
    elif isinstance(expected, dict):
        assert got["src"] == src and got["k"] == k
        assert np.array_equal(got["grid"], expected["grid"])
    elif isinstance(expected, list):
        assert got[:2] == [src, k] and np.array_equal(got[2][0], expected[2][0])
    else:
        assert got == expected


def test_all_to_all_mixed_objects_and_arrays_in_fifo_order(geode: Geode) -> None:
    per_pair = 25
    n = len(geode.nodes)
    for src in geode.local_nodes:
        for dest in geode.nodes:
            for k in range(per_pair):
                geode.isend(payload(geode.nodes.index(src), k), src, dest)
    for node in geode.local_nodes:
        next_k = dict.fromkeys(range(n), 0)
        for _ in range(n * per_pair):
            msg = geode.receive(node, timeout=TIMEOUT)
            src = geode.nodes.index(msg.source)
            assert msg.dest == node
            assert msg.seq == next_k[src], f"{msg.source}->{node} out of order"
            check(msg, src, next_k[src])
            next_k[src] += 1
        assert all(count == per_pair for count in next_k.values())
        assert geode.try_receive(node) is None


def test_simultaneous_64mib_exchange_both_ways(geode: Geode) -> None:
    n = len(geode.nodes)
    size = 64 * 2**20 // 8
    for node in geode.local_nodes:
        me = geode.nodes.index(node)
        partner = me ^ 1 if (me ^ 1) < n else me
        data = np.arange(size, dtype=np.float64) + me
        geode.send(data, node, partner, timeout=TIMEOUT)  # both sides send before receiving
    for node in geode.local_nodes:
        me = geode.nodes.index(node)
        partner = me ^ 1 if (me ^ 1) < n else me
        got = geode.receive(node, timeout=TIMEOUT).data
        assert got.shape == (size,) and got[0] == partner and got[-1] == size - 1 + partner
        assert got.flags.writeable


@pytest.mark.parametrize("case", range(len(array_cases())), ids=[c[0] for c in array_cases()])
def test_arrays_arrive_bit_exact_and_writable(geode: Geode, case: int) -> None:
    name, array = array_cases()[case]
    n = len(geode.nodes)
    for node in geode.local_nodes:
        right = (geode.nodes.index(node) + 1) % n
        geode.send(array, node, right, timeout=TIMEOUT)
        geode.send({"nested": [array, (array,)]}, node, right, timeout=TIMEOUT)
    for node in geode.local_nodes:
        alone = geode.receive(node, timeout=TIMEOUT).data
        nested = geode.receive(node, timeout=TIMEOUT).data["nested"]
        for got in (alone, nested[0], nested[1][0]):
            assert got.dtype == array.dtype, name
            assert got.shape == array.shape, name
            assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(array).tobytes()
            assert got.flags.writeable, name
            if array.flags.f_contiguous and array.ndim > 1 and not array.flags.c_contiguous:
                assert got.flags.f_contiguous, "Fortran order is kept"


def test_subclass_round_trip_with_metadata_and_headers(geode: Geode) -> None:
    n = len(geode.nodes)
    before = time.time()
    for node in geode.local_nodes:
        right = geode.nodes[(geode.nodes.index(node) + 1) % n]
        msg = Point(np.arange(4), label=f"from {node}", weight=2.5)
        msg.headers["step"] = 7
        handle = geode.send(msg, node, right)
        assert handle.local and handle.seq == 0
    ids = set()
    for node in geode.local_nodes:
        left = geode.nodes[(geode.nodes.index(node) - 1) % n]
        got = geode.receive(node, timeout=TIMEOUT)
        assert isinstance(got, Point) and got.type == "Point"
        assert got.label == f"from {left}" and got.weight == 2.5
        assert got.headers == {"step": 7}
        assert got.source == left and got.dest == node and got.seq == 0
        assert before - 5 <= got.timestamp <= time.time() + 5
        ids.add(got.id)
    assert len(ids) == len(geode.local_nodes)


def test_receive_filters_by_source_and_type(geode: Geode) -> None:
    n = len(geode.nodes)
    for node in geode.local_nodes:
        right = geode.nodes[(geode.nodes.index(node) + 1) % n]
        geode.send("plain", node, right)
        geode.send(Point(1, "x"), node, right)
    for node in geode.local_nodes:
        left = geode.nodes[(geode.nodes.index(node) - 1) % n]
        assert isinstance(geode.receive(node, type=Point, timeout=TIMEOUT), Point)
        assert geode.receive(node, source=left, type="Message", timeout=TIMEOUT).data == "plain"


def test_errors_are_clear(geode: Geode) -> None:
    with pytest.raises(UnknownNodeError, match="unknown dest 'node99': this job has nodes"):
        geode.send(1, dest="node99")
    with pytest.raises(ReceiveTimeout, match=r"timed out after 0\.05 s|none can arrive") as info:
        geode.receive(timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(EncodeError, match="cannot send message data of type builtins.generator"):
        geode.send((x for x in range(3)), dest=geode.node)
    geode.send("after the failed one", dest=geode.node)
    assert geode.receive(timeout=TIMEOUT).seq == 0, "the failed send used no sequence number"
    # A float (or bool) equal to the index of a node sent to before is refused as 1.5 is,
    # not found under that index by the send paths' caches (dest=1.0 went to node1).
    geode.send("by index", dest=geode.rank)
    for wrong in (float(geode.rank), np.float64(geode.rank), bool(geode.rank)):
        refused = rf"unknown dest {re.escape(repr(wrong))} \(a "
        with pytest.raises(UnknownNodeError, match=refused):
            geode.send("wrong", dest=wrong)  # type: ignore[arg-type]
        with pytest.raises(UnknownNodeError, match=refused):
            geode.isend("wrong", dest=wrong)  # type: ignore[arg-type]
    assert geode.receive(timeout=TIMEOUT).data == "by index"
    assert geode.try_receive() is None, "a wrong dest sent nothing"
    others = [node for node in geode.nodes if not geode.hosts(node)]
    if others:  # size > 1: a node on another rank
        with pytest.raises(NodeNotLocalError, match=f"lives on rank {geode.rank_of(others[0])}"):
            geode.receive(others[0], timeout=1)
    else:
        assert set(geode.local_nodes) == set(geode.nodes)


def test_use_after_close() -> None:
    g = Geode()
    g.send("kept", dest=g.node)
    g.close(timeout=TIMEOUT)
    assert g.receive().data == "kept", "queued messages stay receivable after close"
    with pytest.raises(ClosedError, match="send"):
        g.send("late", dest=g.node)
    with pytest.raises(ClosedError, match="receive"):
        g.receive(timeout=1)


def test_acknowledged_messages_stay_receivable_after_close() -> None:
    """Messages sent with ack=True, taken after every rank closed: their acks are not sent (the
    senders closed, the transport is gone) and the takes do not fail."""
    g = Geode()
    peer = g.nodes[(g.rank + 1) % g.size]
    g.isend("acked", dest=peer, ack=True)
    if g.size > 1:  # a sender that waited for its ack in vain: the message stays in flight
        # (or is told at once that its peer, already in close(), has no handler for it)
        with pytest.raises((GeodeTimeoutError, NotProcessed)) as err:
            g.send("waited", dest=peer, ack=True, timeout=0.2)
        assert not isinstance(err.value, NotProcessed) or err.value.why == "closing"
    g.close(timeout=TIMEOUT)
    assert g.receive().data == "acked"
    if g.size > 1:
        assert g.receive().data == "waited"
    assert g.try_receive() is None


def test_an_acknowledged_message_that_expires_after_close_is_dropped_quietly() -> None:
    """Its expiry tells its sender nothing after close (the transport is gone)."""
    g = Geode()
    peer = g.nodes[(g.rank + 1) % g.size]
    g.isend("short-lived", dest=peer, ack=True, ttl=0.2)
    g.close(timeout=TIMEOUT)
    time.sleep(0.4)  # (not a wait for a message: letting its ttl run out in the queue)
    assert g.try_receive() is None


def test_pickled_objects_keep_identity_of_shared_arrays(geode: Geode) -> None:
    shared = np.arange(1000.0)
    obj = {"a": shared, "b": shared, "view": shared[::10]}
    geode.send(obj, dest=geode.node)
    got = geode.receive(timeout=TIMEOUT).data
    assert got["a"] is got["b"]
    assert np.array_equal(got["view"], shared[::10])
    assert pickle.loads(pickle.dumps(got))["a"].sum() == shared.sum()


def test_a_close_that_timed_out_can_be_retried() -> None:
    g = Geode()
    if g.size > 1:
        from mpi4py import MPI

        if g.rank == 0:  # the others reach close() only after this one has given up
            timed_out = r"close\(\) on rank 0 timed out after 0.2 s"
            with pytest.raises(GeodeTimeoutError, match=timed_out):
                g.close(timeout=0.2)
            with pytest.raises(ClosedError, match="send"):
                g.send("too late", dest=g.node)
        MPI.COMM_WORLD.Barrier()
    g.close(timeout=TIMEOUT)
    assert g.closed


def test_a_message_refused_whole_leaves_the_next_one_intact(
    geode: Geode, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geode_mpi.transport import envelope

    right = geode.nodes[(geode.rank + 1) % geode.size]
    big = {"array": np.zeros(10_000), "text": "x" * 500}  # an out-of-band frame, large meta
    monkeypatch.setattr(envelope, "_U32_MAX", 300)  # stands for 4 GiB, to keep the test small
    if geode.hosts(right):  # one process: no envelope, no limit
        geode.send(big, dest=right)
        assert geode.receive(right, timeout=TIMEOUT).data["text"] == "x" * 500
    else:
        with pytest.raises(EncodeError, match="an envelope holds at most 4 GiB"):
            geode.send(big, dest=right)
    monkeypatch.undo()
    geode.send(np.full(5000, 7.0), dest=right)
    got = geode.receive(timeout=TIMEOUT)
    assert got.seq == (1 if geode.hosts(right) else 0)
    assert np.array_equal(got.data, np.full(5000, 7.0))
