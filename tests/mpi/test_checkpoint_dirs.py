"""The checkpoint directory as every rank sees it: a relative path resolved once, on rank 0,
when the Geode is made (each rank may change directory after); a directory another job holds
refused on every rank, never a hang. At 1 rank rank 0 is every rank."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from client_inodes import numbered_here

from geode_mpi import CheckpointError, Geode, Message, WorldMismatchError
from geode_mpi.persistence import CheckpointStore

# (`directory`: a checkpoint directory every rank shares, from conftest.py)
TIMEOUT = 30.0


def test_each_rank_changing_directory_after_geode_checkpoints_into_one_directory(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each rank changes into its own run directory after Geode(checkpoint_dir="ck"): every
    file still goes to the one "ck" (rank 0 sealed a manifest of files that went elsewhere,
    and a restart started afresh)."""
    monkeypatch.chdir(directory)
    geode = Geode(checkpoint_dir="ck")
    run = directory / f"run{geode.rank}"
    run.mkdir()
    monkeypatch.chdir(run)
    for node in geode.local_nodes:
        geode.send(Message(f"m-{node}"), node, geode.nodes[0])
    assert geode.checkpoint(state={"rank": geode.rank}, timeout=TIMEOUT) == 1
    assert geode.checkpoint(state={"rank": geode.rank}, timeout=TIMEOUT) == 2
    geode.close(timeout=TIMEOUT)
    assert not (run / "ck").exists()
    monkeypatch.chdir(directory)
    with Geode(checkpoint_dir="ck", restart=True) as again:
        assert again.restored_epoch == 2
        assert again.restored_state == {"rank": again.rank}
        if again.hosts(again.nodes[0]):
            got = sorted(again.receive(again.nodes[0], timeout=TIMEOUT).data for _ in again.nodes)
            assert got == sorted(f"m-{node}" for node in again.nodes)


@pytest.mark.parametrize("restart", [False, True])
def test_a_directory_another_job_holds_is_refused_on_every_rank(
    directory: Path, restart: bool
) -> None:
    """Rank 0 finds the lock taken: every rank raises it in Geode() (the others waited in the
    restore's broadcast, or in their first checkpoint, for ever)."""
    with Geode() as probe:
        rank = probe.rank
    other = CheckpointStore(directory)  # another job: its flock, on its own open file
    if rank == 0:
        other.lock()
    try:
        with pytest.raises(CheckpointError, match=r"is in use by another job \(host .* pid "):
            Geode(checkpoint_dir=directory, restart=restart)
    finally:
        other.unlock()
    from test_checkpoints import barrier

    barrier(probe.size)  # every rank refused before the lock is free for the next test


def test_a_directory_replaced_mid_run_is_refused_on_every_rank_and_left_alone(
    directory: Path,
) -> None:
    """The directory is moved aside and another job takes the path, its own epoch 2 there:
    this job's checkpoint 2 fails on every rank, writing nothing into the other job's
    directory and removing nothing of it (its ranks wrote over the other job's files)."""
    from test_checkpoints import barrier

    ck = directory / "ck"
    geode = Geode(checkpoint_dir=ck)
    assert geode.checkpoint(state={"job": "A"}, timeout=TIMEOUT) == 1
    other = CheckpointStore(ck)
    barrier(geode.size)
    if geode.rank == 0:
        os.rename(ck, directory / "aside")
        other.lock()  # job B
        for epoch in (1, 2):
            other.prepare(epoch)
            files = [other.write_rank(epoch, 0, 1, {}, {"job": b"B"})]
            other.write_manifest(epoch, files, {"nodes": ["b"]})
    barrier(geode.size)
    try:
        with pytest.raises(CheckpointError, match="removed or replaced while this job held it"):
            geode.checkpoint(state={"job": "A"}, timeout=TIMEOUT)
        if geode.rank == 0:
            assert other.epochs() == [2, 1]
            assert other.validate(2).read(0)[1] == {"job": b"B"}
            assert sorted(path.name for path in (ck / "epoch-000002").iterdir()) == [
                "manifest.json",
                "rank-0000.h5",
            ]
        barrier(geode.size)
    finally:
        geode.close(timeout=TIMEOUT)
        other.unlock()


@pytest.mark.parametrize("given", ["argument", "environment"])
def test_a_checkpoint_dir_on_some_ranks_only_is_refused_on_every_rank(
    directory: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """Only the last rank has a checkpoint directory: every rank raises, naming it, in
    Geode() (the others never joined the lock's broadcast, and every rank hung)."""
    with Geode() as probe:
        rank, size = probe.rank, probe.size
    if size == 1:
        pytest.skip("one rank: it has a checkpoint directory or not, no other to differ")
    monkeypatch.delenv("GEODE_CHECKPOINT_DIR", raising=False)
    mine = directory / "ck" if rank == size - 1 else None
    if given == "environment" and mine is not None:
        monkeypatch.setenv("GEODE_CHECKPOINT_DIR", str(mine))
        mine = None
    with pytest.raises(WorldMismatchError, match=r"checkpoint_dir set: (True|False)") as caught:
        Geode(checkpoint_dir=mine)
    assert f"rank {size - 1} disagrees with rank 0" in str(caught.value)
    assert "GEODE_CHECKPOINT_DIR, on every rank or on none" in str(caught.value)
    assert not (directory / "ck").exists()  # refused before anything was made or locked


def test_a_lock_file_numbered_per_client_is_still_this_jobs(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranks other than 0 see another inode number for the lock file than rank 0 (a FUSE
    mount, CIFS without serverino, Lustre's 32-bit API): checkpoints go on (every one failed
    on every rank, "removed or replaced"); a lock file replaced is still refused."""
    with Geode() as probe:
        rank, size = probe.rank, probe.size
    if size == 1:
        pytest.skip("one rank: rank 0 compares its own open file, on its own host")
    if rank != 0:
        monkeypatch.setattr(os, "stat", numbered_here(os.stat))
    from test_checkpoints import barrier

    ck = directory / "ck"
    with Geode(checkpoint_dir=ck) as geode:
        assert geode.checkpoint(state={"rank": rank}, timeout=TIMEOUT) == 1
        assert geode.checkpoint(state={"rank": rank}, timeout=TIMEOUT) == 2
        barrier(size)
        if rank == 0:  # the lock file replaced (its path given to another job's lock)
            os.rename(ck / "geode.lock", directory / "old.lock")
            (ck / "geode.lock").write_text("host other pid 1 slurm job - token 00\n")
        barrier(size)
        with pytest.raises(CheckpointError, match="removed or replaced while this job held it"):
            geode.checkpoint(state={"rank": rank}, timeout=TIMEOUT)
