"""Checkpoint storage: per-rank HDF5 files, a manifest, validation before anything is read.

A checkpoint directory holds one subdirectory per checkpoint, ``epoch-000007/``, with one HDF5
file per rank (``rank-0000.h5``, ...) and a ``manifest.json`` that rank 0 writes only after every
rank wrote its file. A checkpoint is *complete* exactly when its manifest exists and every file
it lists is there with its size and SHA-256; anything else (a job killed mid-write, a truncated
or corrupted file, a missing rank) is skipped, with a message naming the file and the problem,
and the newest complete one is used. Every file is written under a temporary name, fsynced,
renamed, and its directory fsynced: a kill at any moment leaves the old file or the new one.

A rank's file holds a tree (nested dicts of numpy arrays, bytes and JSON values) laid out as
HDF5 groups and datasets (`geode_mpi.persistence.rankfile`); docs/checkpoints.md documents the
format. Nothing is unpickled here: bytes stay bytes, and a file is read only after its manifest
(its shape, and with a job key its HMAC: `geode_mpi.persistence.manifest`) and its checksum
passed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from geode_mpi.base.logger import log
from geode_mpi.base.shards import FILES_PER_DIR as FILES_PER_DIR
from geode_mpi.codec.header import VERSION as CODEC_VERSION
from geode_mpi.persistence.manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    group_name,
    rank_path,
    sign,
)
from geode_mpi.persistence.rankfile import (
    FORMAT,
    CheckpointError,
    JsonValue,
    RankFile,
    Syncing,
    fsync_dir,
    start_rank_file,
    write_rank_file,
)
from geode_mpi.persistence.store_lock import LOCK as LOCK
from geode_mpi.persistence.store_lock import NO_LOCK as NO_LOCK
from geode_mpi.persistence.store_lock import TOKEN as TOKEN
from geode_mpi.persistence.store_lock import Locking
from geode_mpi.persistence.store_lock import holder_of as holder_of
from geode_mpi.persistence.store_reading import Loaded as Loaded
from geode_mpi.persistence.store_reading import Reading
from geode_mpi.persistence.store_reading import epoch_name as epoch_name

__all__ = [
    "FORMAT",
    "LOCK",
    "MANIFEST",
    "CheckpointError",
    "CheckpointStore",
    "JsonValue",
    "Loaded",
    "RankFile",
    "holder_of",
    "write_rank_file",
]


def _staged(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _stage(path: Path, text: str, after: Sequence[Path] = ()) -> None:
    """``path``'s temporary file written and fsynced, and the directories ``after`` fsynced,
    in parallel (each fsync waits for the disk, so together they cost about one wait)."""
    from concurrent.futures import ThreadPoolExecutor  # (1 MB a rank: only with a checkpoint)

    with ThreadPoolExecutor(max(len(after), 1)) as pool:
        syncs = [pool.submit(fsync_dir, directory) for directory in after]
        with open(_staged(path), "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for sync in syncs:
            sync.result()  # a directory that failed to sync fails the write


def _commit(path: Path) -> None:
    """After `_stage`: the rename onto ``path``, and its directory's fsync."""
    os.replace(_staged(path), path)
    fsync_dir(path.parent)


class CheckpointStore(Locking, Reading):
    """A checkpoint directory: write epochs, find the newest complete one, keep the last K.

    Args:
        directory: where checkpoints live (created if missing).
        keep: complete checkpoints to keep (at least 2: the newest may be the one a kill
            interrupted while the next was written).
        key: the job key (see `key_from_environment`): manifests written carry an HMAC with
            it, and a manifest read must carry a matching one. None: no HMAC is written, and
            one found is not checked.
    """

    def __init__(
        self, directory: str | os.PathLike[str], keep: int = 2, key: bytes | None = None
    ) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 2:
            raise ValueError(f"keep must be an int >= 2, got {keep!r}")
        if key is not None and (not isinstance(key, bytes) or not key):
            raise ValueError(f"key must be non-empty bytes or None, got {type(key).__name__}")
        self.directory = Path(directory)
        self.keep = keep
        self.key = key
        self.per_dir = FILES_PER_DIR
        self._lock: IO[str] | None = None
        # the random token the locking rank wrote into the lock file, as it told it (`holds_lock`)
        self.lock_token: str | None = None
        # epochs a restart found unusable (damaged, unauthenticated): never one of `keep`
        self.unusable: set[int] = set()
        # epochs `unseal` unsealed: their directories go in `remove_emptied` (or `prune`)
        self.emptied: list[int] = []

    # -- writing an epoch --------------------------------------------------------------------

    def prepare(self, epoch: int, ranks: int = 1) -> Path:
        """The directory a new epoch's files go in, with the sub-directories of a job of
        ``ranks`` (see `rank_path`), made and synced before any rank writes into them."""
        path = self.epoch_path(epoch)
        self.check_lock()
        if (path / MANIFEST).exists():
            raise CheckpointError(f"{path} is already a complete checkpoint")
        # A job's (locked) directory is never made again here: gone, it is no longer the job's.
        path.mkdir(parents=self._lock is None, exist_ok=True)
        if ranks > self.per_dir:
            for group in range(-(-ranks // self.per_dir)):
                (path / group_name(group)).mkdir(exist_ok=True)
            fsync_dir(path)
        return path

    def write_rank(
        self, epoch: int, rank: int, ranks: int, attrs: Mapping[str, Any], tree: Mapping[str, Any]
    ) -> RankFile:
        """Write ``rank``'s file of a job of ``ranks`` into its place in a prepared epoch."""
        written, syncing = self.start_rank(epoch, rank, ranks, attrs, tree)
        syncing.wait()
        return written

    def start_rank(
        self, epoch: int, rank: int, ranks: int, attrs: Mapping[str, Any], tree: Mapping[str, Any]
    ) -> tuple[RankFile, Syncing]:
        """`write_rank`, returning while the file's fsync still runs (`Syncing.wait`)."""
        name = rank_path(rank, ranks, self.per_dir)
        directory = (self.epoch_path(epoch) / name).parent
        self.check_lock()  # (never write into another job's directory)
        # Each rank: no barrier after a prepare. The epoch's directory and its group's only,
        # never the checkpoint directory: gone, it is no longer this job's (`check_lock`).
        self.epoch_path(epoch).mkdir(exist_ok=True)
        directory.mkdir(exist_ok=True)
        # Straight to its name, the directory not synced: the epoch is no checkpoint until
        # `write_manifest` (which syncs the directories first) seals it.
        written, syncing = start_rank_file(directory, rank, attrs, tree)
        return RankFile(name, written.size, written.sha256), syncing

    def write_manifest(
        self,
        epoch: int,
        files: list[RankFile],
        info: Mapping[str, Any],
        prune: bool = True,
    ) -> Path:
        """Seal an epoch once every rank wrote its file (rank 0 only); then prune (unless
        ``prune`` is False: the caller prunes later).

        The rank files' directory entries (and the epoch's own) are made durable first, with
        one fsync per directory, so that a manifest that survives a crash lists only files
        that survived it too.
        """
        self.stage_manifest(epoch, files, info)
        path = self.commit_manifest(epoch)
        if prune:
            self.prune()
        return path

    def commit_manifest(self, epoch: int) -> Path:
        """Seal an epoch whose manifest `stage_manifest` wrote, once every rank file it lists
        is durable: its rename, and its directory's fsync."""
        path = self.epoch_path(epoch)
        _commit(path / MANIFEST)
        return path

    def stage_manifest(self, epoch: int, files: list[RankFile], info: Mapping[str, Any]) -> None:
        """`write_manifest` but its rename: the manifest under its temporary name and every
        directory of the epoch, durable (a staged manifest seals nothing)."""
        path = self.epoch_path(epoch)
        directories = {(path / file.name).parent for file in files} | {path, self.directory}
        manifest: dict[str, Any] = {
            **info,
            "geode_format": MANIFEST_FORMAT,
            "codec": CODEC_VERSION,  # the saved messages are encoded: only this codec reads them
            "per_dir": self.per_dir,
            "epoch": epoch,
            "created": time.time(),
            "ranks": len(files),
            "files": [dict(file.__dict__) for file in files],
        }
        manifest.pop("hmac", None)
        if self.key is not None:
            manifest["hmac"] = sign(manifest, self.key)
        text = json.dumps(manifest, indent=1, sort_keys=True)
        _stage(path / MANIFEST, text, after=sorted(directories))

    def prune(self) -> None:
        """Keep the newest ``keep`` complete checkpoints; remove older ones and any incomplete
        one older than the newest complete."""
        import shutil  # here, not at the top: see the lock

        for epoch in self.prunable():
            shutil.rmtree(self.epoch_path(epoch), ignore_errors=True)

    def prunable(self) -> list[int]:
        """The epochs `prune` would remove: those older than the newest usable one, but the
        newest ``keep`` usable ones. Usable: sealed, not found unusable by the restart
        (`unusable`), and its manifest passes its checks (the files are not hashed again
        here). A damaged epoch counted as one of ``keep`` had the last good one removed."""
        complete = [
            epoch
            for epoch in self.epochs(complete_only=True)
            if epoch not in self.unusable and self._passes(epoch)
        ]
        if not complete:
            return []
        keep = set(complete[: self.keep])
        newest = complete[0]
        return [
            epoch
            for epoch in self.epochs(complete_only=False)
            if epoch not in keep and epoch < newest
        ]

    def _passes(self, epoch: int) -> bool:
        try:
            self.manifest(epoch)
        except CheckpointError:
            return False
        return True

    def unseal(self, epochs: list[int]) -> list[int]:
        """Rank 0's part of pruning ``epochs`` (from `prunable`) with every rank: a sealed one
        loses its manifest (so that it is never a checkpoint with files missing), one that is
        no longer sealed is removed with what is left in it; each rank removes its own files
        (`remove_rank_file`), in parallel, instead of rank 0 removing P files alone.

        Returns:
            The epochs unsealed, whose files the ranks may remove. One whose manifest cannot
            be removed (any OSError) is left as it is, with a warning: removing an old
            checkpoint never fails the one just made.
        """
        import shutil  # see the lock

        unsealed = []
        for epoch in epochs:
            path = self.epoch_path(epoch)
            manifest = path / MANIFEST
            try:
                manifest.unlink()
            except FileNotFoundError:
                shutil.rmtree(path, ignore_errors=True)
            except OSError as exc:
                if manifest.is_dir():  # not a manifest (damage): nothing sealed there
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    log.warning("old checkpoint %s left in place: %s", path, exc)
                    continue
            unsealed.append(epoch)
        self.emptied = unsealed  # (those of before are among them: prunable, removed above)
        return unsealed

    def remove_emptied(self) -> None:
        """Rank 0, once every rank removed its files of the epochs `unseal` unsealed (a
        collective step since, as close()'s): what is left of them, their directories, which
        the next checkpoint would have removed (a finished job left the last one, empty)."""
        import shutil  # see the lock

        for epoch in self.emptied:
            if not self.sealed(epoch):  # (never: epochs are not numbered again)
                shutil.rmtree(self.epoch_path(epoch), ignore_errors=True)
        self.emptied.clear()

    def sealed(self, epoch: int) -> bool:
        """Whether ``epoch`` has a manifest (a checkpoint, complete or damaged)."""
        return (self.epoch_path(epoch) / MANIFEST).is_file()

    def discard(self, epoch: int) -> None:
        """Remove a failed epoch, never sealed by this job, with whatever is in it (rank 0,
        once every rank is done with it; each rank removed its own file already,
        `remove_rank_file`, for a directory rank 0 does not see whole). Its manifest goes
        first, should its rename have happened before the step that failed: an epoch is
        never a checkpoint with files missing. Errors are ignored: what is left is an
        incomplete epoch, which `prune` removes later."""
        import shutil  # see the lock

        path = self.epoch_path(epoch)
        with contextlib.suppress(OSError):
            (path / MANIFEST).unlink()
        shutil.rmtree(path, ignore_errors=True)

    def remove_rank_file(self, epoch: int, rank: int, ranks: int) -> None:
        """Remove ``rank``'s file of ``epoch``, if a job of ``ranks`` left one there."""
        with contextlib.suppress(OSError):
            (self.epoch_path(epoch) / rank_path(rank, ranks, self.per_dir)).unlink()
