"""Large topic arrays through the node's shared segment (transport/shared.py): values, read-only
views, slots released and reused, a full segment falling back, checkpoints, close, and a job
split into several "nodes" (``GEODE_SHARED_NODE_RANKS``) where only some members share."""

from __future__ import annotations

import errno
import gc
import os
import shutil
import struct
import threading
import time
import tracemalloc
import warnings
from typing import Any

import numpy as np
import pytest
from mpi4py import MPI
from test_checkpoints import barrier, shared_directory

from geode_mpi import DecodeError, Geode, GeodeTimeoutError, Message
from geode_mpi.transport import open_world
from geode_mpi.transport.envelope import build_envelope
from geode_mpi.transport.paths import network_within_host
from geode_mpi.transport.shared import (
    BYTES_VARIABLE,
    NODE_VARIABLE,
    SHARED_MIN,
    TAG_SHARED,
)
from geode_mpi.transport.slots import SLOTS

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


def zero_copy_big(geode: Geode, k: int, nbytes: int = LARGE) -> np.ndarray[Any, Any]:
    """`big` in a zero-copy array (transport/sealed.py, `NodeShare.lease`)."""
    array = geode.zero_copy_array(nbytes // 8)
    array[:] = big(k, nbytes)
    return array


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


@pytest.mark.parametrize("where", ["here", "in a thread", "zero-copy"])
def test_released_slots_are_reused_without_falling_back(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A segment with room for two messages carries twenty, one at a time: each subscriber
    lets go of each (itself, or in another thread that held the last reference) before it
    tells the publisher, which publishes the next. A zero-copy array's slot is free once its
    readers and the publisher (which keeps no reference here) let go."""
    monkeypatch.setenv(BYTES_VARIABLE, str(2 * LARGE + 2 * 4096))
    geode = Geode(acks=False)
    nodes = geode.nodes
    topic = subscribe_all(geode)
    rounds = 20
    subscribers = local_subscribers(geode)
    for k in range(rounds):
        if geode.rank == 0:
            topic.publish(zero_copy_big(geode, k) if where == "zero-copy" else big(k))
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
        assert shared.slots.full == 0 and shared.fallbacks == 0
        assert shared.zero_copy == (rounds if where == "zero-copy" else 0)
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


@pytest.mark.parametrize("zero_copy", [False, True])
def test_a_checkpoint_holds_the_data_of_shared_messages(zero_copy: bool) -> None:
    """Messages still queued in the segment (copied there, or published from a zero-copy
    array) are saved as data: the restart reads them from the file, in a job whose segment is
    new and empty."""
    with Geode() as probe:
        size = probe.size
    directory = shared_directory(size)
    try:
        first = Geode(checkpoint_dir=directory)
        topic = subscribe_all(first)
        if first.rank == 0:
            for k in range(3):
                topic.publish(zero_copy_big(first, k) if zero_copy else big(k))
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


@pytest.mark.parametrize("zero_copy", [False, True])
def test_members_on_other_nodes_keep_the_network_path(
    monkeypatch: pytest.MonkeyPatch, zero_copy: bool
) -> None:
    """Nodes of two ranks: rank 1 shares rank 0's segment, ranks 2 and up get their own copies
    (relayed or direct, from the zero-copy array's memory too), all in order and equal."""
    monkeypatch.setenv(NODE_VARIABLE, "2")
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    count = 4
    if geode.rank == 0:
        for k in range(count):
            array = zero_copy_big(geode, k, 3 * LARGE) if zero_copy else big(k, 3 * LARGE)
            topic.publish(array)
            del array
    for node in local_subscribers(geode):
        got = [geode.receive(node, timeout=TIMEOUT).data for _ in range(count)]
        for k, array in enumerate(got):
            assert np.array_equal(array, big(k, 3 * LARGE))
            assert array.flags.writeable == (geode.rank > 1)  # (rank 0: its own, sealed)
        del got
    shared = shared_of(geode)
    if geode.rank == 0 and geode.size > 1:
        assert shared.shared == count and shared.zero_copy == (count if zero_copy else 0)
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
    transport.open_streams([(900, 0)], list(range(1, size)))  # the segment, if any, opens here
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


# -- zero-copy arrays: made in the publisher's part of the segment, published with no copy ------


def test_a_zero_copy_array_reaches_the_node_without_a_copy_and_is_handed_over() -> None:
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    count = 3
    shared = shared_of(geode)
    if geode.rank == 0:
        for k in range(count):
            array = zero_copy_big(geode, k)
            topic.publish({"k": k, "a": array})
            assert not array.flags.writeable  # handed over, on every path
            with pytest.raises(ValueError, match="read-only"):
                array[0] = -1
        if shared is not None:
            assert (shared.leased, shared.zero_copy, shared.shared) == (count, count, count)
            assert shared.fallbacks == 0
    for node in local_subscribers(geode):
        got = [geode.receive(node, timeout=TIMEOUT).data for _ in range(count)]
        for k, data in enumerate(got):
            assert data["k"] == k and np.array_equal(data["a"], big(k))
            assert not data["a"].flags.writeable  # a view: of the segment, or sealed here
        del got
    geode.close(timeout=TIMEOUT)


@pytest.mark.parametrize("zero_copy", [False, True])
def test_a_strided_array_is_copied_once_straight_into_the_segment(zero_copy: bool) -> None:
    """Every other element of an array (and of a zero-copy array: a strided view of it is not
    the array handed over) reaches the node's subscribers in order and read-only; the publish
    makes no contiguous copy of it first (it did: two copies instead of one)."""
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    nbytes = 2 * LARGE
    whole = zero_copy_big(geode, 3, nbytes) if zero_copy else big(3, nbytes)
    strided = whole[::2]
    shared = shared_of(geode)
    if geode.rank == 0:
        # (bare: now and then the codec tries C pickle on a dict, which copies a strided
        # array in band before it finds the array and takes its general path)
        topic.publish(strided).wait()
        tracemalloc.start()
        topic.publish(strided).wait()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if shared is not None and shared.enabled and len(shared.local) == geode.size - 1:
            assert shared.shared == 2 and shared.zero_copy == 0
            assert peak < strided.nbytes // 2, f"the publish allocated {peak} bytes"
    for node in local_subscribers(geode):
        for _ in range(2):
            data = geode.receive(node, timeout=TIMEOUT).data
            assert data.dtype == strided.dtype and np.array_equal(data, strided)
            if geode.size > 1:
                assert not data.flags.writeable
            del data
    geode.close(timeout=TIMEOUT)


def test_a_zero_copy_array_published_again_while_held_is_copied() -> None:
    """The same array twice while the readers still hold the first: the second is copied
    into a slot of its own (never two notices of one slot to a reader at once)."""
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    if geode.rank == 0:
        array = zero_copy_big(geode, 5)
        topic.publish(array)
        topic.publish(array)
        shared = shared_of(geode)
        if shared is not None:
            assert shared.shared == 2 and shared.zero_copy == 1
        del array
    for node in local_subscribers(geode):
        first, second = (geode.receive(node, timeout=TIMEOUT).data for _ in range(2))
        assert np.array_equal(first, big(5)) and np.array_equal(second, big(5))
        del first, second
    geode.close(timeout=TIMEOUT)


def test_a_full_segment_gives_ordinary_memory_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Room for one array: the second is ordinary memory (a RuntimeWarning, once, and a
    count), published by a copy, handed over all the same."""
    monkeypatch.setenv(BYTES_VARIABLE, str(LARGE + 4096))
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    shared = shared_of(geode)
    if geode.rank == 0:
        first = zero_copy_big(geode, 0)
        segment = shared is not None and shared.enabled
        if segment:
            with pytest.warns(RuntimeWarning, match="has no room for"):
                second = zero_copy_big(geode, 1)
        else:
            second = zero_copy_big(geode, 1)
        topic.publish(first)
        topic.publish(second)
        assert not second.flags.writeable
        if segment:
            assert shared.fallbacks == 1 and shared.zero_copy == 1
        del first, second
    for node in local_subscribers(geode):
        for k in range(2):
            assert np.array_equal(geode.receive(node, timeout=TIMEOUT).data, big(k))
    geode.close(timeout=TIMEOUT)


@pytest.mark.parametrize("case", ["before the first topic", "GEODE_SHARED_BYTES=0"])
def test_without_a_segment_a_zero_copy_array_is_ordinary_memory(
    monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    if case != "before the first topic":
        monkeypatch.setenv(BYTES_VARIABLE, "0")
    geode = Geode(acks=False)
    shared = shared_of(geode)
    early = None
    if geode.rank == 0 and case == "before the first topic":
        if shared is not None:  # the segment comes with the first topic
            with pytest.warns(RuntimeWarning, match="made at the first topic"):
                early = zero_copy_big(geode, 0)
        else:
            early = zero_copy_big(geode, 0)
    topic = subscribe_all(geode)
    if geode.rank == 0:
        array = early if early is not None else zero_copy_big(geode, 0)
        topic.publish(array)
        assert not array.flags.writeable
        if shared is not None:
            assert shared.fallbacks == 1 and shared.zero_copy == 0
        del array, early
    for node in local_subscribers(geode):
        assert np.array_equal(geode.receive(node, timeout=TIMEOUT).data, big(0))
    geode.close(timeout=TIMEOUT)


def test_a_zero_copy_array_kept_after_close_stays_usable() -> None:
    """A live zero-copy array keeps the segment mapped past close(); a new Geode's segment
    does not take it for one of its own (its publish copies it)."""
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    kept = zero_copy_big(geode, 2)
    geode.close(timeout=TIMEOUT)
    gc.collect()
    kept[0] = 42.0  # not published: still writable, still mapped
    assert kept[1] == big(2)[1]
    again = Geode(acks=False)
    topic = subscribe_all(again, "again")
    if again.rank == 0:
        topic.publish(kept)
        shared = shared_of(again)
        if shared is not None and shared.enabled:
            assert shared.zero_copy == 0 and shared.shared == 1
    expected = big(2)
    expected[0] = 42.0
    for node in local_subscribers(again):
        assert np.array_equal(again.receive(node, timeout=TIMEOUT).data, expected)
    del kept
    again.close(timeout=TIMEOUT)


# -- the notice goes before the copy: a reader that takes it first waits for the owner's copy ----


def notice_pair(transport: Any) -> Any:
    """The transport's segment when ranks 0 and 1 share one (the same answer on every rank)."""
    shared = getattr(transport, "shared", None)
    if shared is None:  # the embedded world: no MPI, no segment
        return None
    paired = bool(shared.enabled and 1 in shared.local)
    together: bool = transport.comm.bcast(paired if transport.rank == 0 else None, root=0)
    return shared if together else None


def test_a_notice_taken_before_its_copy_waits_for_the_copy() -> None:
    """The owner sends a notice, then copies (`NodeShare.fill`): rank 1 takes the notice while
    rank 0 still holds the copy back, and its message holds the copied bytes, never the slot's
    stale ones."""
    transport = open_world()
    transport.open_streams([(901, 0)], list(range(1, transport.size)))
    shared = notice_pair(transport)
    got: list[np.ndarray[Any, Any]] = []
    if shared is not None:
        comm = transport.comm  # type: ignore[attr-defined]
        transport.attach(lambda rank, meta, frames, nbytes: got.append(np.array(frames[0])))
        for count, value in enumerate((7, 9), start=1):  # the second: the slot holds 7s
            comm.Barrier()
            if transport.rank == 0:
                frame = np.full(SHARED_MIN, value, np.uint8)
                envelope, oob = build_envelope(b"m" * 64, [frame], 16 * 1024)
                notice = shared.place([1], oob, envelope)
                comm.Ssend(notice, 1, TAG_SHARED)  # returns once rank 1 has matched it
                transport.sent_to[1] += 1  # type: ignore[attr-defined]
                time.sleep(0.2)  # (not waiting for a message: holding the copy back)
                shared.fill()
            elif transport.rank == 1:
                deadline = time.monotonic() + TIMEOUT
                while len(got) < count and time.monotonic() < deadline:
                    transport.progress()
            gc.collect()  # (the views go: the slot is free for the second notice)
    transport.close_stream(901, timeout=TIMEOUT)
    transport.close(timeout=TIMEOUT)
    if shared is not None and transport.rank == 1:
        assert [array[0] for array in got] == [7, 9], got
        assert all((array == array[0]).all() for array in got)


def test_a_notice_whose_copy_never_comes_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("geode_mpi.transport.shared.FILL_TIMEOUT", 0.3)
    transport = open_world()
    transport.open_streams([(902, 0)], list(range(1, transport.size)))
    shared = notice_pair(transport)
    raised: list[BaseException] = []
    if shared is not None:
        comm = transport.comm  # type: ignore[attr-defined]
        if transport.rank == 0:
            envelope, oob = build_envelope(b"m" * 64, [np.zeros(SHARED_MIN, np.uint8)], 16 * 1024)
            comm.Send(shared.place([1], oob, envelope), 1, TAG_SHARED)
            transport.sent_to[1] += 1  # type: ignore[attr-defined]
            request = MPI.COMM_WORLD.irecv(source=1, tag=77)
            deadline = time.monotonic() + TIMEOUT
            while not request.Test() and time.monotonic() < deadline:
                time.sleep(0.001)
            shared.fill()
        elif transport.rank == 1:
            deadline = time.monotonic() + TIMEOUT
            try:
                while time.monotonic() < deadline:
                    transport.progress()
            except GeodeTimeoutError as exc:
                raised.append(exc)
            MPI.COMM_WORLD.send("done", 0, tag=77)
    transport.close_stream(902, timeout=TIMEOUT)
    transport.close(timeout=TIMEOUT)
    if shared is not None and transport.rank == 1:
        assert len(raised) == 1 and "did not fill its slot" in str(raised[0])


def test_no_room_in_dev_shm_sends_copies_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/shm without room for a slot's pages (MPI's segment is a sparse file there): the
    copy into them killed the publisher with SIGBUS. The pages are backed first now (madvise
    MADV_POPULATE_WRITE, here standing in for a full /dev/shm): the subscribers get copies,
    with one warning naming /dev/shm, and a zero-copy array is ordinary memory.
    (tests/unit/test_shared_full.py fills a real, small /dev/shm.)"""
    from geode_mpi.transport import shared_populate

    monkeypatch.setattr(shared_populate, "_madvise", lambda address, length: errno.EFAULT)
    monkeypatch.setattr(shared_populate, "_unsupported", False)
    geode = Geode(acks=False)
    topic = subscribe_all(geode)
    shared = shared_of(geode)
    count = 3
    if geode.rank == 0:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for k in range(count):
                topic.publish(big(k))
            topic.publish(zero_copy_big(geode, count))
        texts = [str(w.message) for w in caught if w.category is RuntimeWarning]
        assert [w.filename for w in caught] == [__file__] * len(caught)  # the user's lines
        if shared is not None and shared.enabled:
            assert len(texts) == 2, texts
            assert f"no room in /dev/shm for {LARGE} bytes" in texts[0]
            assert "(EFAULT: Bad address)" in texts[0]
            assert f"/dev/shm has no room for {LARGE} bytes" in texts[1]
            assert (shared.unbacked, shared.shared, shared.fallbacks) == (count + 1, 0, 1)
        else:
            assert texts == []
    for node in local_subscribers(geode):
        for k in range(count + 1):
            array = geode.receive(node, timeout=TIMEOUT).data
            assert np.array_equal(array, big(k))
            assert array.flags.writeable == (geode.size > 1)  # (copies of their own)
    geode.close(timeout=TIMEOUT)


def test_a_full_part_then_a_full_dev_shm_give_a_warning_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Zero-copy arrays: the warning that the part is full came first, and the later one that
    /dev/shm is full (a different remedy) was lost behind the same once-only flag."""
    from geode_mpi.transport import shared_populate

    monkeypatch.setenv(BYTES_VARIABLE, str(2 * LARGE + 2 * 4096))
    geode = Geode(acks=False)
    subscribe_all(geode)
    shared = shared_of(geode)
    if geode.rank == 0:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = zero_copy_big(geode, 0)
            too_big = geode.zero_copy_array(4 * LARGE // 8)  # more than the whole part
            monkeypatch.setattr(shared_populate, "_madvise", lambda address, length: errno.EFAULT)
            monkeypatch.setattr(shared_populate, "_unsupported", False)
            second = zero_copy_big(geode, 1)  # room in the part, none in /dev/shm
        texts = [str(w.message) for w in caught if w.category is RuntimeWarning]
        if shared is not None and shared.enabled:
            assert len(texts) == 2, texts
            assert "this rank's part of the node's shared segment" in texts[0]
            assert f"/dev/shm has no room for {LARGE} bytes" in texts[1]
            assert (shared.leased, shared.fallbacks) == (1, 2)
        else:
            assert texts == []
        assert np.array_equal(second, big(1))
        del first, too_big, second
    geode.close(timeout=TIMEOUT)
