"""Large topic arrays in the embedded world (transport/sealed.py): one read-only copy for every
subscriber, zero-copy arrays published with no copy and read-only from then on, and
point-to-point sends unchanged."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest

from geode_mpi import ClosedError, Geode
from geode_mpi.transport.sealed import SHARED_MIN

SUBSCRIBERS = ["node1", "node2", "node3"]
LARGE = SHARED_MIN // 8 + 3  # float64 elements: just over the threshold


def fan_out(geode: Geode, data: Any, name: str = "field") -> list[Any]:
    topic = geode.topic(name, publishers=["node0"], subscribers=SUBSCRIBERS)
    topic.publish(data, source="node0")
    return [geode.receive(node, timeout=5).data for node in SUBSCRIBERS]


def test_a_large_array_reaches_every_subscriber_as_one_read_only_copy() -> None:
    with Geode(acks=False) as geode:
        data = np.arange(LARGE, dtype=np.float64)
        got = fan_out(geode, data)
        data[:] = -1  # the publish copied it: the publisher's array is still its own
        for array in got:
            assert np.array_equal(array, np.arange(LARGE)) and not array.flags.writeable
            assert np.shares_memory(array, got[0]) and not np.shares_memory(array, data)
            with pytest.raises(ValueError, match="read-only"):
                array[0] = 1.0
        mine = got[1].copy()
        mine[0] = 5.0  # a copy is the subscriber's own
        assert got[2][0] == 0.0


def test_small_arrays_and_point_to_point_sends_stay_private_writable_copies() -> None:
    with Geode(acks=False) as geode:
        small = fan_out(geode, np.arange(100.0))
        assert all(array.flags.writeable for array in small)
        small[0][0] = -1.0
        assert small[1][0] == 0.0
        data = np.arange(LARGE, dtype=np.float64)
        geode.send(data, "node0", "node1")
        got = geode.receive("node1", timeout=5).data
        assert got.flags.writeable and not np.shares_memory(got, data)


def test_a_zero_copy_array_is_published_without_a_copy_and_handed_over() -> None:
    with Geode(acks=False) as geode:
        field = geode.zero_copy_array((LARGE,))
        assert field.flags.writeable and field.flags.c_contiguous and field.dtype == np.float64
        field[:] = np.arange(LARGE)
        got = fan_out(geode, {"step": 1, "field": field})
        assert not field.flags.writeable  # published: read-only, for the publisher too
        with pytest.raises(ValueError, match="read-only"):
            field[0] = 1.0
        for data in got:
            assert data["step"] == 1 and not data["field"].flags.writeable
            assert np.shares_memory(data["field"], field)  # the very same memory
        del field
        gc.collect()
        assert np.array_equal(got[2]["field"], np.arange(LARGE))  # a view keeps it alive


def test_a_published_zero_copy_array_cannot_be_made_writable_again() -> None:
    """numpy let `flags.writeable = True` back on a published zero-copy array (its base was
    geode's memory object, whose flag numpy does not read): a write then changed what every
    subscriber of the process held."""
    with Geode(acks=False) as geode:
        field = geode.zero_copy_array((LARGE,))
        field[:] = 1.0
        got = fan_out(geode, field)
        for array in (field, field[2:], got[0]):
            with pytest.raises(ValueError, match="WRITEABLE"):
                array.flags.writeable = True
        assert all(np.array_equal(array, np.ones(LARGE)) for array in got)


def test_a_small_zero_copy_array_is_copied_at_its_publish_and_stays_the_publishers() -> None:
    """Under SHARED_MIN a zero-copy array travels as any small array (copied into the
    message): the publish does not hand it over, and a write after it changes no copy."""
    with Geode(acks=False) as geode:
        field = geode.zero_copy_array((10,))
        field[:] = 1.0
        got = fan_out(geode, field)
        field[:] = -1.0  # still the publisher's own
        assert all(np.array_equal(array, np.ones(10)) for array in got)


def test_a_contiguous_part_of_a_zero_copy_array_can_be_published() -> None:
    with Geode(acks=False) as geode:
        grid = geode.zero_copy_array((4, LARGE), np.float32)
        grid[...] = 7.0
        got = fan_out(geode, grid[1:3])
        assert not grid.flags.writeable
        for array in got:
            assert array.shape == (2, LARGE) and array.dtype == np.float32
            assert np.shares_memory(array, grid) and float(array.sum()) == 7.0 * 2 * LARGE


def test_a_zero_copy_array_can_be_published_again_and_sent_point_to_point() -> None:
    with Geode(acks=False) as geode:
        field = geode.zero_copy_array(LARGE, "int64")
        field[:] = 3
        geode.send(field, "node0", "node1")  # a send is not a publish: it stays writable
        assert field.flags.writeable
        got = geode.receive("node1", timeout=5).data
        assert got.flags.writeable and not np.shares_memory(got, field)
        first = fan_out(geode, field)
        second = fan_out(geode, field, "again")
        for array in first + second:
            assert np.shares_memory(array, field) and int(array[-1]) == 3


@pytest.mark.parametrize(
    ("shape", "dtype", "error", "text"),
    [
        ((-1, 4), "float64", ValueError, "shape must not have negative dimensions, got"),
        ((4,), object, TypeError, "dtype must not hold Python objects, got object"),
    ],
)
def test_zero_copy_array_refuses_what_it_cannot_make(
    shape: tuple[int, ...], dtype: Any, error: type[Exception], text: str
) -> None:
    with Geode() as geode, pytest.raises(error, match=text):
        geode.zero_copy_array(shape, dtype)


def test_zero_copy_arrays_of_any_size_and_after_close() -> None:
    geode = Geode()
    assert geode.zero_copy_array((0, 3)).shape == (0, 3)
    tiny = geode.zero_copy_array(5, np.uint8)
    tiny[:] = 1  # small: ordinary memory, published like any small array
    assert tiny.flags.writeable and tiny.sum() == 5
    geode.close()
    with pytest.raises(ClosedError, match=r"zero_copy_array\(\) on a closed Geode"):
        geode.zero_copy_array(10)


def test_a_compressed_publish_hands_a_zero_copy_array_over_too() -> None:
    pytest.importorskip("numcodecs")
    with Geode(acks=False) as geode:
        topic = geode.topic("packed", publishers=["node0"], subscribers=SUBSCRIBERS)
        field = geode.zero_copy_array(LARGE)
        field[:] = 1.0
        topic.publish(field, source="node0", compress="lz4")
        assert not field.flags.writeable
        for node in SUBSCRIBERS:
            got = geode.receive(node, timeout=5).data
            assert np.array_equal(got, np.ones(LARGE))
