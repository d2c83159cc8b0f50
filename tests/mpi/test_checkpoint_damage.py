"""Damaged checkpoints at 1, 2 and 4 ranks: when one rank's file of the newest epoch is damaged
in a way its checksum cannot see, every rank falls back to the previous epoch together; when
every epoch is damaged, every rank stops with the same error (no rank waits for another)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message
from geode_mpi.persistence import CheckpointError, CheckpointStore, write_rank_file
from geode_mpi.persistence.store import JsonValue

TIMEOUT = 60.0


def comm() -> Any:
    from mpi4py import MPI

    return MPI.COMM_WORLD


@pytest.fixture
def directory() -> Any:
    with Geode() as probe:
        size = probe.size
    if size == 1:
        path = Path(tempfile.mkdtemp(prefix="geode-damage-"))
        yield path
    else:
        name = tempfile.mkdtemp(prefix="geode-damage-") if comm().Get_rank() == 0 else None
        path = Path(comm().bcast(name, root=0))
        yield path
        comm().Barrier()
    if size == 1 or comm().Get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)


def two_epochs(directory: Path) -> tuple[list[str], int]:
    """Epochs 1 and 2, each rank's state naming its epoch and rank; every node sends one
    message to every node before each. The job's nodes and size."""
    with Geode(checkpoint_dir=directory, keep_checkpoints=3) as geode:
        for step in (1, 2):
            for source in geode.local_nodes:
                for dest in geode.nodes:
                    geode.send(Message((step, source)), source, dest)
            geode.checkpoint(state={"step": step, "rank": geode.rank, "grid": np.full(3, step)})
        return list(geode.nodes), geode.size


def damage_content(directory: Path, epoch: int, rank: int) -> None:
    """Rewrite one rank's file as valid HDF5 with a matching checksum, whose pair numbers are
    not numbers: damage only reading it can find."""
    path = directory / f"epoch-{epoch:06d}"
    attrs, tree = CheckpointStore(directory).validate(epoch, rank).read(rank)
    pairs = tree["engine"]["pairs_in"]
    pairs[0]["numbers"] = ["damaged"] * 6
    tree["engine"]["pairs_in"] = JsonValue(pairs)
    tree["engine"]["pairs_out"] = JsonValue(tree["engine"]["pairs_out"])
    (path / f"rank-{rank:04d}.h5").unlink()
    written = write_rank_file(path, rank, attrs, tree)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][rank].update(size=written.size, sha256=written.sha256)
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert hashlib.sha256((path / written.name).read_bytes()).hexdigest() == written.sha256


def damage_on_the_last_rank(directory: Path, size: int, epochs: tuple[int, ...]) -> None:
    rank = 0 if size == 1 else comm().Get_rank()
    if rank == 0:
        for epoch in epochs:
            damage_content(directory, epoch, size - 1)
    if size > 1:
        comm().Barrier()


def test_one_ranks_damaged_file_makes_every_rank_fall_back_together(directory: Path) -> None:
    nodes, size = two_epochs(directory)
    damage_on_the_last_rank(directory, size, (2,))
    geode = Geode(checkpoint_dir=directory, keep_checkpoints=3, restart=True)
    assert geode.restored_epoch == 1  # on every rank, including those whose file was good
    assert geode.restored_state is not None
    assert geode.restored_state["step"] == 1 and geode.restored_state["rank"] == geode.rank
    for node in geode.local_nodes:
        got = sorted(geode.receive(node, timeout=TIMEOUT).data for _ in nodes)
        assert got == sorted((1, source) for source in nodes)  # epoch 1's messages, once
    for node in geode.local_nodes:
        assert geode.try_receive(node) is None
    geode.close(timeout=TIMEOUT)


def test_every_epoch_damaged_stops_every_rank_with_the_same_error(directory: Path) -> None:
    _, size = two_epochs(directory)
    damage_on_the_last_rank(directory, size, (1, 2))
    with pytest.raises(CheckpointError) as caught:
        Geode(checkpoint_dir=directory, keep_checkpoints=3, restart=True)
    text = str(caught.value)
    assert f"restart: {directory} holds checkpoint(s) 2, 1 and none can be used" in text
    assert f"rank-{size - 1:04d}.h5: engine/pairs_in[0]/numbers" in text
