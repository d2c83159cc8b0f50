"""The payload cache on the in-process transport: a shared array sent again moves a reference."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from geode_mpi import CacheStats, DecodeError, EncodeError, Geode, Message, share
from geode_mpi.delivery.cache import (
    BUDGET_VARIABLE,
    CACHE_MIN,
    DEFAULT_BUDGET,
    MARKER,
    PayloadCache,
    budget_of,
    shared_arrays,
)
from geode_mpi.transport import InProcHub

MIB = 2**20
TIMEOUT = 10.0


@pytest.fixture
def pair() -> Iterator[list[Geode]]:
    """Two simulated ranks in one process: node0 on rank 0, node1 on rank 1."""
    hub = InProcHub(2)
    geodes = [Geode(2, transport=hub.endpoint(rank)) for rank in range(2)]
    yield geodes
    for geode in geodes:
        geode.close()


def wire_of_send(sender: Geode, receiver: Geode, data: object, dest: str = "node1") -> int:
    """Bytes the send of ``data`` handed to the transport through the cache, after checking
    that it arrived equal to what was sent."""
    before = sender.cache_stats().wire_bytes
    sender.send(data, "node0", dest)
    got = receiver.receive(dest, timeout=TIMEOUT).data
    if isinstance(data, np.ndarray):
        assert np.array_equal(got, data)
    return sender.cache_stats().wire_bytes - before


def test_second_send_of_16_mib_moves_under_1_kib(pair: list[Geode]) -> None:
    sender, receiver = pair
    array = share(np.random.default_rng(1).random(2 * MIB))  # 16 MiB of float64
    first = wire_of_send(sender, receiver, array)
    second = wire_of_send(sender, receiver, array)
    assert first >= 16 * MIB
    assert second < 1024, f"the second send moved {second} bytes"
    stats = sender.cache_stats()
    assert (stats.hits, stats.saved_bytes, stats.stores) == (1, 16 * MIB, 1)
    assert receiver.cache_stats().kept_bytes == 16 * MIB
    for geode in pair:
        geode.close()
        assert geode.cache_stats().kept_bytes == geode.cache_stats().held_bytes == 0


def test_the_embedded_world_sends_a_shared_array_once() -> None:
    with Geode(2) as geode:
        array = geode.share(np.arange(MIB, dtype=np.int64))
        assert wire_of_send(geode, geode, array) >= 8 * MIB
        assert wire_of_send(geode, geode, array) < 1024
        assert geode.cache_stats().hits == 1


def test_received_shared_arrays_are_read_only_views_of_one_copy(pair: list[Geode]) -> None:
    sender, receiver = pair
    array = share(np.ones((512, 256)))
    got = []
    for _ in range(3):
        sender.send(array, "node0", "node1")
        got.append(receiver.receive("node1", timeout=TIMEOUT).data)
    for data in got:
        assert data.shape == (512, 256) and not data.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            data[0, 0] = 2.0
    assert np.shares_memory(got[1], got[2])  # no copy per receive


def test_a_shared_array_inside_data_and_attributes_is_cached(pair: list[Geode]) -> None:
    sender, receiver = pair
    grid = share(np.arange(100_000, dtype=np.float64))
    for _ in range(2):
        message = Message({"step": 3, "grid": grid, "again": grid})
        message.extra = grid
        sender.send(message, "node0", "node1")
        got = receiver.receive("node1", timeout=TIMEOUT)
        assert got.data["step"] == 3 and got.extra.shape == grid.shape
        for array in (got.data["grid"], got.data["again"], got.extra):
            assert np.array_equal(array, grid)
    stats = sender.cache_stats()
    # Pickle sends "grid" and "again" as one frame, the attribute as another: the first
    # message stores the array for its first frame and uses it for the second.
    assert stats.stores == 1 and stats.hits == 3


def test_share_returns_a_read_only_copy_that_cannot_be_made_writable() -> None:
    original = np.arange(CACHE_MIN, dtype=np.int32)
    shared = share(original)
    assert np.array_equal(shared, original) and not np.shares_memory(shared, original)
    assert share(shared) is shared
    with pytest.raises(ValueError, match="read-only"):
        shared[0] = 7
    with pytest.raises(ValueError):
        shared.flags.writeable = True
    original[0] = 7  # the user's own array stays theirs
    assert shared[0] == 0
    with pytest.raises(TypeError, match="Python objects"):
        share(np.array([object()]))


def test_changed_data_is_never_served_stale(pair: list[Geode]) -> None:
    sender, receiver = pair
    values = np.zeros(CACHE_MIN)
    first = share(values)
    wire_of_send(sender, receiver, first)
    values[:] = 5.0  # the user's array changed: sending it (not shared) moves its bytes
    sender.send(values, "node0", "node1")
    assert receiver.receive("node1", timeout=TIMEOUT).data[0] == 5.0
    second = share(values)  # mutation means sharing anew: a new id, stored in full
    assert wire_of_send(sender, receiver, second) >= values.nbytes
    sender.send(first, "node0", "node1")  # and the old one still means the old bytes
    assert receiver.receive("node1", timeout=TIMEOUT).data[0] == 0.0


def test_a_shared_array_made_writable_through_its_base_is_refused(pair: list[Geode]) -> None:
    sender, receiver = pair
    shared = share(np.zeros(CACHE_MIN))
    wire_of_send(sender, receiver, shared)
    shared.base.flags.writeable = True  # the one way around share()'s protection
    shared.base[0] = 1.0
    with pytest.raises(EncodeError, match="made writable again"):
        sender.send(shared, "node0", "node1")
    assert receiver.try_receive("node1") is None


def test_eviction_keeps_each_pair_within_its_budget() -> None:
    hub = InProcHub(2)
    budget = 40 * MIB
    sender, receiver = (Geode(2, transport=hub.endpoint(r), cache_bytes=budget) for r in (0, 1))
    arrays = [share(np.full(2 * MIB, float(k))) for k in range(3)]  # 16 MiB each
    for array in arrays:
        wire_of_send(sender, receiver, array)
    stats = sender.cache_stats()
    assert stats.evictions == 1 and stats.held_bytes == 32 * MIB <= budget
    assert receiver.cache_stats().kept_bytes == 32 * MIB
    assert wire_of_send(sender, receiver, arrays[2]) < 1024  # still held
    assert wire_of_send(sender, receiver, arrays[0]) >= 16 * MIB  # evicted: sent in full
    stats = sender.cache_stats()
    assert stats.evictions == 2 and stats.held_bytes <= budget
    assert receiver.cache_stats().kept_bytes == stats.held_bytes
    # arrays[1] was the least recently used: evicted to make room for arrays[0]
    assert wire_of_send(sender, receiver, arrays[1]) >= 16 * MIB
    for geode in (sender, receiver):
        geode.close()


def test_an_array_larger_than_the_budget_and_a_budget_of_0_send_in_full() -> None:
    hub = InProcHub(2)
    sender, receiver = (Geode(2, transport=hub.endpoint(r), cache_bytes=MIB) for r in (0, 1))
    big = share(np.ones(MIB))  # 8 MiB > 1 MiB
    for _ in range(2):
        wire_of_send(sender, receiver, big)
    assert sender.cache_stats() == CacheStats(budget=MIB)
    with Geode(2, cache_bytes=0) as off:
        small = share(np.ones(CACHE_MIN))
        for _ in range(2):
            off.send(small, "node0", "node1")
            assert np.array_equal(off.receive("node1", timeout=TIMEOUT).data, small)
        assert off.cache_stats() == CacheStats()
    for geode in (sender, receiver):
        geode.close()


def test_small_shared_arrays_travel_as_usual(pair: list[Geode]) -> None:
    sender, receiver = pair
    small = share(np.ones(CACHE_MIN // 8 - 1))  # one element under CACHE_MIN bytes
    for _ in range(2):
        wire_of_send(sender, receiver, small)
    assert sender.cache_stats().hits == sender.cache_stats().stores == 0


def test_budget_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUDGET_VARIABLE, raising=False)
    assert budget_of(None) == DEFAULT_BUDGET
    assert budget_of(5) == 5
    monkeypatch.setenv(BUDGET_VARIABLE, "1000")
    assert budget_of(None) == 1000
    assert budget_of(0) == 0
    monkeypatch.setenv(BUDGET_VARIABLE, "lots")
    with pytest.raises(ValueError, match="GEODE_CACHE_BYTES must be a number of bytes"):
        budget_of(None)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="cache_bytes must be an int >= 0"):
            budget_of(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cache_bytes"):
        Geode(2, cache_bytes=-1)


def test_a_negative_budget_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GEODE_CACHE_BYTES=-5 was refused as "cache_bytes must be ...", an argument the
    caller never gave."""
    monkeypatch.setenv(BUDGET_VARIABLE, "-5")
    with pytest.raises(
        ValueError, match="^GEODE_CACHE_BYTES must be a number of bytes >= 0, got '-5'$"
    ):
        Geode(2)


def test_a_reference_to_an_id_not_held_is_a_decode_error() -> None:
    sender, receiver = PayloadCache(), PayloadCache()
    shared = share(np.ones(CACHE_MIN))
    sent: list[tuple[bytes, list[np.ndarray]]] = []

    class Capture:
        def send(self, rank: int, meta: bytes, frames: list[np.ndarray], batch: bool) -> None:
            sent.append((meta, list(frames)))

    for _ in range(2):
        sender.send(Capture(), 1, b"codec meta", [shared], False)  # type: ignore[arg-type]
    (meta0, frames0), (meta1, frames1) = sent
    assert meta0[0] == meta1[0] == MARKER and frames1[0].nbytes == 0
    with pytest.raises(DecodeError, match="does not hold"):
        receiver.arrived(0, memoryview(meta1), frames1, len(meta1))
    meta, frames, _ = receiver.arrived(0, memoryview(meta0), frames0, len(meta0))
    assert bytes(meta) == b"codec meta" and np.array_equal(frames[0], shared)
    meta, frames, nbytes = receiver.arrived(0, memoryview(meta1), frames1, len(meta1))
    # what arrived, as the sender counted it (it was the array's bytes, not the prefix)
    assert bytes(meta) == b"codec meta" and nbytes == len(meta1)
    with pytest.raises(DecodeError, match="version"):
        receiver.arrived(0, memoryview(bytes([MARKER, 9]) + bytes(14)), frames1, 16)


def test_the_registry_forgets_arrays_that_are_gone() -> None:
    count = len(shared_arrays)
    shared = share(np.ones(CACHE_MIN))
    assert len(shared_arrays) == count + 1
    del shared
    assert len(shared_arrays) == count


def test_topics_and_work_queues_deliver_shared_arrays(pair: list[Geode]) -> None:
    receiver = pair[1]
    grid = share(np.arange(CACHE_MIN, dtype=np.float64))
    topics = [g.topic("grids", publishers=["node0"], subscribers=["node1"]) for g in pair]
    for _ in range(2):
        topics[0].publish(grid, "node0")
        assert np.array_equal(receiver.receive("node1", timeout=TIMEOUT).data, grid)
    with Geode(3) as geode:  # a work queue's dispatcher on node0, tasks for node1 and node2
        queue = geode.work_queue("jobs", ["node1", "node2"])
        for k in range(4):
            queue.put(grid, "node0")
            task = queue.get(f"node{1 + k % 2}", timeout=TIMEOUT)
            assert task is not None and np.array_equal(task.data, grid)
            assert not task.data.flags.writeable
        # producer -> dispatcher and dispatcher -> consumer: one store, then references only
        stats = geode.cache_stats()
        assert (stats.stores, stats.hits) == (1, 7)


def test_a_received_shared_array_sent_on_moves_once_too(pair: list[Geode]) -> None:
    first, second = pair
    grid = share(np.arange(CACHE_MIN, dtype=np.float64))
    first.send(grid, "node0", "node1")
    passed = second.receive("node1", timeout=TIMEOUT).data  # a view of rank 1's kept copy
    moved = []
    for _ in range(2):
        before = second.cache_stats().wire_bytes
        second.send(passed, "node1", "node0")
        assert np.array_equal(first.receive("node0", timeout=TIMEOUT).data, grid)
        moved.append(second.cache_stats().wire_bytes - before)
    assert moved[0] >= grid.nbytes and moved[1] < 1024


def test_threads_share_and_send_while_another_receives() -> None:
    with Geode(2) as geode:
        count = 40

        def sending(offset: int) -> None:
            arrays = [share(np.full(CACHE_MIN // 8, float(offset + k))) for k in range(4)]
            for k in range(count):
                geode.send(arrays[k % 4], "node0", "node1")

        threads = [threading.Thread(target=sending, args=(10 * t,)) for t in range(2)]
        for thread in threads:
            thread.start()
        got = [geode.receive("node1", timeout=TIMEOUT).data for _ in range(2 * count)]
        for thread in threads:
            thread.join(timeout=TIMEOUT)
        assert sorted(float(data[0]) for data in got) == sorted(
            float(10 * t + k % 4) for t in range(2) for k in range(count)
        )
        assert all(np.all(data == data[0]) and not data.flags.writeable for data in got)
        stats = geode.cache_stats()
        assert (stats.stores, stats.hits) == (8, 2 * count - 8)


def test_bytes_received_are_the_bytes_sent_a_reference_counted_as_it_travelled(
    pair: list[Geode],
) -> None:
    """Before: the receiver counted the shared array a reference stood for (16 MiB each
    time), the sender the reference (a few bytes): `MB in` far above `MB out`."""
    sender, receiver = pair
    field = share(np.zeros(2 * MIB, dtype=np.int64))
    for _ in range(3):
        wire_of_send(sender, receiver, {"field": field})
    sent, received = sender.stats("node0"), receiver.stats("node1")
    assert received.received_bytes == sent.sent_bytes < 17 * MIB


def test_a_shared_array_is_cached_not_compressed_and_the_rest_still_compressed() -> None:
    hub = InProcHub(2)
    sender, receiver = (Geode(2, transport=hub.endpoint(r), compress="lz4") for r in (0, 1))
    counts = share(np.zeros(2 * MIB, dtype=np.int64))  # 16 MiB that LZ4 shrinks to almost 0
    assert wire_of_send(sender, receiver, counts) >= 16 * MIB  # stored in full, uncompressed
    assert wire_of_send(sender, receiver, counts) < 1024
    assert sender.cache_stats().hits == 1
    plain = np.zeros(2 * MIB, dtype=np.int64)  # not shared: compressed, not cached
    before = sender.stats("node0").sent_bytes
    sender.send(plain, "node0", "node1")
    assert np.array_equal(receiver.receive("node1", timeout=TIMEOUT).data, plain)
    assert sender.stats("node0").sent_bytes - before < MIB
    for geode in (sender, receiver):
        geode.close()


def test_a_part_of_a_held_shared_array_moves_as_a_reference(pair: list[Geode]) -> None:
    """A C-contiguous slice of a shared array (rows, a tail) sent to a rank that holds the
    whole array moves a reference to its bytes; before that, and a strided slice always,
    travel in full and are not kept. What arrives is the slice, read-only."""
    sender, receiver = pair
    field = share(np.random.default_rng(2).random((2048, 1024)))  # 16 MiB of float64
    rows, tail, strided = field[100:300], field.reshape(-1)[5:], field[:, ::2]
    assert wire_of_send(sender, receiver, rows) == 0  # (not held yet: not through the cache)
    assert receiver.cache_stats().kept_bytes == 0
    assert wire_of_send(sender, receiver, field) >= field.nbytes
    for part in (rows, tail):
        moved = wire_of_send(sender, receiver, {"step": 1, "part": part})
        assert moved < 1024, f"a held array's part moved {moved} bytes"
    got = wire_of_send(sender, receiver, strided)
    assert got == 0 and sender.cache_stats().hits == 2
    sender.send(rows, "node0", "node1")
    received = receiver.receive("node1", timeout=TIMEOUT).data
    assert received.shape == rows.shape and np.array_equal(received, rows)
    with pytest.raises(ValueError, match="read-only"):
        received[0, 0] = 1.0
    assert sender.cache_stats().saved_bytes == rows.nbytes * 2 + tail.nbytes
    assert receiver.cache_stats().kept_bytes == field.nbytes


def test_a_reference_to_bytes_past_a_held_array_is_a_decode_error() -> None:
    sender, receiver = PayloadCache(), PayloadCache()
    shared = share(np.arange(CACHE_MIN, dtype=np.int32))  # 4 * CACHE_MIN bytes
    sent: list[tuple[bytes, list[np.ndarray]]] = []

    class Capture:
        def send(self, rank: int, meta: bytes, frames: list[np.ndarray], batch: bool) -> None:
            sent.append((meta, list(frames)))

    for frame in (shared, shared[CACHE_MIN // 2 :]):
        sender.send(Capture(), 1, b"codec meta", [frame], False)  # type: ignore[arg-type]
    (meta0, frames0), (meta1, frames1) = sent
    assert frames1[0].nbytes == 0
    with pytest.raises(DecodeError, match="does not hold whole"):
        receiver.arrived(0, memoryview(meta1), frames1, len(meta1))
    receiver.arrived(0, memoryview(meta0), frames0, len(meta0))
    _, frames, _ = receiver.arrived(0, memoryview(meta1), frames1, len(meta1))
    assert np.array_equal(frames[0].view(np.int32), shared[CACHE_MIN // 2 :])
    past = bytearray(meta1)
    past[16 + 16 : 16 + 24] = (4 * CACHE_MIN - 8).to_bytes(8, "little")  # its offset
    with pytest.raises(DecodeError, match="does not hold whole"):
        receiver.arrived(0, memoryview(bytes(past)), frames1, len(past))


def test_a_shared_record_array_arrives_with_its_record_dtype(pair: list[Geode]) -> None:
    """``share(recarray)`` holds a numpy.record dtype: it arrived as a DecodeError (the
    receiver refused a dtype pickle naming numpy.record), and so did every later structured
    array of an equal dtype and shape from that rank."""
    sender, receiver = pair
    fields = [np.arange(CACHE_MIN), np.arange(CACHE_MIN, dtype=np.float32)]
    shared = share(np.rec.fromarrays(fields, names="a,b"))
    plain = np.zeros(CACHE_MIN, dtype=[("a", "<i8"), ("b", "<f4")])
    for array in (shared, shared, plain):
        sender.send(array, "node0", "node1")
        got = receiver.receive("node1", timeout=10).data
        assert got.dtype == array.dtype and got.dtype.type is array.dtype.type
        assert got.tobytes() == array.tobytes()
    assert sender.cache_stats().hits == 1


def test_an_array_over_bytes_beside_a_shared_one_is_sent(pair: list[Geode]) -> None:
    """A frame whose memory is a bytes object's (``np.frombuffer(bytes)``; a compressed
    frame is one) beside a shared array crashed the send: the cache read its ``base`` as an
    array's (AttributeError)."""
    sender, receiver = pair
    over_bytes = np.frombuffer(bytes(range(256)) * CACHE_MIN, np.uint8)
    shared = share(np.ones(CACHE_MIN))
    sender.send({"b": over_bytes, "f": shared}, "node0", "node1")
    got = receiver.receive("node1", timeout=10).data
    assert np.array_equal(got["b"], over_bytes) and np.array_equal(got["f"], shared)


def reordered_views(field: np.ndarray, row: np.ndarray) -> dict[str, np.ndarray]:
    """Views of shared arrays whose memory starts where theirs does and spans as many bytes,
    with their elements in another order (or repeated): none of them is the shared array's
    bytes in order."""
    return {
        "transpose(1, 0, 2)": field.transpose(1, 0, 2),
        "swapaxes(0, 1)": np.swapaxes(field, 0, 1),
        "broadcast_to": np.broadcast_to(row[: row.size // 2], (2, row.size // 2)),
        "reversed": field[::-1],
        "reversed rows": field.reshape(-1)[::-1],
    }


@pytest.mark.parametrize("first", ["the shared array", "the view"])
def test_a_reordered_view_of_a_shared_array_travels_in_full(pair: list[Geode], first: str) -> None:
    """A transposed or broadcast view of a shared array starts at its address and spans its
    bytes: it was taken for the shared array, so the receiver read the shared array's bytes
    with the view's shape, and a view sent first stored its own bytes under the shared
    array's id (the array itself then arrived wrong). Each now travels in full, and the
    shared array arrives right before and after."""
    sender, receiver = pair
    field = share(np.arange(2 * 3 * 4000, dtype=np.float64).reshape(2, 3, 4000))
    row = share(np.arange(100_000, dtype=np.float64))
    views = reordered_views(field, row)
    shared = [field, row]
    order = [*views.values(), *shared] if first == "the view" else [*shared, *views.values()]
    for array in [*order, *shared]:  # (wire_of_send checks the values that arrive)
        wire_of_send(sender, receiver, array)
    stats = sender.cache_stats()
    assert (stats.stores, stats.hits) == (2, 2), stats


def test_a_fortran_view_of_a_shared_array_is_still_a_reference(pair: list[Geode]) -> None:
    """``field.T`` of a shared array is its bytes in order (Fortran order): a reference, and
    it arrives transposed."""
    sender, receiver = pair
    field = share(np.arange(CACHE_MIN * 2, dtype=np.float64).reshape(2, -1))
    assert wire_of_send(sender, receiver, field) >= field.nbytes
    for view in (field.T, field.reshape(-1), field.view(np.uint8)):
        assert wire_of_send(sender, receiver, view) < 1024
    got = wire_of_send(sender, receiver, {"t": field.T})
    assert got < 1024 and sender.cache_stats().hits == 4


def test_sharing_a_reordered_view_makes_its_own_copy(pair: list[Geode]) -> None:
    """``share`` of a transposed view of a shared array called it already shared (it starts
    at the same address and spans the same bytes): it was then sent in full every time.
    Now it is a shared array of its own, sent once."""
    sender, receiver = pair
    field = share(np.arange(2 * 3 * 4000, dtype=np.float64).reshape(2, 3, 4000))
    assert share(field) is field and np.shares_memory(share(field.T), field)
    swapped = share(field.transpose(1, 0, 2))
    assert not np.shares_memory(swapped, field) and swapped.flags.c_contiguous
    assert np.array_equal(swapped, field.transpose(1, 0, 2)) and not swapped.flags.writeable
    assert wire_of_send(sender, receiver, swapped) >= swapped.nbytes
    assert wire_of_send(sender, receiver, swapped) < 1024
    assert wire_of_send(sender, receiver, field) >= field.nbytes  # its own id: stored too


def test_a_reordered_view_of_a_received_shared_array_sent_on_travels_in_full(
    pair: list[Geode],
) -> None:
    """A copy received through the cache is shared on its rank: a transposed view of it,
    sent on, travels in full too."""
    first, second = pair
    field = share(np.arange(2 * 3 * 4000, dtype=np.float64).reshape(2, 3, 4000))
    first.send(field, "node0", "node1")
    passed = second.receive("node1", timeout=TIMEOUT).data
    for array in (passed, passed.transpose(1, 0, 2), passed[::-1], passed):
        second.send(array, "node1", "node0")
        assert np.array_equal(first.receive("node0", timeout=TIMEOUT).data, array)
    assert (second.cache_stats().stores, second.cache_stats().hits) == (1, 1)


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
@pytest.mark.parametrize("world", ["two ranks", "embedded"])
def test_a_received_shared_array_cannot_be_made_writable(
    pair: list[Geode], dtype: type, world: str
) -> None:
    """The receiver's array is a view of the copy its rank keeps: ``flags.writeable = True``
    succeeded on a uint8 one (it was the kept copy itself) and, over MPI, on any dtype (a
    view of the writable receive buffer), and a write then changed what the next send of
    the shared array delivered."""
    sender, receiver = pair if world == "two ranks" else (Geode(2),) * 2
    shared = share(np.arange(CACHE_MIN * 2).astype(dtype))
    for _ in range(2):
        sender.send({"a": shared, "b": shared[CACHE_MIN:]}, "node0", "node1")
        got = receiver.receive("node1", timeout=TIMEOUT).data
        for array in got.values():
            with pytest.raises(ValueError, match="WRITEABLE"):
                array.flags.writeable = True
            with pytest.raises(ValueError, match="WRITEABLE"):
                array.view().flags.writeable = True
        assert np.array_equal(got["a"], shared) and np.array_equal(got["b"], shared[CACHE_MIN:])
    assert sender.cache_stats().hits == 3
    if world == "embedded":
        sender.close()


def test_a_received_shared_array_evicted_from_its_store_is_still_shared_when_sent_on() -> None:
    """The registry entry of a received shared array lived as long as the store's own view of
    it, not the receiver's (which skips that view): once the store dropped the id (evicted),
    the array the receiver kept was no longer shared, and passed on it moved in full each
    time."""
    hub = InProcHub(3)
    first, second, third = (
        Geode(3, transport=hub.endpoint(rank), cache_bytes=5 * MIB) for rank in range(3)
    )
    arrays = [share(np.full(MIB // 4, float(k))) for k in range(3)]  # 2 MiB each
    kept = None
    for array in arrays:  # the third evicts the first from rank 1's store
        first.send(array, "node0", "node1")
        got = second.receive("node1", timeout=TIMEOUT).data
        kept = got if kept is None else kept
    assert first.cache_stats().evictions == 1
    moved = []
    for _ in range(2):
        before = second.cache_stats().wire_bytes
        second.send(kept, "node1", "node2")
        assert np.array_equal(third.receive("node2", timeout=TIMEOUT).data, arrays[0])
        moved.append(second.cache_stats().wire_bytes - before)
    assert moved[0] >= arrays[0].nbytes and moved[1] < 1024
    for geode in (first, second, third):
        geode.close()
