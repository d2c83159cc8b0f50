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
from geode_mpi.codec.arrays import array_frame, is_raw_array, read_descriptor, rebuild_array
from geode_mpi.codec.pickling import ATOMIC, is_plain

if TYPE_CHECKING:
    import numpy as np
else:  # imported with the first array
    np = on_first_use("numpy", globals(), "np")

ITEMS_MAX = 64  # a larger dict takes the array-aware pickler (kind 0)
_LENGTH = struct.Struct("<I")


def split(data: dict[Any, Any], frames: list[np.ndarray[Any, Any]]) -> bytes | None:
    """The kind-6 data section of ``data``, its arrays appended to ``frames``; or None, with
    ``frames`` untouched, for a dict this kind does not take.

    It takes a dict of at most `ITEMS_MAX` items whose keys are atomic (str, int, ...), with at
    least one value an array without Python objects inside (exactly a numpy ndarray, of any
    size or layout), and every other value plain (`pickling.is_plain`: no array anywhere in it).
    """
    if len(data) > ITEMS_MAX:
        return None
    items: dict[Any, Any] = {}
    places: list[list[int]] = []
    held: dict[int, int] = {}  # id of an array -> its number
    found: list[np.ndarray[Any, Any]] = []
    descriptors: list[bytes] = []
    for place, (key, value) in enumerate(data.items()):
        if type(key) not in ATOMIC:
            return None
        if type(value) in ATOMIC:
            items[key] = value
        elif is_raw_array(value):
            number = held.get(id(value))
            if number is None:
                held[id(value)] = len(found)
                descriptor, frame = array_frame(value)
                descriptors.append(descriptor)
                found.append(frame)
                places.append([place])
            else:
                places[number].append(place)
            items[key] = None
        elif is_plain(value):
            items[key] = value
        else:
            return None
    if not found:
        return None
    skeleton = pickle.dumps((items, [tuple(each) for each in places]), 5)
    frames += found
    return b"".join((_LENGTH.pack(len(skeleton)), skeleton, *descriptors))


def join(section: memoryview, frames: Sequence[Any]) -> dict[Any, Any]:
    """The dict `split` made ``section`` of, its arrays views of their received ``frames``
    (exactly as many as it has arrays).

    Raises:
        ValueError: the section does not hold such a dict (or another exception from its
            bytes: the caller's decode turns any into a DecodeError).
    """
    (length,) = _LENGTH.unpack_from(section)
    offset = _LENGTH.size + length
    items, places = pickle.loads(section[_LENGTH.size : offset])
    if type(items) is not dict or type(places) is not list or len(places) != len(frames):
        raise ValueError(f"its skeleton does not place its {len(frames)} frame(s)")
    keys = list(items)
    for held, frame in zip(places, frames, strict=True):
        dtype, shape, fortran, offset = read_descriptor(section, offset)
        array = rebuild_array(np.asarray(frame), dtype, shape, fortran)
        for place in held:
            items[keys[place]] = array
    if offset != len(section):
        raise ValueError(f"its data section has {len(section) - offset} bytes after its arrays")
    return items
