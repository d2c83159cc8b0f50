"""A dict holding arrays as a skeleton and descriptors, its arrays as frames (kind 6).

The data section of `KIND_ARRAY_DICT` (docs/wire-format.md): a u32, the skeleton's length;
the skeleton, a protocol-5 pickle of ``(items, places)``: the dict with None where each array
was, and for each array the places of the items that hold it, in the dict's order (an array
held twice travels once, and arrives as one array held twice, as pickle's memo would have
it); then one array descriptor per array. The arrays travel as the message's first frames,
in the same order.

Users send dicts of arrays (``{"step": 3, "field": array}``): the array-aware pickler
(`pickling.dumps`) calls back into Python for every object it pickles and rebuilds each array
through a pickled function call, about 10 us a message more than an array alone; a skeleton of
atomic values is pickled and unpickled by C pickle in well under a microsecond.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.codec import arrays
from geode_mpi.codec.arrays import array_frame, is_raw_array, read_descriptor, rebuild_array
from geode_mpi.codec.pickling import ATOMIC, is_plain

if TYPE_CHECKING:
    import numpy as np
else:  # imported with the first array
    np = on_first_use("numpy", globals(), "np")

ITEMS_MAX = 64  # a larger dict takes the array-aware pickler (kind 0)
_LENGTH = struct.Struct("<I")
_dumps, _loads = pickle.dumps, pickle.loads
# The descriptors' bytes of a data section -> each array's (dtype, shape, Fortran order)
_layouts: dict[bytes, list[tuple[np.dtype[Any], tuple[int, ...], bool]]] = {}
_LAYOUTS_MAX = 1024


def split(data: dict[Any, Any], frames: list[np.ndarray[Any, Any]]) -> bytes | None:
    """The kind-6 data section of ``data``, its arrays appended to ``frames``; or None, with
    ``frames`` untouched, for a dict this kind does not take.

    It takes a dict of at most `ITEMS_MAX` items whose keys are atomic (str, int, ...), with at
    least one value an array without Python objects inside (exactly a numpy ndarray, of any
    size or layout), and every other value plain (`pickling.is_plain`: no array anywhere in it).
    """
    if len(data) > ITEMS_MAX:
        return None
    ndarray = arrays.ndarray
    if ndarray is arrays.NO_ARRAY:  # (numpy imported, not yet learnt: `is_raw_array` learns it)
        if not any(map(is_raw_array, data.values())):
            return None
        ndarray = arrays.ndarray
    items: dict[Any, Any] = {}
    places: list[tuple[int, ...]] = []  # per array, the places of the items holding it
    held: list[int] = []  # the id of each array (an array held twice travels once)
    found: list[np.ndarray[Any, Any]] = []
    descriptors: list[bytes] = []
    place = -1
    for key, value in data.items():
        place += 1
        if type(key) not in ATOMIC:
            return None
        kind = type(value)
        if kind in ATOMIC:
            items[key] = value
        elif kind is ndarray and not value.dtype.hasobject:
            items[key] = None
            ident = id(value)
            if ident in held:
                number = held.index(ident)
                places[number] += (place,)
                continue
            held.append(ident)
            descriptor, frame = array_frame(value)
            descriptors.append(descriptor)
            found.append(frame)
            places.append((place,))
        elif is_plain(value):
            items[key] = value
        else:
            return None
    if not found:
        return None
    skeleton = _dumps((items, places), 5)
    frames += found
    return b"".join((_LENGTH.pack(len(skeleton)), skeleton, *descriptors))


def join(section: memoryview, frames: Sequence[Any]) -> dict[Any, Any]:
    """The dict `split` made ``section`` of, its arrays views of their received ``frames``
    (exactly as many as it has arrays).

    Raises:
        ValueError: the section does not hold such a dict (or another exception from its
            bytes: the caller's decode turns any into a DecodeError).
    """
    offset = _LENGTH.size + _LENGTH.unpack_from(section)[0]
    items, places = _loads(section[_LENGTH.size : offset])
    if type(items) is not dict or type(places) is not list or len(places) != len(frames):
        raise ValueError(f"its skeleton does not place its {len(frames)} frame(s)")
    # The descriptors, parsed once per layout: a job sends the same dtypes and shapes again.
    tail = bytes(section[offset:])
    layout = _layouts.get(tail)
    if layout is None:
        layout = _layout(tail, len(frames))
    keys = list(items)
    for held, frame, (dtype, shape, fortran) in zip(places, frames, layout, strict=True):
        array = rebuild_array(
            frame if type(frame) is arrays.ndarray else np.asarray(frame), dtype, shape, fortran
        )
        for place in held:
            items[keys[place]] = array
    return items


def _layout(tail: bytes, count: int) -> list[tuple[np.dtype[Any], tuple[int, ...], bool]]:
    """The (dtype, shape, Fortran order) of each of ``count`` descriptors that make ``tail``,
    remembered for the next message of the same layout.

    Raises:
        ValueError: ``tail`` is not exactly ``count`` descriptors.
    """
    layout = []
    offset = 0
    for _ in range(count):
        dtype, shape, fortran, offset = read_descriptor(tail, offset)
        layout.append((dtype, shape, fortran))
    if offset != len(tail):
        raise ValueError(f"its data section has {len(tail) - offset} bytes after its arrays")
    if len(_layouts) >= _LAYOUTS_MAX:
        _layouts.clear()
    _layouts[tail] = layout
    return layout
