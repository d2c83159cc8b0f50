"""The lock of a checkpoint directory: one job per directory, and who holds it
(`CheckpointStore`'s part; store.py assembles it)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import IO

from geode_mpi.base.logger import log
from geode_mpi.persistence.rankfile import CheckpointError

LOCK = "geode.lock"
TOKEN = "token"  # the lock file's holder line ends "token <hex>" (`CheckpointStore.holds_lock`)
NO_LOCK = "GEODE_CHECKPOINT_NO_LOCK"  # "1": a file system without flock, no lock taken
# flock unsupported: no such call (ENOSYS), no lock manager (ENOLCK, NFS without lockd), not
# on this file system (EOPNOTSUPP, ENOTSUP)
_NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP}


def holder_of(text: str) -> str:
    """Who holds a lock, from its file's ``text``: its holder line without the token."""
    line = text.strip()
    return line.rsplit(f" {TOKEN} ", 1)[0] if f" {TOKEN} " in line else line


class Locking:
    """`CheckpointStore`'s lock (the state its ``__init__`` sets, declared here)."""

    directory: Path
    _lock: IO[str] | None
    lock_token: str | None

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
