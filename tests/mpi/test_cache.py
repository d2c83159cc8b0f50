"""The payload cache over MPI: a shared array sent again to a rank moves a reference only."""

from __future__ import annotations

import time

import numpy as np
import pytest

from geode_mpi import EncodeError, Geode, QueueConfig, ReceiveTimeout, share

TIMEOUT = 60.0
MIB = 2**20


def ring(geode: Geode) -> tuple[str, str]:
    """This rank's node, the next rank's (it sends there) and the previous one's."""
    nodes = geode.nodes
    return nodes[(geode.rank + 1) % geode.size], nodes[(geode.rank - 1) % geode.size]


def test_second_send_of_16_mib_moves_under_1_kib(geode: Geode) -> None:
    after, before = ring(geode)
    array = share(np.full(2 * MIB, float(geode.rank)))  # 16 MiB
    moved = []
    for _ in range(2):
        start = geode.cache_stats().wire_bytes
        handle = geode.isend(array, geode.node, after)
        got = geode.receive(geode.node, source=before, timeout=TIMEOUT).data
        handle.wait(timeout=TIMEOUT)
        moved.append(geode.cache_stats().wire_bytes - start)
        assert got.shape == array.shape and np.all(got == float(geode.rank - 1) % geode.size)
        assert not got.flags.writeable
    assert moved[0] >= 16 * MIB
    assert moved[1] < 1024, f"rank {geode.rank}: the second send moved {moved[1]} bytes"
    assert geode.cache_stats().kept_bytes == 16 * MIB


def test_slices_of_a_held_shared_array_move_as_references(geode: Geode) -> None:
    """Rows and a float32 tail of a shared array the next rank holds: each arrives equal to
    the slice, read-only, and moves under 1 KiB."""
    after, before = ring(geode)
    field = share(np.arange(2 * MIB, dtype=np.float32).reshape(1024, 2048) + geode.rank)
    theirs = (
        np.arange(2 * MIB, dtype=np.float32).reshape(1024, 2048) + (geode.rank - 1) % geode.size
    )
    parts = [(slice(None),), (slice(10, 500),), (slice(1000, None), slice(None))]
    for index in parts:
        start = geode.cache_stats().wire_bytes
        handle = geode.isend({"part": field[index]}, geode.node, after)
        got = geode.receive(geode.node, source=before, timeout=TIMEOUT).data["part"]
        handle.wait(timeout=TIMEOUT)
        moved = geode.cache_stats().wire_bytes - start
        assert np.array_equal(got, theirs[index]) and not got.flags.writeable
        if index != parts[0]:
            assert moved < 1024, f"rank {geode.rank}: {index} moved {moved} bytes"
    assert geode.cache_stats().hits == 2


def test_shared_and_plain_messages_keep_their_order_all_to_all(geode: Geode) -> None:
    shared = share(np.arange(100_000, dtype=np.int64) + geode.rank)
    rounds = 3
    peers = geode.nodes[: geode.size]  # one node per rank (the embedded world has more)
    for k in range(rounds):
        for dest in peers:
            geode.send({"k": k, "grid": shared}, geode.node, dest)
            geode.send(np.full(20_000, k), geode.node, dest)  # 160 kB, not shared
    for source in range(geode.size):
        for k in range(rounds):
            got = geode.receive(geode.node, source=peers[source], timeout=TIMEOUT).data
            assert got["k"] == k and np.array_equal(got["grid"], np.arange(100_000) + source)
            plain = geode.receive(geode.node, source=peers[source], timeout=TIMEOUT).data
            assert np.array_equal(plain, np.full(20_000, k))
    stats = geode.cache_stats()
    assert (stats.stores, stats.hits) == (geode.size, geode.size * (rounds - 1))


def test_eviction_at_the_budget_and_what_each_side_holds() -> None:
    with Geode(cache_bytes=3 * MIB) as geode:
        after, before = ring(geode)
        arrays = [share(np.full(MIB // 8, 10.0 * k + geode.rank)) for k in range(4)]  # 1 MiB
        order = [0, 1, 2, 3, 0, 2, 1]  # 3 evicts 0; 0 evicts 1; 2 is a hit; 1 evicts 3
        hits = []
        for k in order:
            start = geode.cache_stats().hits
            geode.send(arrays[k], geode.node, after)
            got = geode.receive(geode.node, source=before, timeout=TIMEOUT).data
            assert np.all(got == 10.0 * k + (geode.rank - 1) % geode.size)
            hits.append(geode.cache_stats().hits - start)
        assert hits == [0, 0, 0, 0, 0, 1, 0]
        stats = geode.cache_stats()
        assert stats.evictions == 3 and stats.held_bytes == 3 * MIB == stats.kept_bytes


def test_a_shared_array_made_writable_again_is_refused(geode: Geode) -> None:
    after, before = ring(geode)
    shared = share(np.zeros(MIB // 8))
    geode.send(shared, geode.node, after)
    geode.receive(geode.node, source=before, timeout=TIMEOUT)
    shared.base.flags.writeable = True
    with pytest.raises(EncodeError, match="made writable again"):
        geode.send(shared, geode.node, after)


def wait_for_copies(geode: Geode, count: int = 2) -> None:
    """Receive nothing until ``count`` resent copies were dropped as duplicates here (under
    load the peer's resends may take longer than one short wait; CI's network-path leg once
    saw none in 0.3 s at load 15), at most `TIMEOUT`; at once on one rank."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        with pytest.raises(ReceiveTimeout):
            geode.receive(geode.node, timeout=0.3)
        if geode.size == 1 or geode.stats().duplicates >= count or time.monotonic() > deadline:
            return


def test_resent_messages_that_refer_to_a_shared_array_resolve() -> None:
    explicit = QueueConfig(ack="explicit")
    with Geode(resend_after=0.02, queue=explicit) as geode:
        after, before = ring(geode)
        shared = share(np.full(MIB // 8, float(geode.rank)))
        for _ in range(2):  # a store, then a reference: both resent until acknowledged
            geode.send(shared, geode.node, after)
        got = [geode.receive(geode.node, source=before, timeout=TIMEOUT) for _ in range(2)]
        wait_for_copies(geode)  # meanwhile the copies come again, and are dropped
        for message in got:
            assert np.all(message.data == float((geode.rank - 1) % geode.size))
            message.ack()
        if geode.size == 1:  # one rank: that receive raised at once (nothing can arrive)
            return
        stats = geode.stats()
        assert stats.resent >= 2 and stats.duplicates >= 2, stats
        assert geode.cache_stats().hits >= 2  # every resend of a held array: a reference


def test_reordered_views_of_a_shared_array_arrive_with_their_own_values(geode: Geode) -> None:
    """Views of a shared array that start at its memory and span its bytes in another order
    (transposed, swapped axes, broadcast, reversed) were taken for the shared array: the next
    rank got the shared array's bytes read with the view's shape, and a view sent first
    stored its bytes under the shared array's id, so the array itself then arrived wrong.
    Each view now travels in full; a Fortran-order view (its bytes in order) is a reference."""
    after, before = ring(geode)

    def arrays(rank: int) -> tuple[np.ndarray, np.ndarray]:
        field = np.arange(2 * 3 * 4000, dtype=np.float64).reshape(2, 3, 4000) + rank
        return field, np.arange(100_000, dtype=np.float64) * (rank + 1)

    field, row = (share(array) for array in arrays(geode.rank))
    their_field, their_row = arrays((geode.rank - 1) % geode.size)

    def views(field: np.ndarray, row: np.ndarray) -> list[np.ndarray]:
        return [
            field.transpose(1, 0, 2),
            np.swapaxes(field, 0, 1),
            np.broadcast_to(row[:50_000], (2, 50_000)),
            field[::-1],
            field,
            row,
            field.transpose(1, 0, 2),
            np.broadcast_to(row[:50_000], (2, 50_000)),
            field.T,  # Fortran order: the shared array's bytes in order
            field,
            row,
        ]

    for sent, expected in zip(views(field, row), views(their_field, their_row), strict=True):
        handle = geode.isend(sent, geode.node, after)
        got = geode.receive(geode.node, source=before, timeout=TIMEOUT).data
        handle.wait(timeout=TIMEOUT)
        assert got.shape == expected.shape and np.array_equal(got, expected), (
            f"rank {geode.rank}: a view of shape {sent.shape} arrived with other values"
        )
    stats = geode.cache_stats()
    assert (stats.stores, stats.hits) == (2, 3), stats


def test_a_received_shared_array_cannot_be_made_writable(geode: Geode) -> None:
    """``flags.writeable = True`` succeeded on a received shared array (a view of the rank's
    writable receive buffer; over MPI a uint8 or float64 one, in the embedded world a uint8
    one), and a write then changed what the next send of that shared array delivered."""
    after, before = ring(geode)
    for dtype in (np.uint8, np.float64):
        shared = share((np.arange(200_000) + geode.rank).astype(dtype))
        theirs = (np.arange(200_000) + (geode.rank - 1) % geode.size).astype(dtype)
        for _ in range(2):
            handle = geode.isend(shared, geode.node, after)
            got = geode.receive(geode.node, source=before, timeout=TIMEOUT).data
            handle.wait(timeout=TIMEOUT)
            assert np.array_equal(got, theirs)
            with pytest.raises(ValueError, match="WRITEABLE"):
                got.flags.writeable = True
            with pytest.raises(ValueError, match="WRITEABLE"):
                got[10:].flags.writeable = True
    assert geode.cache_stats().hits == 2
