"""One rank's checkpoint file read back, defensively.

The reader distrusts the file even when its checksum matched (it may have been damaged before
it was hashed): it reads attributes by their known names (never by iterating them), accepts
only hard links, fixed-size datatypes and the layouts and filters the writer uses, refuses a
dataset larger than the file, and turns every HDF5 or content error into `CheckpointError`.
Nothing the writer stores needs HDF5's global heap (variable-length data), whose damaged
references crashed or hung the HDF5 library in a fuzzing run.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.errors import CheckpointError
from geode_mpi.persistence.layout import Rebuilder
from geode_mpi.persistence.rankformat import (
    _ATTRS_ATTR,
    _BLOB,
    _CRC,
    _CRC_KINDS,
    _FORMAT_ATTR,
    _INDEX,
    _KIND,
    _KINDS,
    _MAX_ATTRS_BYTES,
    _MAX_DEPTH,
    READS,
    _lazy,
)

if TYPE_CHECKING:
    import h5py
    import numpy as np
else:  # imported when a checkpoint is written or read; h5py loaded at the first checkpoint
    np = on_first_use("numpy", globals(), "np")  # or restart: a Geode without them never
    h5py = _lazy("h5py")  # pays its 13 MB


class _Reader:
    """Reads one file's tree, checking each object before it reads it."""

    def __init__(self, path: Path, file: h5py.File) -> None:
        self.path = path
        self.file = file
        self.limit = path.stat().st_size  # no dataset of ours holds more than its file
        self.budget = self.limit  # nor all of them together: datasets reached twice count
        self.seen: set[int] = set()
        self.crc = False  # format 5: every dataset of a dtype that can carries its CRC-32

    def fail(self, where: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {where}: {problem} (damaged?)")

    def attribute(self, obj: Any, name: bytes, where: str) -> np.ndarray[Any, Any]:
        """A fixed-size attribute, opened by name."""
        try:
            attr = h5py.h5a.open(obj.id, name)
        except KeyError:
            raise self.fail(where, f"no attribute {name.decode()!r}") from None
        dtype = attr.dtype
        if dtype.hasobject or dtype.kind not in "iuS" or len(attr.shape) > 1:
            raise self.fail(where, f"attribute {name.decode()!r} has type {dtype} {attr.shape}")
        if dtype.itemsize * math.prod(attr.shape) > _MAX_ATTRS_BYTES:
            raise self.fail(where, f"attribute {name.decode()!r} is too large")
        value = np.empty(attr.shape, dtype)
        attr.read(value)
        return value

    def root(self) -> tuple[dict[str, Any], dict[str, Any]]:
        fmt = self.attribute(self.file, _FORMAT_ATTR, "/")
        if fmt.shape != () or fmt.dtype.kind not in "iu" or int(fmt) not in READS:
            raise CheckpointError(
                f"{self.path}: checkpoint format {fmt.tolist()!r}, this geode_mpi reads "
                f"format {' or '.join(str(known) for known in READS)}"
            )
        raw = self.attribute(self.file, _ATTRS_ATTR, "/")
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise self.fail("/", f"attribute 'geode_attrs' has type {raw.dtype} {raw.shape}")
        attrs = json.loads(raw.tobytes().decode())
        if not isinstance(attrs, dict):
            raise self.fail("/", f"attributes are a {type(attrs).__name__}, not a dict")
        if int(fmt) == 3:
            return attrs, self.group(self.file, 0)
        self.crc = int(fmt) >= 5
        index = self.dataset(self.item(_INDEX))
        blob = self.dataset(self.item(_BLOB))
        if not isinstance(blob, bytes):
            raise self.fail(_BLOB, "not bytes")
        rebuilder = Rebuilder(blob, lambda name: self.dataset(self.item(name)), _MAX_DEPTH)
        try:
            return attrs, rebuilder.tree(index)
        except ValueError as exc:
            raise self.fail(_INDEX, str(exc)) from None

    def item(self, name: str) -> h5py.Dataset:
        """The root's dataset ``name``, a hard link."""
        link = self.file.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            what = "nothing" if link is None else f"a {type(link).__name__}"
            raise self.fail(f"/{name}", f"{what}, not a dataset")
        item = self.file[name]
        if not isinstance(item, h5py.Dataset):
            raise self.fail(f"/{name}", f"a {type(item).__name__}, not a dataset")
        return item

    def group(self, group: h5py.Group, depth: int) -> dict[str, Any]:
        where = group.name or "/"
        if depth > _MAX_DEPTH:
            raise self.fail(where, f"groups nested deeper than {_MAX_DEPTH}")
        address = h5py.h5o.get_info(group.id).addr
        if address in self.seen:  # a damaged link can make a cycle
            raise self.fail(where, "a group reached twice")
        self.seen.add(address)
        count = len(group)
        if count > self.limit // 16:  # each link takes more room than that
            raise self.fail(where, f"{count} entries in a file of {self.limit} bytes")
        tree: dict[str, Any] = {}
        for key in list(group)[:count]:
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise self.fail(f"{where}/{key}", f"a {type(link).__name__}, not a hard link")
            item = group[key]
            if isinstance(item, h5py.Group):
                tree[key] = self.group(item, depth + 1)
            elif isinstance(item, h5py.Dataset):
                tree[key] = self.dataset(item)
            else:
                raise self.fail(f"{where}/{key}", f"a {type(item).__name__}")
        return tree

    def check_crc(self, item: h5py.Dataset, where: str, data: np.ndarray[Any, Any]) -> None:
        """The data read matches the CRC-32 the writer took of it in memory."""
        if not h5py.h5a.exists(item.id, _CRC):
            raise self.fail(where, "no checksum (geode_crc32)")
        crc = self.attribute(item, _CRC, where)
        if crc.shape != () or int(crc) != zlib.crc32(np.ascontiguousarray(data).data):  # (0-d: 1-d)
            raise self.fail(where, "checksum mismatch (geode_crc32)")

    def dataset(self, item: h5py.Dataset) -> Any:
        where = item.name or "?"
        raw_kind = self.attribute(item, _KIND, where)
        kind = raw_kind.tobytes().rstrip(b"\0") if raw_kind.shape == () else b""
        if kind not in _KINDS:
            raise self.fail(where, f"unknown kind {kind!r}")
        dtype = item.dtype
        if dtype.hasobject or h5py.check_dtype(vlen=dtype) is not None:
            raise self.fail(where, f"datatype {dtype} is not stored by geode_mpi")
        if kind != b"array" and (dtype != np.uint8 or item.ndim != 1):
            raise self.fail(where, f"{kind.decode()} stored as {dtype} {item.shape}")
        plist = item.id.get_create_plist()
        layouts = (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT)
        if plist.get_layout() not in layouts or plist.get_external_count():
            raise self.fail(where, "a storage layout geode_mpi does not write")
        for index in range(plist.get_nfilters()):
            if plist.get_filter(index)[0] != h5py.h5z.FILTER_FLETCHER32:
                raise self.fail(where, f"filter {plist.get_filter(index)[0]} is not ours")
        nbytes = math.prod(item.shape) * dtype.itemsize
        if nbytes > self.budget:
            raise self.fail(where, f"{item.shape} of {dtype}: more bytes than the file has")
        self.budget -= nbytes
        data = item[()]
        if self.crc and dtype.kind in _CRC_KINDS:
            self.check_crc(item, where, data)
        if kind == b"array":
            return data
        if kind == b"bytes":
            return np.asarray(data, np.uint8).tobytes()
        return json.loads(np.asarray(data, np.uint8).tobytes().decode())


def read_rank_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(attrs, tree) of one rank's file.

    Raises:
        CheckpointError: the file is not a checkpoint file of this format, or any HDF5 or
            content error while reading it (the message names the file).
    """
    try:
        with h5py.File(path, "r") as file:
            return _Reader(path, file).root()
    except CheckpointError:
        raise
    except Exception as exc:  # h5py raises OSError, RuntimeError, KeyError, ... on damage
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint file: {type(exc).__name__}: {exc}"
        ) from exc
