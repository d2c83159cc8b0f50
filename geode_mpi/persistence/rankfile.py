"""One rank's checkpoint file: a tree of arrays, bytes and JSON values as HDF5, and back.

The reader distrusts the file even when its checksum matched (it may have been damaged before
it was hashed): it reads attributes by their known names (never by iterating them), accepts
only hard links, fixed-size datatypes and the layouts and filters the writer uses, refuses a
dataset larger than the file, and turns every HDF5 or content error into `CheckpointError`.
Nothing the writer stores needs HDF5's global heap (variable-length data), whose damaged
references crashed or hung the HDF5 library in a fuzzing run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import sys
import threading
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.base.record import Frozen, fill
from geode_mpi.errors import CheckpointError as CheckpointError  # old import path still works
from geode_mpi.persistence.layout import JsonValue as JsonValue  # its old import path too
from geode_mpi.persistence.layout import Rebuilder, flatten

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a checkpoint is written or read
    np = on_first_use("numpy", globals(), "np")


def _lazy(name: str) -> Any:
    """Module ``name``, executed at its first attribute access (importlib's LazyLoader)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import h5py
else:  # loaded at the first checkpoint or restart: a Geode without them never pays its 13 MB
    h5py = _lazy("h5py")

# The version of this layout; a reader refuses others. 2: JSON leaves for small dicts. 3: no
# variable-length strings: root attributes as one JSON uint8 attribute, kinds fixed-length.
# 4: the tree as an index, a blob and the large values (`geode_mpi.persistence.layout`), not a
# group per mapping and a dataset per leaf. 5: every dataset contiguous with the CRC-32 of its
# bytes, taken from memory, as an attribute, instead of fletcher32 in chunks (the checksummed
# chunks cost 1.1 ms of CPU a MiB to write against 0.65 contiguous, the CRC 0.25). Formats 3
# and 4 are still read.
FORMAT = 5
READS = (3, 4, 5)
_INDEX = "geode_index"  # format 4: the tree's index, JSON
_BLOB = "geode_blob"  # format 4: the small values' bytes
_FORMAT_ATTR = b"geode_format"
_ATTRS_ATTR = b"geode_attrs"  # the caller's attributes, as JSON text in a uint8 attribute
_KIND = b"geode_kind"  # attribute naming what a dataset holds
_KINDS = (b"array", b"bytes", b"json")
_CRC = b"geode_crc32"  # format 5: a dataset's CRC-32 (zlib's), a uint32 attribute
# Array dtypes whose bytes HDF5 gives back as they were written, so that a CRC of the array in
# memory matches one of the array read back; others (structured, strings, dates) keep format
# 4's fletcher32 chunks.
_CRC_KINDS = "biufc"
# Chunks of the fletcher32 datasets. h5py's own choice (chunks=True: 32 to 64 KiB for 1 MiB)
# made a 1 MiB dataset cost 2.4 ms of CPU to write against 0.65 contiguous; 256 KiB chunks,
# 1.1 ms (512 KiB and more: 2.2, the default chunk cache is 1 MiB).
CHUNK_BYTES = 256 * 1024
_HASH_READ = 256 * 1024  # bytes hashed per read
_MAX_DEPTH = 32  # groups nested deeper than any tree the writer makes: damage (or a cycle)
_MAX_ATTRS_BYTES = 1 << 16


class RankFile(Frozen):
    """What the manifest records of one rank's file."""

    name: str
    size: int
    sha256: str
    __match_args__ = ("name", "size", "sha256")

    def __init__(self, name: str, size: int, sha256: str) -> None:
        fill(self, name, size, sha256)


def rank_name(rank: int) -> str:
    return f"rank-{rank:04d}.h5"


def sha256_of(path: Path) -> str:
    import hashlib  # here, not at the top: it loads OpenSSL (3.5 MB a rank), for checkpoints only

    digest = hashlib.sha256()
    # Read into one buffer, used again: 0.67 ms of CPU a MiB, where reading fresh bytes
    # objects took 1.08 (the pages of each new one are touched for the first time).
    buffer = bytearray(_HASH_READ)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while size := file.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- writing ---------------------------------------------------------------------------------


def _text_dataset(group: h5py.Group, key: str, text: str) -> None:
    _data_dataset(group, key, b"json", np.frombuffer(text.encode(), np.uint8))


def chunk_shape(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks of about `CHUNK_BYTES` for a dataset of ``shape``: whole trailing axes, as many
    steps of the first axis not taken whole as fit (at least one)."""
    chunk = list(shape)
    for axis in range(len(shape)):
        step = itemsize * math.prod(shape[axis + 1 :])  # the bytes of one step along ``axis``
        if step * shape[axis] <= CHUNK_BYTES:
            break  # the rest whole
        chunk[axis] = max(1, min(shape[axis], CHUNK_BYTES // max(step, 1)))
        if step <= CHUNK_BYTES:
            break  # else one step of this axis, and split the next
    return tuple(chunk)


def _data_dataset(group: h5py.Group, key: str, kind: bytes, value: np.ndarray[Any, Any]) -> None:
    """A dataset with its kind and its checksum: contiguous with its CRC-32 taken from the
    bytes in memory, or (a dtype HDF5 may store otherwise) fletcher32 in chunks."""
    if value.dtype.kind in _CRC_KINDS:
        if not value.flags.c_contiguous:
            value = value.copy(order="C")  # the bytes the CRC covers are the ones written
        dataset = group.create_dataset(key, data=value)
        dataset.attrs[_CRC.decode()] = np.uint32(zlib.crc32(value.data))
    else:
        options: dict[str, Any] = {}
        if value.size and value.ndim:
            options = {"fletcher32": True, "chunks": chunk_shape(value.shape, value.dtype.itemsize)}
        dataset = group.create_dataset(key, data=value, **options)
    dataset.attrs[_KIND.decode()] = np.bytes_(kind)


def _write_flat(file: h5py.File, tree: Mapping[str, Any]) -> None:
    """The tree as format 4: its index, its blob, its large values."""
    try:
        index, flat = flatten(tree)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    _text_dataset(file, _INDEX, index)
    _data_dataset(file, _BLOB, b"bytes", flat.blob())
    for name, (kind, value) in flat.own.items():
        try:
            _data_dataset(file, name, kind.encode(), value)
        except (TypeError, ValueError) as exc:  # h5py's, which do not name the value
            raise CheckpointError(
                f"{flat.paths[name]!r} cannot be stored: {type(exc).__name__}: {exc}"
            ) from exc


class _Output:
    """The file HDF5 writes a rank's file through (h5py's ``fileobj`` driver): each write
    goes to the file at once (``os.pwrite``), and the first `OSError` is kept, never handed
    to HDF5. HDF5 defers most of its writes to the file's close, where h5py drops an error
    ("Exception ignored"): a disk that filled up then left a broken file reported written,
    and the process crashed at exit; an error HDF5 sees leaves the library in a state that
    crashed too. So HDF5 finishes its file undisturbed, and `start_rank_file` raises the
    kept error once HDF5 has closed it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        self.position = 0
        self.error: OSError | None = None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            offset += os.fstat(self.fd).st_size
        elif whence == os.SEEK_CUR:
            offset += self.position
        self.position = offset
        return offset

    def tell(self) -> int:
        return self.position

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], self.position + done)
            except OSError as exc:
                self.error = exc
        self.position += len(view)
        return len(view)

    def readinto(self, buffer: Any) -> int:
        got = os.preadv(self.fd, [buffer], self.position)
        self.position += got
        return got

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = max(os.fstat(self.fd).st_size - self.position, 0)
        data = os.pread(self.fd, size, self.position)
        self.position += len(data)
        return data

    def truncate(self, size: int | None = None) -> int:
        size = self.position if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self.fd, size)
            except OSError as exc:
                self.error = exc
        return size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Close the file; raise the error kept from a write, if any (naming the file)."""
        os.close(self.fd)
        if self.error is not None:
            error = self.error
            raise OSError(error.errno, error.strerror, str(self.path)) from error


class Syncing:
    """A file's fsync, running in a thread from the moment the file is written: `wait`
    returns once the file is durable (or raises the fsync's `OSError`)."""

    def __init__(self, path: Path) -> None:
        self.error: OSError | None = None
        self.handle = open(path, "rb+")  # noqa: SIM115 (closed by wait)
        self.thread = threading.Thread(target=self._sync, name="geode-fsync", daemon=True)
        self.thread.start()

    def _sync(self) -> None:
        try:
            os.fsync(self.handle.fileno())
        except OSError as exc:
            self.error = exc

    def wait(self) -> None:
        self.thread.join()
        self.handle.close()
        if self.error is not None:
            raise self.error


def write_rank_file(
    directory: Path,
    rank: int,
    attrs: Mapping[str, Any],
    tree: Mapping[str, Any],
    atomic: bool = True,
) -> RankFile:
    """Write one rank's file into ``directory``, fsynced.

    Args:
        atomic: under a temporary name, renamed once synced, and the directory synced: a
            kill at any moment leaves the old file or the new one. False: straight to its
            name, the directory not synced, for a file that a manifest written later seals
            (after syncing the directory): one rename and one directory fsync less per rank.
    """
    final = directory / rank_name(rank)
    written, syncing = start_rank_file(directory, rank, attrs, tree, atomic)
    syncing.wait()
    if atomic:
        os.replace(directory / (rank_name(rank) + ".tmp"), final)
        fsync_dir(directory)
    return written


def start_rank_file(
    directory: Path,
    rank: int,
    attrs: Mapping[str, Any],
    tree: Mapping[str, Any],
    temporary: bool = False,
) -> tuple[RankFile, Syncing]:
    """Write one rank's file into ``directory`` (``temporary``: under its temporary name)
    and hash it; its fsync is still running (`Syncing.wait`): the file's entry can go to the
    manifest's writer while the disk takes it."""
    final = directory / rank_name(rank)
    target = directory / (rank_name(rank) + ".tmp") if temporary else final
    output = _Output(target)
    try:
        try:
            with h5py.File(output, "w") as file:
                file.attrs[_FORMAT_ATTR.decode()] = np.int64(FORMAT)
                text = json.dumps(dict(attrs)).encode()
                file.attrs[_ATTRS_ATTR.decode()] = np.frombuffer(text, np.uint8)
                _write_flat(file, tree)
        finally:
            output.close()  # raises what a write met (the disk full), HDF5 done with the file
    except BaseException:
        with contextlib.suppress(OSError):  # a broken file is no file
            target.unlink()
        raise
    # The checksum is read back (from the page cache) while the disk takes the fsync: both
    # release the GIL, so the hash costs little wall time.
    syncing = Syncing(target)
    try:
        digest = sha256_of(target)
    except BaseException:
        syncing.wait()
        raise
    return RankFile(final.name, target.stat().st_size, digest), syncing


# -- reading ---------------------------------------------------------------------------------


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
