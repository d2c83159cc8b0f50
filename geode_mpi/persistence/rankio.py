"""The files under a rank's checkpoint file: the output HDF5 writes it through, its fsync in a
thread, its hash, and a directory's fsync."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

from geode_mpi.base.gate import own_thread
from geode_mpi.base.interrupts import interruptible

_HASH_READ = 256 * 1024  # bytes hashed per read


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


# A directory's fsync refused as unsupported (some network and FUSE file systems): ignored,
# as PostgreSQL and SQLite do; the files themselves are still fsynced.
_NO_DIR_SYNC = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}


def fsync_dir(path: Path) -> None:
    """Make ``path``'s entries durable (its files' names); a file system that does not
    support it is let be.

    Raises:
        OSError: any other error, naming the directory.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno in _NO_DIR_SYNC:
            return
        raise OSError(exc.errno, f"fsync of directory: {exc.strerror}", str(path)) from exc


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
        self.path = path
        self.error: OSError | None = None
        self.handle = open(path, "rb+")  # noqa: SIM115 (closed by wait)
        self.thread = own_thread(
            threading.Thread(target=self._sync, name="geode-fsync", daemon=True)
        )
        self.thread.start()

    def _sync(self) -> None:
        try:
            os.fsync(self.handle.fileno())
        except OSError as exc:
            self.error = exc
        finally:  # (here, not in `wait`: a wait that gave up leaves the fsync running)
            self.handle.close()

    @interruptible
    def wait(self, deadline: float | None = None) -> None:
        """Return once the file is durable.

        Args:
            deadline: `time.monotonic` past which to give up (None: no limit).

        Raises:
            TimeoutError: the fsync had not finished by ``deadline`` (it goes on).
            OSError: the fsync failed, naming the file.
        """
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        self.thread.join(remaining)
        if self.thread.is_alive():
            raise TimeoutError(f"the fsync of {self.path}")
        if self.error is not None:  # naming the file
            error = self.error
            raise OSError(error.errno, error.strerror, str(self.path)) from error
