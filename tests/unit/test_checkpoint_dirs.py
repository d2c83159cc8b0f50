"""The checkpoint directory on file systems that change under the job: a relative path and a
job that changes directory, the directory removed or replaced while the job holds it, a
damaged epoch and retention, a file system without flock, a full disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from geode_mpi import Geode


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
