"""The checkpoint directory on file systems that change under the job: a relative path and a
job that changes directory, the directory removed or replaced while the job holds it, a
damaged epoch and retention, a file system without flock, a full disk."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import pytest
from client_inodes import numbered_here
from mpirun import load_slack

from geode_mpi import CheckpointError, Geode, GeodeTimeoutError, Message, WorldMismatchError
from geode_mpi.persistence import CheckpointStore, store_lock
from geode_mpi.transport import InProcHub


def test_a_relative_checkpoint_dir_is_resolved_once_when_the_geode_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job changes directory after Geode(): its checkpoints still go where it was made
    (they went to the new directory's "ck", and a restart from the first started afresh)."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    geode = Geode(checkpoint_dir="ck")
    monkeypatch.chdir(elsewhere)
    assert geode.checkpoint(state={"step": 1}) == 1
    geode.close()
    assert not (elsewhere / "ck").exists()
    assert (start / "ck" / "epoch-000001" / "manifest.json").is_file()
    monkeypatch.chdir(start)
    with Geode(checkpoint_dir="ck", restart=True) as again:
        assert again.restored_epoch == 1
        assert again.restored_state == {"step": 1}


def test_a_directory_removed_while_the_job_holds_it_is_not_made_again(tmp_path: Path) -> None:
    """Removed mid-run (a user's rm -rf), the directory was made again by the next checkpoint,
    without a lock: a second job could take it, and this one later restored that job's state."""
    directory = tmp_path / "ck"
    with Geode(checkpoint_dir=directory) as geode:
        assert geode.checkpoint(state={"step": 1}) == 1
        shutil.rmtree(directory)
        with pytest.raises(CheckpointError, match=rf"{directory} was removed or replaced while"):
            geode.checkpoint(state={"step": 2})
        assert not directory.exists()


def test_a_directory_replaced_while_the_job_holds_it_is_refused(tmp_path: Path) -> None:
    """Renamed aside and made again, another job locking it: this job's checkpoints went into
    the other job's directory."""
    directory = tmp_path / "ck"
    with Geode(checkpoint_dir=directory) as geode:
        assert geode.checkpoint(state={"job": "A"}) == 1
        directory.rename(tmp_path / "aside")
        other = CheckpointStore(directory)
        other.lock()  # job B, on the same path
        try:
            with pytest.raises(CheckpointError, match="removed or replaced while this job held"):
                geode.checkpoint(state={"job": "A"})
            assert other.epochs(complete_only=False) == []
        finally:
            other.unlock()


def test_a_finished_job_leaves_only_complete_checkpoints(tmp_path: Path) -> None:
    """The epoch pruned by the job's last checkpoint was left behind as an empty folder
    (its manifest and files removed, its directory kept for the next checkpoint, which never
    came); a restart from the directory still resumes from the newest."""
    directory = tmp_path / "ck"
    with Geode(checkpoint_dir=directory) as geode:
        for step in range(4):
            assert geode.checkpoint(state={"step": step}) == step + 1
    assert sorted(entry.name for entry in directory.iterdir()) == [
        "epoch-000003",
        "epoch-000004",
        "geode.lock",
    ]
    assert CheckpointStore(directory).epochs(complete_only=False) == [4, 3]
    with Geode(checkpoint_dir=directory, restart=True) as again:
        assert again.restored_epoch == 4
        assert again.restored_state == {"step": 3}
        assert again.checkpoint(state={"step": 4}) == 5
    assert CheckpointStore(directory).epochs(complete_only=False) == [5, 4]


def test_a_damaged_epoch_is_not_one_of_the_checkpoints_kept(tmp_path: Path) -> None:
    """A restart fell back from damaged epoch 2 to epoch 1; the next checkpoint kept epoch 2
    as one of its two and removed epoch 1, the only good one but the new."""
    directory = tmp_path / "ck"
    with Geode(checkpoint_dir=directory) as geode:
        geode.checkpoint(state={"step": 1})
        geode.checkpoint(state={"step": 2})
    with open(directory / "epoch-000002" / "rank-0000.h5", "r+b") as damaged:
        damaged.seek(200)
        damaged.write(b"garbage")
    with Geode(checkpoint_dir=directory, restart=True) as again:
        assert again.restored_epoch == 1
        assert again.checkpoint(state={"step": 3}) == 3
    store = CheckpointStore(directory)
    assert store.epochs() == [3, 1]
    store.validate(1)


@pytest.mark.parametrize("damage", ["", "{", '{"epoch": 2}'])
def test_an_epoch_with_a_damaged_manifest_is_not_one_of_the_checkpoints_kept(
    tmp_path: Path, damage: str
) -> None:
    directory = tmp_path / "ck"
    with Geode(checkpoint_dir=directory) as geode:
        geode.checkpoint(state={"step": 1})
        geode.checkpoint(state={"step": 2})
        (directory / "epoch-000002" / "manifest.json").write_text(damage)
        assert geode.checkpoint(state={"step": 3}) == 3
    assert CheckpointStore(directory).epochs() == [3, 1]


def _flock_unsupported(handle: object, operation: int) -> None:
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))


def test_a_file_system_without_flock_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flock unsupported (ENOSYS, ENOLCK, EOPNOTSUPP) was a bare OSError without a path."""
    monkeypatch.setattr(store_lock.fcntl, "flock", _flock_unsupported)
    monkeypatch.delenv("GEODE_CHECKPOINT_NO_LOCK", raising=False)
    directory = tmp_path / "ck"
    with pytest.raises(CheckpointError, match=r"'.*ck': its file system does not support flock"):
        Geode(checkpoint_dir=directory)
    monkeypatch.setenv("GEODE_CHECKPOINT_NO_LOCK", "1")  # as the message says
    with Geode(checkpoint_dir=directory) as geode:
        assert geode.checkpoint(state={"step": 1}) == 1
    with Geode(checkpoint_dir=directory, restart=True) as again:
        assert again.restored_state == {"step": 1}


class _FullDisk:
    """The lock file on a full disk: its holder line cannot be written."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle

    def __getattr__(self, name: str) -> object:
        return getattr(self.handle, name)

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        self.handle.close()


def test_a_full_disk_does_not_stop_a_restart_at_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC writing who holds the lock was a bare OSError, and stopped restarts too."""
    directory = tmp_path / "ck"
    with Geode(checkpoint_dir=directory) as geode:
        geode.checkpoint(state={"step": 1})

    def full(path: Path, *args: Any, **kwargs: Any) -> Any:
        return _FullDisk(open(path, *args, **kwargs))

    monkeypatch.setattr(store_lock, "open", full, raising=False)
    with Geode(checkpoint_dir=directory, restart=True) as again:
        assert again.restored_state == {"step": 1}
        other = CheckpointStore(directory)
        with pytest.raises(CheckpointError, match="in use by another job"):
            other.lock()  # still locked


def _fsync_failing(directories: OSError | None, files: OSError | None) -> Any:
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            if directories is not None:
                raise directories
        elif files is not None and os.readlink(f"/proc/self/fd/{fd}").endswith(".h5"):
            raise files
        real(fd)

    return fsync


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_a_directory_fsync_not_supported_is_let_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """As PostgreSQL and SQLite do: the files are still fsynced (it failed every checkpoint
    with a bare OSError)."""
    monkeypatch.setattr(os, "fsync", _fsync_failing(OSError(code, os.strerror(code)), None))
    directory = tmp_path / "ck"
    with Geode(checkpoint_dir=directory) as geode:
        assert geode.checkpoint(state={"step": 1}) == 1
    with Geode(checkpoint_dir=directory, restart=True) as again:
        assert again.restored_state == {"step": 1}


def test_a_failed_fsync_names_the_file_or_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    eio = OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "fsync", _fsync_failing(None, eio))
    directory = tmp_path / "ck"
    with Geode(checkpoint_dir=directory) as geode:
        match = r"rank 0: fsync of its file: \[Errno 5\] .*epoch-000001/rank-0000\.h5'"
        with pytest.raises(CheckpointError, match=match):
            geode.checkpoint(state={"step": 1})
        monkeypatch.setattr(os, "fsync", _fsync_failing(eio, None))
        with pytest.raises(CheckpointError, match=r"fsync of directory: .*ck"):
            geode.checkpoint(state={"step": 2})


class _SlowDisk:
    """os.fsync held on the files whose name ends with ``suffix`` until released (a file
    system that takes its time)."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.released = threading.Event()
        self.real = os.fsync

    def fsync(self, fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(self.suffix):
            self.released.wait(30)
        self.real(fd)


@pytest.mark.parametrize(
    ("suffix", "where"),
    [
        (".h5", r"in this rank's fsync of .*epoch-000002/rank-0000\.h5$"),
        ("manifest.json.tmp", r"in rank 0's writing and fsync of .*epoch-000002/manifest\.json"),
    ],
)
@pytest.mark.parametrize("call", ["checkpoint", "maybe_checkpoint"])
def test_the_timeout_bounds_the_fsyncs_and_names_the_slow_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, where: str, call: str
) -> None:
    """A rank's own fsync and the manifest's were waited for without a deadline, and the
    timeout blamed "waiting for the other ranks"; maybe_checkpoint said checkpoint()."""
    with Geode(checkpoint_dir=tmp_path / "ck", checkpoint_every_messages=1) as geode:
        assert geode.checkpoint() == 1  # numpy and h5py loaded: only the timed call below
        disk = _SlowDisk(suffix)
        monkeypatch.setattr(os, "fsync", disk.fsync)
        geode.send(Message(1), geode.node, geode.node)  # (maybe_checkpoint's policy: due)
        started = time.monotonic()
        try:
            with pytest.raises(
                GeodeTimeoutError, match=rf"^{call}\(\) on rank 0 timed out after 0.5 s {where}"
            ):
                getattr(geode, call)(timeout=0.5)
            assert time.monotonic() - started < 0.5 + 5.0 * load_slack()  # (not 30 s)
        finally:
            disk.released.set()
            monkeypatch.setattr(os, "fsync", disk.real)


def test_a_checkpoint_dir_on_some_simulated_ranks_only_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    """Rank 1 alone has a checkpoint directory: refused in Geode() naming checkpoint_dir
    (under MPI the others never joined its first collective, and the job hung)."""
    hub = InProcHub(2)
    first = Geode(transport=hub.endpoint(0))
    with pytest.raises(WorldMismatchError, match="whether a checkpoint_dir is set"):
        Geode(transport=hub.endpoint(1), checkpoint_dir=tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    first.close()


@pytest.mark.parametrize("given", ["argument", "environment"])
def test_simulated_ranks_of_one_process_take_a_checkpoint_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """An InProcHub of two ranks with a checkpoint directory: Geode() works again (it failed
    with "bcast needs every rank at once", naming no checkpoint); checkpoint() says it
    needs MPI, as docs/checkpoints.md says."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEODE_CHECKPOINT_DIR", raising=False)
    if given == "environment":
        monkeypatch.setenv("GEODE_CHECKPOINT_DIR", "ck")
    hub = InProcHub(2)
    geodes = [
        Geode(transport=hub.endpoint(rank), checkpoint_dir="ck" if given == "argument" else None)
        for rank in range(2)
    ]
    assert (tmp_path / "ck" / "geode.lock").is_file()  # rank 0 locked it
    with pytest.raises(RuntimeError, match="share one thread: use MPI"):
        geodes[0].checkpoint()
    for geode in geodes:
        geode.close()


def test_a_lock_file_numbered_per_client_is_still_the_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other ranks compare the token rank 0 wrote into the lock file, not its inode
    number, which FUSE, CIFS without serverino and Lustre's 32-bit API number per client."""
    directory = tmp_path / "ck"
    locking, other = CheckpointStore(directory), CheckpointStore(directory)
    locking.lock()
    other.lock_token = locking.lock_token  # (rank 0 tells the others: `Checkpointer._claim`)
    real = os.stat
    monkeypatch.setattr(os, "stat", numbered_here(real))
    assert other.holds_lock()
    other.check_lock()
    monkeypatch.setattr(os, "stat", real)
    assert "token" not in store_lock.holder_of((directory / "geode.lock").read_text())
    os.rename(directory, tmp_path / "aside")  # replaced: another job's lock there
    replacing = CheckpointStore(directory)
    replacing.lock()
    assert not other.holds_lock()
    assert not locking.holds_lock()
    shutil.rmtree(directory)
    assert not other.holds_lock()
    replacing.unlock()
    locking.unlock()


_HUNG_MANIFEST = """
import sys, time
from geode_mpi import Geode
from geode_mpi.persistence import CheckpointStore

def hung(self, *args, **kwargs):  # a manifest write hung on an NFS mount
    time.sleep(60)

CheckpointStore.stage_manifest = hung
geode = Geode(checkpoint_dir=sys.argv[1])
try:
    geode.checkpoint(timeout=0.5)
except TimeoutError as exc:
    print("timed out:", exc, flush=True)
geode.close(timeout=2)
"""


def test_a_checkpoint_that_timed_out_on_a_hung_write_lets_the_process_exit(
    tmp_path: Path,
) -> None:
    """The manifest's write given up on at the timeout went on in a pool's thread, which
    the interpreter joins at exit: the process (and MPI's finalisation) waited for it."""
    started = time.monotonic()
    ran = subprocess.run(
        [sys.executable, "-c", _HUNG_MANIFEST, str(tmp_path / "ck")],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert "timed out: checkpoint() on rank 0 timed out after 0.5 s" in ran.stdout, ran.stderr
    assert ran.returncode == 0, ran.stderr
    assert time.monotonic() - started < 10.0 * load_slack()  # (not 60 s)
