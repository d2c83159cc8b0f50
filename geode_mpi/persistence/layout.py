"""A checkpoint tree as few HDF5 objects: a JSON index, one blob of bytes, the large arrays.

Format 4 of a rank's file (`geode_mpi.persistence.rankfile`). Format 3 made an HDF5 group per
mapping and a dataset per leaf: some 60 objects for a rank hosting one node, and creating an
HDF5 object costs 0.1 to 2 ms of CPU, most of a checkpoint's time when ranks share cores. Here
the tree's shape and its small values go into one JSON ``index``; the bytes of its small bytes
values and arrays are concatenated into one ``blob``; only values larger than `OWN_DATASET`
(and arrays whose dtype the index cannot name) get a dataset of their own, written from their
own memory. A rank's file is then 2 datasets plus its large arrays.

The index is a JSON object mapping each key to a leaf, a list whose first item says what it is:
``["g", {...}]`` a mapping; ``["j", value]`` a JSON value; ``["b", start, stop]`` bytes, a slice
of the blob; ``["a", start, dtype, shape]`` an array in the blob (``dtype`` as numpy's ``str``,
C order); ``["d", name]`` the dataset ``name`` (an array or bytes). This module knows nothing of
HDF5: `flatten` and `rebuild` turn a tree into these parts and back, `rebuild` checking every
item before it trusts it. A key is any non-empty str, '/' included (a JSON object's key, not an
HDF5 name as in format 3): topics and work queues are saved by their names, which may hold one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.persistence.checks import brief

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a checkpoint is written or read
    np = on_first_use("numpy", globals(), "np")


OWN_DATASET = 64 * 1024  # values larger than this many bytes get their own dataset
_ALIGN = 16  # every value in the blob starts at a multiple of this many bytes
_PAD = bytes(_ALIGN)
_BLOB_KINDS = "biufc"  # dtypes the index names by their ``str`` (no fields, no objects)
_HDF5_KINDS = "biufcS"  # dtypes HDF5 stores and gives back exactly (and records of them)
DATASET_NAME = re.compile(r"v[0-9]{1,9}")  # the names of the values stored on their own


class JsonValue:
    """A tree leaf stored as one JSON value even when it is a dict (which is otherwise a
    mapping, a group of the tree). Read back as the plain value."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Flat:
    """A tree flattened: its index, the parts of its blob, and the values stored on their own
    (name -> array, or bytes as a ``uint8`` array)."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.size = 0
        self.own: dict[str, tuple[str, np.ndarray[Any, Any]]] = {}  # name -> (kind, value)
        self.paths: dict[str, str] = {}  # name -> the value's path in the tree (for errors)

    def add(self, data: bytes | memoryview) -> int:
        """Append ``data`` to the blob; where it starts."""
        start = self.size
        self.parts.append(data)
        self.size += len(data)
        if self.size % _ALIGN:
            pad = _PAD[: -self.size % _ALIGN]
            self.parts.append(pad)
            self.size += len(pad)
        return start

    def blob(self) -> np.ndarray[Any, Any]:
        return np.frombuffer(b"".join(self.parts), np.uint8)


def flatten(tree: Mapping[str, Any]) -> tuple[str, Flat]:
    """(the index as JSON text, the blob's parts and the values stored on their own).

    Raises:
        ValueError: a key that is not a non-empty str, an array HDF5 cannot store
            as it is (`storable`), or a leaf that is neither an array, bytes nor JSON (naming
            its path in the tree).
    """
    flat = Flat()
    index = _flatten(tree, flat)
    return json.dumps(index, separators=(",", ":")), flat


def _flatten(tree: Mapping[str, Any], flat: Flat, where: str = "") -> dict[str, Any]:
    index: dict[str, Any] = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"checkpoint key {key!r} must be a non-empty str")
        path = child(where, key).removeprefix("/")  # (no leading "/" in the paths named here)
        if isinstance(value, JsonValue):
            index[key] = ["j", _json(path, value.value)]
        elif isinstance(value, Mapping):
            index[key] = ["g", _flatten(value, flat, path)]
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise ValueError(f"array {path!r} holds Python objects: not storable")
            if type(value) is not np.ndarray or not storable(value.dtype):
                raise ValueError(
                    f"checkpoint value {path!r} ({type(value).__name__} of {value.dtype}) is "
                    "not storable as an HDF5 dataset"
                )
            if value.nbytes > OWN_DATASET or value.dtype.kind not in _BLOB_KINDS:
                index[key] = ["d", _own(flat, "array", value, path)]
            else:
                start = flat.add(value.tobytes())  # C order; small, so the copy is cheap
                index[key] = ["a", start, value.dtype.str, list(value.shape)]
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = memoryview(value).cast("B")
            if data.nbytes > OWN_DATASET:
                index[key] = ["d", _own(flat, "bytes", np.frombuffer(data, np.uint8), path)]
            else:
                start = flat.add(data)
                index[key] = ["b", start, start + data.nbytes]
        else:
            index[key] = ["j", _json(path, value)]
    return index


def storable(dtype: np.dtype[Any]) -> bool:
    """Whether HDF5 stores arrays of ``dtype`` and gives them back as they were: numbers,
    bools, bytes strings, and records of those. Not str (``U``), dates and times (``M``,
    ``m``), raw void or objects, for which h5py has no conversion (pickle those), nor a
    record made with ``align=True`` at any level, which h5py gives back without the flag."""
    if dtype.fields is not None:
        if dtype.isalignedstruct:
            return False
        return all(storable(field[0]) for field in dtype.fields.values())
    if dtype.subdtype is not None:
        return storable(dtype.subdtype[0])
    return dtype.kind in _HDF5_KINDS


def _own(flat: Flat, kind: str, value: np.ndarray[Any, Any], path: str) -> str:
    name = f"v{len(flat.own)}"
    flat.own[name] = (kind, value)
    flat.paths[name] = path
    return name


def _json(key: str, value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"checkpoint value {key!r} of type {type(value).__name__} is neither an array, "
            "bytes nor JSON"
        ) from exc
    return value


class Rebuilder:
    """Turns an index and its blob back into the tree, checking each item first.

    Args:
        blob: the blob's bytes.
        own: reads one value stored on its own, by name (the caller checks the dataset).
        depth: mappings nested deeper than this are damage.
    """

    def __init__(self, blob: bytes, own: Any, depth: int) -> None:
        self.blob = blob
        self.own = own
        self.depth = depth
        self.seen: set[str] = set()

    def tree(self, index: Any, where: str = "", depth: int = 0) -> dict[str, Any]:
        """The mapping at ``where``.

        Raises:
            ValueError: naming the item (its path in the tree) and what is wrong with it.
        """
        if not isinstance(index, dict):
            raise ValueError(f"{where or '/'}: a mapping's index is a {type(index).__name__}")
        if depth > self.depth:
            raise ValueError(f"{where or '/'}: mappings nested deeper than {self.depth}")
        return {key: self.leaf(item, child(where, key), depth) for key, item in index.items()}

    def leaf(self, item: Any, where: str, depth: int) -> Any:
        if not isinstance(item, list) or not item or not isinstance(item[0], str):
            raise ValueError(f"{where}: not an index entry: {brief(item)}")
        kind, rest = item[0], item[1:]
        if kind == "g" and len(rest) == 1:
            return self.tree(rest[0], where, depth + 1)
        if kind == "j" and len(rest) == 1:
            return rest[0]
        if kind == "b" and len(rest) == 2:
            start, stop = self.span(rest[0], rest[1], where)
            return self.blob[start:stop]
        if kind == "a" and len(rest) == 3:
            return self.array(rest, where)
        if kind == "d" and len(rest) == 1:
            name = rest[0]
            if not isinstance(name, str) or not DATASET_NAME.fullmatch(name) or name in self.seen:
                raise ValueError(f"{where}: dataset {brief(name)} is not one of ours, or reused")
            self.seen.add(name)
            return self.own(name)
        raise ValueError(f"{where}: not an index entry: {brief(item)}")

    def span(self, start: Any, stop: Any, where: str) -> tuple[int, int]:
        if not (_is_int(start) and _is_int(stop) and 0 <= start <= stop <= len(self.blob)):
            raise ValueError(
                f"{where}: bytes {brief(start)} to {brief(stop)} of a blob of {len(self.blob)}"
            )
        return start, stop

    def array(self, rest: list[Any], where: str) -> np.ndarray[Any, Any]:
        start, code, shape = rest
        try:
            dtype = np.dtype(code) if isinstance(code, str) else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in _BLOB_KINDS or dtype.str != code:
            raise ValueError(f"{where}: dtype {brief(code)} is not one geode_mpi writes")
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            raise ValueError(f"{where}: shape {brief(shape)} is not a list of sizes")
        nbytes = math.prod(shape) * dtype.itemsize
        begin = self.span(start, start + nbytes if _is_int(start) else None, where)[0]
        count = nbytes // dtype.itemsize
        array: np.ndarray[Any, Any] = np.frombuffer(self.blob, dtype, count, begin).copy()
        return array.reshape(shape)


def child(where: str, key: str) -> str:
    """The path of ``key`` in the mapping at ``where``, for errors: ``where/key``, the key
    quoted when it holds a '/' (a topic's name may), so that the path reads one way."""
    return f"{where}/{key!r}" if "/" in key else f"{where}/{key}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
