"""A checkpoint is sealed only once every rank's file is durable: the files' entries go to rank 0
while the disk takes their fsyncs, and the manifest waits for them under its temporary name."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from geode_mpi import CheckpointError, Geode
from geode_mpi.persistence import CheckpointStore

REAL_FSYNC = os.fsync
REAL_REPLACE = os.replace


def path_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class Disk:
    """os.fsync and os.replace that log what they did, in order; a rank file's fsync takes
    ``slow`` seconds and fails with ``error`` (None: succeeds)."""

    def __init__(self, slow: float = 0.0, error: OSError | None = None) -> None:
        self.slow = slow
        self.error = error
        self.events: list[str] = []
        self.lock = threading.Lock()

    def fsync(self, fd: int) -> None:
        path = path_of(fd)
        if path.endswith(".h5"):
            time.sleep(self.slow)  # (the disk taking its time, in the fsync's thread)
            if self.error is not None:
                raise self.error
        REAL_FSYNC(fd)
        with self.lock:
            self.events.append(f"fsync {Path(path).name}")

    def replace(self, source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        REAL_REPLACE(source, target)
        with self.lock:
            self.events.append(f"replace {Path(target).name}")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(os, "fsync", self.fsync)
        monkeypatch.setattr(os, "replace", self.replace)


def first(events: list[str], match: Callable[[str], bool]) -> int:
    return next(k for k, event in enumerate(events) if match(event))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_the_manifest_is_renamed_into_place_only_after_the_rank_file_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        assert geode.checkpoint(state={"x": 1}) == 1  # numpy and h5py loaded
        disk = Disk(slow=0.2)
        disk.install(monkeypatch)
        assert geode.checkpoint(state={"x": 2}) == 2
        monkeypatch.undo()
        events = disk.events
        # The manifest was staged while the rank file's fsync still ran ...
        staged = first(events, lambda event: event == "fsync manifest.json.tmp")
        synced = first(events, lambda event: event == "fsync rank-0000.h5")
        sealed = first(events, lambda event: event == "replace manifest.json")
        assert staged < synced < sealed, events
    assert CheckpointStore(tmp_path).epochs() == [2, 1]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_a_rank_file_whose_fsync_fails_leaves_the_epoch_unsealed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        assert geode.checkpoint(state={"x": 1}) == 1
        Disk(error=OSError(5, "Input/output error")).install(monkeypatch)
        with pytest.raises(CheckpointError, match="checkpoint 2 failed: rank 0: fsync of its file"):
            geode.checkpoint(state={"x": 2})
        monkeypatch.undo()
        store = CheckpointStore(tmp_path)
        assert store.epochs() == [1]  # epoch 2: staged, never sealed
        assert not (store.epoch_path(2) / "manifest.json").exists()
        assert geode.checkpoint(state={"x": 3}) == 3  # a failed epoch is never reused
    with Geode(checkpoint_dir=tmp_path, restart=True) as again:
        assert again.restored_state == {"x": 3}
