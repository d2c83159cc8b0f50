"""Large topic arrays through the node's shared segment (transport/shared.py): values, read-only
views, slots released and reused, a full segment falling back, checkpoints, close, and a job
split into several "nodes" (``GEODE_SHARED_NODE_RANKS``) where only some members share."""

from __future__ import annotations

import gc
import os
import shutil
import struct
import threading
import time
from typing import Any

import numpy as np
import pytest
from test_checkpoints import barrier, shared_directory

from geode_mpi import DecodeError, Geode, Message
from geode_mpi.transport import open_world
from geode_mpi.transport.envelope import build_envelope
from geode_mpi.transport.paths import network_within_host
from geode_mpi.transport.shared import (
    BYTES_VARIABLE,
    NODE_VARIABLE,
    SHARED_MIN,
    SLOTS,
    TAG_SHARED,
)

TIMEOUT = 60.0
LARGE = SHARED_MIN + 8 * 4096 + 24  # not a whole number of pages


# Over the network path within a host (MPIR_CVAR_NOLOCAL=1: the mpich-net CI leg) every rank is
# a node of its own, so no segment is made: the same on every rank. The path's own fan-out is
# tested in test_relays.py and test_topics.py.
pytestmark = pytest.mark.skipif(
    network_within_host(os.environ), reason="no shared memory on the network path"
)


def shared_of(geode: Geode) -> Any:
    """The MPI transport's node segment (None in the embedded world)."""
    return getattr(geode._runtime.transport, "shared", None)


def big(k: int, nbytes: int = LARGE) -> np.ndarray[Any, Any]:
    return np.arange(nbytes // 8, dtype=np.float64) + k


def subscribe_all(geode: Geode, name: str = "big") -> Any:
    nodes = geode.nodes
    return geode.topic(name, publishers=nodes[:1], subscribers=nodes[1:] or nodes)


def local_subscribers(geode: Geode) -> list[str]:
    """This rank's subscribers of `subscribe_all`'s topic."""
    subscribers = geode.nodes[1:] or geode.nodes
    return [node for node in geode.local_nodes if node in subscribers]


def test_large_arrays_reach_every_subscriber_read_only_and_in_order() -> None:
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    count = 6
    if geode.rank == 0:
        for k in range(count):
            topic.publish({"k": k, "a": big(k), "small": np.arange(5) + k})
            if k % 2:
                topic.publish(Message(("between", k)))
    for node in local_subscribers(geode):
        got = []
        for _ in range(count + count // 2):
            data = geode.receive(node, timeout=TIMEOUT).data
            got.append(data)
        large = [data for data in got if isinstance(data, dict)]
        assert [data["k"] for data in large] == list(range(count))
        assert [d[1] for d in got if isinstance(d, tuple)] == [1, 3, 5]
        for data in large:
            assert np.array_equal(data["a"], big(data["k"]))
            assert np.array_equal(data["small"], np.arange(5) + data["k"])
            if geode.size > 1:  # from another rank of this node: a view of the segment
                assert not data["a"].flags.writeable
                with pytest.raises(ValueError, match="read-only"):
                    data["a"][0] = -1
                mine = data["a"].copy()
                mine[0] = -1  # a copy is the user's own
        del got, large
    shared = shared_of(geode)
    if geode.size > 1 and geode.rank == 0:
        assert shared.shared == count
    geode.close(timeout=TIMEOUT)


@pytest.mark.parametrize("where", ["here", "in a thread"])
def test_released_slots_are_reused_without_falling_back(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A segment with room for two messages carries twenty, one at a time: each subscriber
    lets go of each (itself, or in another thread that held the last reference) before it
    tells the publisher, which publishes the next."""
    monkeypatch.setenv(BYTES_VARIABLE, str(2 * LARGE + 2 * 4096))
    geode = Geode(acks=False)
    nodes = geode.nodes
    topic = subscribe_all(geode)
    rounds = 20
    subscribers = local_subscribers(geode)
    for k in range(rounds):
        if geode.rank == 0:
            topic.publish(big(k))
        for node in subscribers:
            array = geode.receive(node, timeout=TIMEOUT, topic="big").data
            assert array[1] == 1 + k
            if where == "in a thread":
                holder = [array]
                del array
                thread = threading.Thread(target=holder.clear)  # the last reference goes there
                thread.start()
                thread.join(TIMEOUT)
            else:
                del array
            geode.send(Message(("done", k)), node, nodes[0])
        if geode.rank == 0:
            for _ in range(len(nodes) - 1):
                assert geode.receive(nodes[0], timeout=TIMEOUT).data == ("done", k)
    shared = shared_of(geode)
    if shared is not None and shared.enabled and geode.rank == 0:
        assert shared.shared == rounds
        assert shared.slots.full == 0
    geode.close(timeout=TIMEOUT)
    if shared is not None:
        assert shared.held == 0


def test_a_full_segment_falls_back_and_never_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for one message: subscribers that keep every array get the first from the segment
    (read-only), the rest the other way (writable copies of their own), all correct."""
    monkeypatch.setenv(BYTES_VARIABLE, str(LARGE + 4096))
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    count = 4
    if geode.rank == 0:
        for k in range(count):
            topic.publish(big(k))
    kept = []
    for node in local_subscribers(geode):
        kept = [geode.receive(node, timeout=TIMEOUT).data for _ in range(count)]
        for k, array in enumerate(kept):
            assert np.array_equal(array, big(k))
        if geode.size > 1:
            assert [array.flags.writeable for array in kept] == [False] + [True] * (count - 1)
    shared = shared_of(geode)
    if geode.size > 1 and geode.rank == 0:
        assert shared.shared == 1 and shared.slots.full == count - 1
    geode.close(timeout=TIMEOUT)
    del kept


def test_a_view_kept_after_close_stays_readable() -> None:
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    if geode.rank == 0:
        topic.publish(big(3))
    kept = None
    for node in local_subscribers(geode):
        kept = geode.receive(node, timeout=TIMEOUT).data
    geode.close(timeout=TIMEOUT)
    gc.collect()
    if kept is not None:
        assert np.array_equal(kept, big(3))  # the segment stays mapped while a view lives
    del kept
    again = Geode(acks=False)  # a second segment beside the kept one
    topic = subscribe_all(again, "again")
    if again.rank == 0:
        topic.publish(big(4))
    for node in local_subscribers(again):
        assert np.array_equal(again.receive(node, timeout=TIMEOUT).data, big(4))
    again.close(timeout=TIMEOUT)


def test_a_checkpoint_holds_the_data_of_shared_messages() -> None:
    """Messages still queued in the segment are saved as data: the restart reads them from
    the file, in a job whose segment is new and empty."""
    with Geode() as probe:
        size = probe.size
    directory = shared_directory(size)
    try:
        first = Geode(checkpoint_dir=directory)
        topic = subscribe_all(first)
        if first.rank == 0:
            for k in range(3):
                topic.publish(big(k))
        first.checkpoint()
        first.close(timeout=TIMEOUT)
        del first, topic
        second = Geode(checkpoint_dir=directory, restart=True)
        subscribe_all(second)
        for node in local_subscribers(second):
            got = [second.receive(node, timeout=TIMEOUT, topic="big").data for _ in range(3)]
            for k, array in enumerate(got):
                assert np.array_equal(array, big(k))
            del got
        second.close(timeout=TIMEOUT)
    finally:
        barrier(size)
        shutil.rmtree(directory, ignore_errors=True)


def test_members_on_other_nodes_keep_the_network_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes of two ranks: rank 1 shares rank 0's segment, ranks 2 and up get their own copies
    (relayed or direct), all in order and equal."""
    monkeypatch.setenv(NODE_VARIABLE, "2")
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    count = 4
    if geode.rank == 0:
        for k in range(count):
            topic.publish(big(k, 3 * LARGE))
    for node in local_subscribers(geode):
        got = [geode.receive(node, timeout=TIMEOUT).data for _ in range(count)]
        for k, array in enumerate(got):
            assert np.array_equal(array, big(k, 3 * LARGE))
            assert array.flags.writeable == (geode.rank != 1)
        del got
    shared = shared_of(geode)
    if geode.rank == 0 and geode.size > 1:
        assert shared.shared == count
        assert sorted(shared.local) == [1]
    if geode.size > 1:  # nodes of ranks (0, 1), (2, 3), ...: node rank 0 and 1
        partner = geode.rank ^ 1
        assert shared.local == ({partner: partner % 2} if partner < geode.size else {})
    geode.close(timeout=TIMEOUT)


def test_a_damaged_or_foreign_notice_is_refused() -> None:
    """A notice with another magic, a slot out of range, or a frame outside the root's part
    is a DecodeError, never a view of memory it does not name."""
    transport = open_world()
    size = transport.size
    transport.open_stream(900, 0, list(range(1, size)))  # the segment, if any, opens here
    shared = getattr(transport, "shared", None)
    if shared is not None and shared.enabled:
        comm = transport.comm  # type: ignore[attr-defined]
        envelope = build_envelope(b"m" * 64, [np.zeros(SHARED_MIN, np.uint8)], 16 * 1024)[0]
        far = shared.budget - 4096
        bad = [
            (b"XXXX", 0, [0], "damaged"),
            (b"GDSH", SLOTS, [0], "damaged"),
            (b"GDSH", 0, [far], "outside its segment"),
        ]
        for magic, slot, offsets, error in bad:
            comm.Barrier()
            if transport.rank == 0:
                prefix = struct.pack("<4sii", magic, slot, len(offsets))
                prefix += struct.pack(f"<{len(offsets)}q", *offsets)
                comm.Send(prefix + bytes(-len(prefix) % 16) + envelope, 1, TAG_SHARED)
                transport.sent_to[1] += 1  # type: ignore[attr-defined]
            elif transport.rank == 1:
                with pytest.raises(DecodeError, match=error):
                    deadline = time.monotonic() + TIMEOUT
                    while time.monotonic() < deadline:
                        transport.progress()
    transport.close_stream(900, timeout=TIMEOUT)
    transport.close(timeout=TIMEOUT)
