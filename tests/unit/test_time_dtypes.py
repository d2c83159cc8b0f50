"""Structured dtypes holding datetime64 and timedelta64 fields arrive with their units.

Such a dtype travels pickled (a descriptor's encoding 1) and is rebuilt from its state by
`arrays.load_dtype`; a datetime's state ends with (metadata, (unit, count, 1, 1)), not with
the metadata alone, and every such message was refused (`TypeError: cannot convert
dictionary update sequence element #0 to a sequence`) and dead-lettered.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message
from geode_mpi.codec import Stamp, decode, encode
from geode_mpi.codec.arrays import load_dtype
from geode_mpi.transport.base import copy_frame

NAMES = ("node0", "node1")
STAMP = Stamp(id=7, seq=0, timestamp=1.0, source=0, dest=1)

DTYPES = {
    "M8[s] field": np.dtype([("time", "M8[s]"), ("value", "f8")]),
    "m8[ms] field": np.dtype([("dt", "m8[ms]")]),
    "M8[D] subarray": np.dtype([("t", "M8[D]", (2,))]),
    "big-endian M8[5s] nested": np.dtype([("a", [("b", ">M8[5s]")]), ("c", "i2")]),
    "generic M8 and m8[2W]": np.dtype([("g", "M8"), ("w", "m8[2W]")]),
    "M8[ns] with metadata": np.dtype([("t", np.dtype("M8[ns]", metadata={"zone": "UTC"}))]),
    "record M8[us]": np.dtype((np.record, [("t", "M8[us]"), ("n", "i4")])),
}


def filled(dtype: np.dtype[Any], n: int) -> np.ndarray[Any, Any]:
    """``n`` elements of ``dtype``, every byte set (distinct times in every field)."""
    return np.frombuffer(bytes(range(256)) * (n * dtype.itemsize // 256 + 1), np.uint8)[
        : n * dtype.itemsize
    ].view(dtype)


def same_dtype(got: np.dtype[Any], sent: np.dtype[Any]) -> None:
    assert got == sent and got.descr == sent.descr and got.type is sent.type
    for name in sent.names or ():
        inner, sent_inner = got.fields[name][0], sent.fields[name][0]  # type: ignore[index]
        assert inner.str == sent_inner.str and inner.metadata == sent_inner.metadata


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=list(DTYPES))
def test_a_datetime_dtype_s_pickle_loads_with_its_units(dtype: np.dtype[Any]) -> None:
    same_dtype(load_dtype(pickle.dumps(dtype, protocol=5)), dtype)


class Forged:
    """Pickles as a datetime64 dtype whose state holds ``unit`` (bytes in numpy's own)."""

    def __init__(self, unit: Any) -> None:
        self.unit = unit

    def __reduce__(self) -> tuple[Any, ...]:
        state = (4, "<", None, None, None, -1, -1, 0, (None, (self.unit, 1, 1, 1)))
        return np.dtype, ("M8", False, True), state


def test_a_forged_datetime_state_is_refused() -> None:
    assert load_dtype(pickle.dumps(Forged(b"ms"), protocol=5)) == np.dtype("M8[ms]")
    with pytest.raises(TypeError, match="not a datetime dtype's pickled state"):
        load_dtype(pickle.dumps(Forged("ms"), protocol=5))
    with pytest.raises(TypeError):  # (numpy's own error: no such unit)
        load_dtype(pickle.dumps(Forged(b"parsec"), protocol=5))


def wrapped(array: np.ndarray[Any, Any], how: str) -> Message:
    if how == "alone":
        return Message(array)
    if how == "dict":
        return Message({"x": array, "n": 1})
    if how == "list":
        return Message([array, "pickled"])
    message = Message("attribute")
    message.x = array  # type: ignore[attr-defined]
    return message


def unwrapped(message: Message, how: str) -> np.ndarray[Any, Any]:
    data = message.data
    if how == "alone":
        return data  # type: ignore[no-any-return]
    if how == "list":
        return data[0]  # type: ignore[no-any-return]
    return data["x"] if how == "dict" else message.x  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("n", [3, 700])  # inside meta; a frame of its own
@pytest.mark.parametrize("how", ["alone", "dict", "list", "attribute"])
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=list(DTYPES))
def test_a_datetime_record_round_trips_through_the_codec(
    dtype: np.dtype[Any], how: str, n: int
) -> None:
    array = filled(dtype, n)
    meta, frames = encode(wrapped(array, how), STAMP)
    got = unwrapped(decode(meta, [copy_frame(f) for f in frames], NAMES), how)
    same_dtype(got.dtype, dtype)
    assert got.tobytes() == array.tobytes()


def test_a_datetime_record_is_received_not_dead_lettered() -> None:
    readings = np.zeros(3, dtype=[("time", "M8[s]"), ("value", "f8")])
    readings["time"] = np.datetime64("2026-01-01T00:00:00") + np.arange(3)
    readings["value"] = [0.5, 1.5, 2.5]
    with Geode(2) as geode:
        geode.send(readings, "node0", "node1")
        got = geode.receive("node1", timeout=10).data
        assert got.dtype == readings.dtype and got.dtype["time"].str == "<M8[s]"
        assert np.array_equal(got, readings) and not geode.dead_letters()
