"""Dicts holding arrays (the codec's kind 6) between ranks: every array arrives with its
dtype, shape, order and bytes, writable, in the dict's order; an array held twice arrives
as one; a Message subclass holding such a dict keeps its class and attributes."""

from __future__ import annotations

from typing import Any

import numpy as np
from payloads import Point, array_cases

from geode_mpi import Geode, Message

TIMEOUT = 60.0


class Fields(Message):
    """A user's subclass whose data is a dict of arrays."""


def sent(index: int) -> dict[str, Any]:
    """What node ``index`` sends: every array case, one of them twice, a read-only one."""
    data: dict[str, Any] = {"step": index, "label": f"from {index}"}
    for name, array in array_cases():
        data[name] = array
    shared = np.arange(300_000.0) + index  # 2.4 MB: its own frame on every path
    data["shared"] = shared
    data["shared again"] = shared
    frozen = np.arange(50_000, dtype=np.int32)
    frozen.flags.writeable = False
    data["read-only"] = frozen
    return data


def check(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(got) == list(want)
    for key, value in want.items():
        if not isinstance(value, np.ndarray):
            assert got[key] == value, key
            continue
        array = got[key]
        assert type(array) is np.ndarray and array.dtype == value.dtype, key
        assert array.shape == value.shape, key
        assert np.ascontiguousarray(array).tobytes() == np.ascontiguousarray(value).tobytes()
        assert array.flags.writeable, key  # received into this rank's own memory
        if value.ndim > 1 and value.flags.f_contiguous and not value.flags.c_contiguous:
            assert array.flags.f_contiguous, key
    assert got["shared"] is got["shared again"]


def test_dicts_of_arrays_and_a_subclass_holding_one_arrive_whole(geode: Geode) -> None:
    n = len(geode.nodes)
    for node in geode.local_nodes:
        me = geode.nodes.index(node)
        right = geode.nodes[(me + 1) % n]
        geode.send(sent(me), node, right, timeout=TIMEOUT)
        geode.send(Fields(sent(me)), node, right, timeout=TIMEOUT)
        point = Point({"grid": np.full((300, 400), float(me)), "k": me}, label=f"p{me}")
        geode.send(point, node, right, timeout=TIMEOUT)
    for node in geode.local_nodes:
        left = (geode.nodes.index(node) - 1) % n
        check(geode.receive(node, timeout=TIMEOUT).data, sent(left))
        fields = geode.receive(node, timeout=TIMEOUT)
        assert type(fields) is Fields
        check(fields.data, sent(left))
        point = geode.receive(node, timeout=TIMEOUT)
        assert isinstance(point, Point) and point.label == f"p{left}" and point.weight == 1.0
        assert point.data["k"] == left and point.data["grid"].shape == (300, 400)
        assert np.all(point.data["grid"] == left) and point.data["grid"].flags.writeable
