"""One rank's checkpoint file: a tree of arrays, bytes and JSON values written as HDF5.

Its layout and format are in `rankformat`, the files it is written through in `rankio`, and
the defensive reader in `rankreading`; the names of all four stay importable from here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.errors import CheckpointError as CheckpointError  # old import path still works
from geode_mpi.persistence.layout import JsonValue as JsonValue  # its old import path too
from geode_mpi.persistence.layout import flatten
from geode_mpi.persistence.rankformat import (
    _ATTRS_ATTR,
    _BLOB,
    _CRC,
    _CRC_KINDS,
    _FORMAT_ATTR,
    _INDEX,
    _KIND,
    _lazy,
)
from geode_mpi.persistence.rankformat import CHUNK_BYTES as CHUNK_BYTES
from geode_mpi.persistence.rankformat import FORMAT as FORMAT
from geode_mpi.persistence.rankformat import READS as READS
from geode_mpi.persistence.rankformat import RankFile as RankFile
from geode_mpi.persistence.rankformat import rank_name as rank_name
from geode_mpi.persistence.rankio import Syncing as Syncing
from geode_mpi.persistence.rankio import _Output as _Output
from geode_mpi.persistence.rankio import fsync_dir as fsync_dir
from geode_mpi.persistence.rankio import sha256_of as sha256_of
from geode_mpi.persistence.rankreading import read_rank_file as read_rank_file

if TYPE_CHECKING:
    import h5py
    import numpy as np
else:  # imported when a checkpoint is written or read; h5py loaded at the first checkpoint
    np = on_first_use("numpy", globals(), "np")  # or restart: a Geode without them never
    h5py = _lazy("h5py")  # pays its 13 MB


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
