"""The checkpoint directory as every rank sees it: a relative path resolved once, on rank 0,
when the Geode is made (each rank may change directory after); a directory another job holds
refused on every rank, never a hang. At 1 rank rank 0 is every rank."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geode_mpi import CheckpointError, Geode, Message
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
