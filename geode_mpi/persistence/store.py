"""Checkpoint storage: per-rank HDF5 files, a manifest, validation before anything is read.

A checkpoint directory holds one subdirectory per checkpoint, ``epoch-000007/``, with one HDF5
file per rank (``rank-0000.h5``, ...) and a ``manifest.json`` that rank 0 writes only after every
rank wrote its file. A checkpoint is *complete* exactly when its manifest exists and every file
it lists is there with its size and SHA-256; anything else (a job killed mid-write, a truncated
or corrupted file, a missing rank) is skipped, with a message naming the file and the problem,
and the newest complete one is used. Every file is written under a temporary name, fsynced,
renamed, and its directory fsynced: a kill at any moment leaves the old file or the new one.

A rank's file holds a tree (`Tree`: nested dicts of numpy arrays, bytes and JSON values) laid
out as HDF5 groups and datasets; docs/checkpoints.md documents the format. Nothing is
unpickled here: bytes stay bytes, and a file is read only after its checksum matched.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import h5py
import numpy as np

from geode_mpi.errors import GeodeError

FORMAT = 2  # the version of this layout; a reader refuses others (2: JSON leaves for small dicts)
MANIFEST = "manifest.json"
LOCK = "geode.lock"
_KIND = "geode_kind"  # attribute naming what a dataset holds
_CHUNK = 1 << 20  # bytes hashed per read

Tree = Mapping[str, Any]  # str -> Tree | np.ndarray | bytes | JSON value


class JsonValue:
    """A tree leaf stored as one JSON dataset even when it is a dict (which `_write_tree`
    otherwise lays out as a group of datasets, one per key: slow to read back by the hundred).
    Read back as the plain value."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class CheckpointError(GeodeError):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


@dataclass(frozen=True)
class RankFile:
    """What the manifest records of one rank's file."""

    name: str
    size: int
    sha256: str


def epoch_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}"


def rank_name(rank: int) -> str:
    return f"rank-{rank:04d}.h5"


# -- writing ---------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_tree(group: h5py.Group, tree: Tree) -> None:
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise CheckpointError(f"checkpoint key {key!r} must be a non-empty str without '/'")
        if isinstance(value, JsonValue):
            text = json.dumps(value.value)
            dataset = group.create_dataset(key, data=np.frombuffer(text.encode(), np.uint8))
            dataset.attrs[_KIND] = "json"
        elif isinstance(value, Mapping):
            _write_tree(group.create_group(key), value)
        elif isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise CheckpointError(f"array {key!r} holds Python objects: not storable")
            options = {"fletcher32": True, "chunks": True} if value.size else {}
            dataset = group.create_dataset(key, data=value, **options)
            dataset.attrs[_KIND] = "array"
        elif isinstance(value, (bytes, bytearray, memoryview)):
            raw = np.frombuffer(bytes(value), np.uint8)
            options = {"fletcher32": True, "chunks": True} if raw.size else {}
            dataset = group.create_dataset(key, data=raw, **options)
            dataset.attrs[_KIND] = "bytes"
        else:
            try:
                text = json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"checkpoint value {key!r} of type {type(value).__name__} is neither an "
                    "array, bytes nor JSON"
                ) from exc
            dataset = group.create_dataset(key, data=np.frombuffer(text.encode(), np.uint8))
            dataset.attrs[_KIND] = "json"


def write_rank_file(directory: Path, rank: int, attrs: Mapping[str, Any], tree: Tree) -> RankFile:
    """Write one rank's file into ``directory`` (temporary name, fsync, rename, fsync)."""
    final = directory / rank_name(rank)
    temporary = directory / (rank_name(rank) + ".tmp")
    with h5py.File(temporary, "w") as file:
        file.attrs["geode_format"] = FORMAT
        for key, value in attrs.items():
            file.attrs[key] = json.dumps(value)
        _write_tree(file, tree)
    # The checksum is read back (from the page cache) while the disk takes the fsync: both
    # release the GIL, so the hash costs little wall time.
    with open(temporary, "rb+") as handle:
        syncing = threading.Thread(target=os.fsync, args=(handle.fileno(),))
        syncing.start()
        digest = sha256_of(temporary)
        syncing.join()
    os.replace(temporary, final)
    _fsync_dir(directory)
    return RankFile(final.name, final.stat().st_size, digest)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


# -- reading ---------------------------------------------------------------------------------


def _read_tree(group: h5py.Group) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            tree[key] = _read_tree(item)
            continue
        kind = item.attrs.get(_KIND)
        data = item[()]
        if kind == "array":
            tree[key] = data
        elif kind == "bytes":
            tree[key] = np.asarray(data, np.uint8).tobytes()
        elif kind == "json":
            tree[key] = json.loads(np.asarray(data, np.uint8).tobytes().decode())
        else:
            raise CheckpointError(f"dataset {item.name!r} has unknown kind {kind!r}")
    return tree


@dataclass
class Loaded:
    """A complete checkpoint, validated: its manifest, and each rank file's path."""

    epoch: int
    path: Path
    manifest: dict[str, Any]

    def rank_path(self, rank: int) -> Path:
        return self.path / rank_name(rank)

    def read(self, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(attrs, tree) of one rank's file (its checksum was checked when loading)."""
        path = self.rank_path(rank)
        try:
            with h5py.File(path, "r") as file:
                if int(file.attrs.get("geode_format", -1)) != FORMAT:
                    raise CheckpointError(
                        f"{path}: checkpoint format {file.attrs.get('geode_format')!r}, this "
                        f"geode_mpi reads format {FORMAT}"
                    )
                attrs = {
                    key: json.loads(value)
                    for key, value in file.attrs.items()
                    if key != "geode_format"
                }
                return attrs, _read_tree(file)
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot be read as HDF5: {exc}") from exc


class CheckpointStore:
    """A checkpoint directory: write epochs, find the newest complete one, keep the last K.

    Args:
        directory: where checkpoints live (created if missing).
        keep: complete checkpoints to keep (at least 2: the newest may be the one a kill
            interrupted while the next was written).
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 2) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
            raise ValueError(f"keep must be an int >= 2, got {keep!r}")
        self.directory = Path(directory)
        self.keep = keep
        self._lock: IO[str] | None = None

    # -- the lock: one job per directory -----------------------------------------------------

    def lock(self) -> None:
        """Take the directory for this job; refuse if another live job holds it.

        Raises:
            CheckpointError: another job holds the lock (named by host, pid and SLURM job).
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = open(self.directory / LOCK, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise CheckpointError(
                f"checkpoint directory {self.directory} is in use by another job ({holder}); "
                "give each job its own directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        job = os.environ.get("SLURM_JOB_ID", "-")
        handle.write(f"host {socket.gethostname()} pid {os.getpid()} slurm job {job}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- writing an epoch --------------------------------------------------------------------

    def epoch_path(self, epoch: int) -> Path:
        return self.directory / epoch_name(epoch)

    def prepare(self, epoch: int) -> Path:
        """The directory a new epoch's files go in (emptied of any earlier attempt)."""
        path = self.epoch_path(epoch)
        if (path / MANIFEST).exists():
            raise CheckpointError(f"{path} is already a complete checkpoint")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_manifest(self, epoch: int, files: list[RankFile], info: Mapping[str, Any]) -> Path:
        """Seal an epoch once every rank wrote its file (rank 0 only); then prune."""
        path = self.epoch_path(epoch)
        manifest = {
            "geode_format": FORMAT,
            "epoch": epoch,
            "created": time.time(),
            "ranks": len(files),
            "files": [file.__dict__ for file in files],
            **info,
        }
        _write_atomically(path / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        self.prune()
        return path

    def prune(self) -> None:
        """Keep the newest ``keep`` complete checkpoints; remove older ones and any incomplete
        one older than the newest complete."""
        complete = self.epochs(complete_only=True)
        if not complete:
            return
        keep = set(complete[: self.keep])
        newest = complete[0]
        for epoch in self.epochs(complete_only=False):
            if epoch not in keep and epoch < newest:
                shutil.rmtree(self.epoch_path(epoch), ignore_errors=True)

    # -- reading -----------------------------------------------------------------------------

    def epochs(self, complete_only: bool = True) -> list[int]:
        """Epoch numbers found, newest first (with a manifest only, by default)."""
        found: list[int] = []
        if not self.directory.is_dir():
            return found
        for entry in self.directory.iterdir():
            if not entry.name.startswith("epoch-") or not entry.is_dir():
                continue
            try:
                epoch = int(entry.name[len("epoch-") :])
            except ValueError:
                continue
            if not complete_only or (entry / MANIFEST).exists():
                found.append(epoch)
        return sorted(found, reverse=True)

    def validate(self, epoch: int, rank: int | None = None) -> Loaded:
        """Check an epoch's manifest and every file it lists (or only ``rank``'s: each rank of
        a restarting job checks its own, in parallel), before anything is read.

        Raises:
            CheckpointError: naming the file and what is wrong with it.
        """
        path = self.epoch_path(epoch)
        manifest_path = path / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(
                f"{manifest_path}: missing (the checkpoint is incomplete)"
            ) from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{manifest_path}: unreadable: {exc}") from exc
        if manifest.get("geode_format") != FORMAT:
            raise CheckpointError(
                f"{manifest_path}: checkpoint format {manifest.get('geode_format')!r}, this "
                f"geode_mpi reads format {FORMAT}"
            )
        entries = manifest.get("files", [])
        if len(entries) != manifest.get("ranks"):
            raise CheckpointError(f"{manifest_path}: lists {len(entries)} rank files")
        if rank is not None:
            if not 0 <= rank < len(entries):
                raise CheckpointError(f"{manifest_path}: has no file for rank {rank}")
            entries = [entries[rank]]
        for entry in entries:
            file = path / entry["name"]
            if not file.exists():
                raise CheckpointError(f"{file}: missing (listed in the manifest)")
            size = file.stat().st_size
            if size != entry["size"]:
                raise CheckpointError(
                    f"{file}: {size} bytes, the manifest says {entry['size']} (truncated?)"
                )
            if sha256_of(file) != entry["sha256"]:
                raise CheckpointError(f"{file}: checksum mismatch (corrupted)")
        return Loaded(epoch, path, manifest)

    def newest(self, problems: list[str] | None = None) -> Loaded | None:
        """The newest complete and valid checkpoint (None if there is none); what was skipped
        and why goes to ``problems``."""
        for epoch in self.epochs(complete_only=False):
            try:
                return self.validate(epoch)
            except CheckpointError as exc:
                if problems is not None:
                    problems.append(str(exc))
        return None

    def __iter__(self) -> Iterator[int]:
        return iter(self.epochs())
