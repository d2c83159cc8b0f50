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
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from geode_mpi.base.logger import log
from geode_mpi.base.record import Record
from geode_mpi.codec.header import VERSION as CODEC_VERSION
from geode_mpi.persistence.manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    check_manifest,
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
    read_rank_file,
    sha256_of,
    start_rank_file,
    write_rank_file,
)

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

LOCK = "geode.lock"
TOKEN = "token"  # the lock file's holder line ends "token <hex>" (`CheckpointStore.holds_lock`)
NO_LOCK = "GEODE_CHECKPOINT_NO_LOCK"  # "1": a file system without flock, no lock taken
# flock unsupported: no such call (ENOSYS), no lock manager (ENOLCK, NFS without lockd), not
# on this file system (EOPNOTSUPP, ENOTSUP)
_NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP}
FILES_PER_DIR = 256  # rank files (or sub-directories of them) in one directory, at most


def holder_of(text: str) -> str:
    """Who holds a lock, from its file's ``text``: its holder line without the token."""
    line = text.strip()
    return line.rsplit(f" {TOKEN} ", 1)[0] if f" {TOKEN} " in line else line


def epoch_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}"


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


# -- reading ---------------------------------------------------------------------------------


class Loaded(Record):
    """A complete checkpoint, validated: its manifest, and each rank file's path."""

    __match_args__ = ("epoch", "path", "manifest", "authenticated")

    def __init__(
        self, epoch: int, path: Path, manifest: dict[str, Any], authenticated: bool = False
    ) -> None:
        self.epoch = epoch
        self.path = path
        self.manifest = manifest
        self.authenticated = authenticated  # its HMAC was checked against the job key

    def rank_path(self, rank: int) -> Path:
        return self.path / str(self.manifest["files"][rank]["name"])

    def read(self, rank: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(attrs, tree) of one rank's file (its checksum was checked when loading).

        Raises:
            CheckpointError: any HDF5 or content error in the file (see `read_rank_file`).
        """
        return read_rank_file(self.rank_path(rank))


class CheckpointStore:
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

    # -- the lock: one job per directory -----------------------------------------------------

    def lock(self) -> None:
        """Take the directory for this job; refuse if another live job holds it.

        Raises:
            CheckpointError: another job holds the lock (named by host, pid and SLURM job);
                the path is no directory; or the directory cannot be written (read-only: a
                job writes its checkpoints there, and takes the lock even to restart).
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise CheckpointError(
                f"checkpoint_dir {str(self.directory)!r} is not a directory (a file is in the "
                "way): give the job a directory, or a path that does not exist yet"
            ) from None
        except OSError as exc:
            raise self._unwritable(exc) from exc
        try:
            handle = open(self.directory / LOCK, "a+", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise self._unwritable(exc) from exc
        try:
            self._flock(handle)
        except BaseException:
            with contextlib.suppress(OSError):
                handle.close()
            raise
        job = os.environ.get("SLURM_JOB_ID", "-")
        import secrets  # here: with shutil and socket, loaded only by ranks that checkpoint
        import socket

        token = secrets.token_hex(16)
        try:  # who holds it: for the next job's refusal, and `inspect`; the token: `holds_lock`
            handle.seek(0)
            handle.truncate()
            holder = f"host {socket.gethostname()} pid {os.getpid()} slurm job {job}"
            handle.write(f"{holder} {TOKEN} {token}\n")
            handle.flush()
            # (synced: on NFS, the other ranks' hosts read it only once it reached the server)
            os.fsync(handle.fileno())
        except OSError as exc:  # (a full disk: the lock holds all the same, and a restart reads)
            token = ""  # (nothing the other ranks can compare with)
            log.warning(
                "checkpoint_dir %s: who holds its lock not written into %s (%s): the lock "
                "holds all the same",
                self.directory,
                LOCK,
                exc.strerror or exc,
            )
        self._lock = handle
        self.lock_token = token or None

    def holds_lock(self) -> bool:
        """Whether the directory's ``geode.lock`` is still the file this job locked: on the
        rank holding it, the same device and inode as its open file (one host: a valid
        comparison); on the others, the file still holds the random token ``lock_token`` the
        locking rank wrote into it and told them (an inode number would not do: FUSE, CIFS
        without serverino and Lustre's 32-bit API number inodes per client, and each rank
        read another number for the same file). True when there is nothing to compare with.
        """
        try:
            if self._lock is not None:
                held = os.fstat(self._lock.fileno())
                there = os.stat(self.directory / LOCK)
                return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)
            if self.lock_token is not None:
                with open(self.directory / LOCK, encoding="utf-8", errors="replace") as lock:
                    words = lock.read(4096).split()
                return words[-2:] == [TOKEN, self.lock_token]
        except OSError:
            return False
        return True

    def _flock(self, handle: IO[str]) -> None:
        """The exclusive lock on ``handle`` (the directory's ``geode.lock``).

        Raises:
            CheckpointError: another job holds it (naming the holder); the file system does
                not support flock (unless ``GEODE_CHECKPOINT_NO_LOCK=1``); any other error,
                naming the file.
        """
        path = self.directory / LOCK
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = holder_of(handle.read()) or "unknown"
            raise CheckpointError(
                f"checkpoint directory {self.directory} is in use by another job ({holder}); "
                "give each job its own directory"
            ) from None
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise CheckpointError(
                    f"checkpoint_dir {str(self.directory)!r}: {path} cannot be locked "
                    f"({exc.strerror or exc})"
                ) from exc
            if os.environ.get(NO_LOCK) == "1":
                log.warning("checkpoint_dir %s: not locked (%s=1)", self.directory, NO_LOCK)
                return
            raise CheckpointError(
                f"checkpoint_dir {str(self.directory)!r}: its file system does not support "
                f"flock ({exc.strerror or exc}, locking {path}), which keeps a second job out "
                "of the directory: put it on a file system that does (a local disk, Lustre "
                f"mounted with -o flock), or set {NO_LOCK}=1 to run without the lock (then "
                "no other job may use this directory)"
            ) from exc

    def check_lock(self) -> None:
        """Check that the lock this job holds is still the directory's ``geode.lock``
        (`holds_lock`); nothing to check when there is nothing to compare with.

        Raises:
            CheckpointError: the directory was removed, renamed or replaced while this job
                held it: its lock went with it, and another job may have taken the path.
        """
        if not self.holds_lock():
            raise CheckpointError(
                f"checkpoint directory {self.directory} was removed or replaced while this job "
                f"held it (its {LOCK} is not the file this job locked): its checkpoints and its "
                "lock went with it, and another job may use the path now; nothing is written "
                "there: end the job, and give the next one a directory of its own"
            )

    def _unwritable(self, exc: OSError) -> CheckpointError:
        return CheckpointError(
            f"checkpoint_dir {str(self.directory)!r} cannot be written ({exc.strerror or exc}): "
            "a job writes its checkpoints there and locks it, even to restart; to restart "
            "from a read-only (archived) checkpoint, copy the directory somewhere writable"
        )

    def unlock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):  # (a holder line a full disk kept buffered)
                self._lock.close()
            self._lock = None

    # -- writing an epoch --------------------------------------------------------------------

    def epoch_path(self, epoch: int) -> Path:
        return self.directory / epoch_name(epoch)

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
        return unsealed

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
            if not complete_only or (entry / MANIFEST).is_file():
                found.append(epoch)
        return sorted(found, reverse=True)

    def manifest(self, epoch: int) -> dict[str, Any]:
        """An epoch's manifest, parsed and checked: its shape, and its HMAC with a key.

        Raises:
            CheckpointError: naming the manifest and what is wrong with it.
        """
        manifest_path = self.epoch_path(epoch) / MANIFEST
        try:
            text = manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CheckpointError(
                f"{manifest_path}: missing (the checkpoint is incomplete)"
            ) from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{manifest_path}: unreadable: {exc}") from exc
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"{manifest_path}: unreadable: {exc}") from exc
        return check_manifest(manifest_path, epoch, parsed, self.key)

    def validate(self, epoch: int, rank: int | None = None) -> Loaded:
        """Check an epoch's manifest and every file it lists (or only ``rank``'s: each rank of
        a restarting job checks its own, in parallel), before anything is read.

        Raises:
            CheckpointError: naming the file and what is wrong with it.
        """
        path = self.epoch_path(epoch)
        manifest = self.manifest(epoch)
        manifest_path = path / MANIFEST
        entries = manifest["files"]
        if rank is not None:
            if not 0 <= rank < len(entries):
                raise CheckpointError(f"{manifest_path}: has no file for rank {rank}")
            entries = [entries[rank]]
        self.check_files(epoch, entries)
        return Loaded(epoch, path, manifest, self.key is not None)

    def check_files(self, epoch: int, entries: list[dict[str, Any]]) -> None:
        """Check rank files against their manifest entries (from `manifest`): each is there,
        with its size and SHA-256.

        Raises:
            CheckpointError: naming the file and what is wrong with it.
        """
        for entry in entries:
            file = self.epoch_path(epoch) / entry["name"]
            if not file.exists():
                raise CheckpointError(f"{file}: missing (listed in the manifest)")
            size = file.stat().st_size
            if size != entry["size"]:
                raise CheckpointError(
                    f"{file}: {size} bytes, the manifest says {entry['size']} (truncated?)"
                )
            if sha256_of(file) != entry["sha256"]:
                raise CheckpointError(f"{file}: checksum mismatch (corrupted)")

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
