"""The checkpoint directory on file systems that change under the job: a relative path and a
job that changes directory, the directory removed or replaced while the job holds it, a
damaged epoch and retention, a file system without flock, a full disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from geode_mpi import CheckpointError, Geode
from geode_mpi.persistence import CheckpointStore


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
