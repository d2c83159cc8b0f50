"""The checkpoint layout at scale (rank files in sub-directories of bounded size), the old
format 3 and others refused by version, the codec version checked, per-node state."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geode_mpi import Geode, Message
from geode_mpi.codec import header
from geode_mpi.errors import UnknownNodeError
from geode_mpi.persistence import CheckpointError, CheckpointStore


def write_ranks(store: CheckpointStore, epoch: int, ranks: int) -> Path:
    store.prepare(epoch, ranks)
    files = [
        store.write_rank(epoch, rank, ranks, {"rank": rank}, {"x": np.full(3, rank)})
        for rank in range(ranks)
    ]
    return store.write_manifest(epoch, files, {"nodes": [f"node{k}" for k in range(ranks)]})


def test_rank_files_go_in_subdirectories_of_at_most_per_dir_files(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.per_dir = 2
    path = write_ranks(store, 1, 5)
    entries = sorted(entry.name for entry in path.iterdir())
    assert entries == ["manifest.json", "ranks-0000", "ranks-0001", "ranks-0002"]
    for group in ("ranks-0000", "ranks-0001", "ranks-0002"):
        assert len(list((path / group).iterdir())) <= 2
    assert (path / "ranks-0002" / "rank-0004.h5").exists()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["geode_format"] == 4 and manifest["per_dir"] == 2
    loaded = store.validate(1)
    for rank in range(5):
        attrs, tree = loaded.read(rank)
        assert attrs == {"rank": rank} and np.array_equal(tree["x"], np.full(3, rank))


def test_a_job_of_at_most_per_dir_ranks_keeps_its_files_in_the_epoch_directory(
    tmp_path: Path,
) -> None:
    path = write_ranks(CheckpointStore(tmp_path), 1, 3)
    assert sorted(entry.name for entry in path.iterdir()) == [
        "manifest.json",
        "rank-0000.h5",
        "rank-0001.h5",
        "rank-0002.h5",
    ]


def test_a_file_listed_in_another_subdirectory_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.per_dir = 2
    path = write_ranks(store, 1, 3)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][2]["name"] = "ranks-0000/rank-0002.h5"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="files\\[2\\] must be {name: 'ranks-0001/rank-0002"):
        store.validate(1)


def as_format(path: Path, version: int) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["geode_format"] = version
    manifest.pop("per_dir", None)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_a_format_3_checkpoint_is_refused_naming_its_version(tmp_path: Path) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        geode.send(Message("queued"), "node0", "node1")
        geode.checkpoint(state={"step": 3})
    # what geode_mpi wrote before per_dir: its messages were in codec version 4
    as_format(tmp_path / "epoch-000001", 3)
    with pytest.raises(CheckpointError, match="checkpoint format 3, this geode_mpi reads format 4"):
        CheckpointStore(tmp_path).validate(1)


def test_a_checkpoint_of_another_codec_is_refused_naming_it(tmp_path: Path) -> None:
    path = write_ranks(CheckpointStore(tmp_path), 1, 1)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["codec"] == header.VERSION
    manifest["codec"] = header.VERSION - 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=f"codec version {header.VERSION - 1}, this"):
        CheckpointStore(tmp_path).validate(1)


def test_a_checkpoint_of_another_format_is_refused_naming_its_version(tmp_path: Path) -> None:
    path = write_ranks(CheckpointStore(tmp_path), 1, 1)
    as_format(path, 5)
    with pytest.raises(CheckpointError, match="checkpoint format 5, this geode_mpi reads format 4"):
        CheckpointStore(tmp_path).validate(1)


def test_per_node_state_comes_back_for_each_node(tmp_path: Path) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        node_state = {"node1": {"count": 4, "grid": np.arange(3.0)}, 2: ["by", "index"]}
        geode.checkpoint(node_state=node_state)
    with Geode(checkpoint_dir=tmp_path, restart=True) as again:
        first = again.restored_node_state("node1")
        assert first["count"] == 4 and np.array_equal(first["grid"], np.arange(3.0))
        assert again.restored_node_state("node2") == ["by", "index"]
        assert again.restored_node_state(0, "none saved") == "none saved"
        assert again.restored_state == {}


def test_per_node_state_of_an_unknown_node_is_refused(tmp_path: Path) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        # (a CheckpointError on every rank, from the error of the rank that made it)
        with pytest.raises(CheckpointError, match="node_state") as raised:
            geode.checkpoint(node_state={"node9": 1})
        assert isinstance(raised.value.__cause__, UnknownNodeError)
        with pytest.raises(CheckpointError, match="node_state must be a mapping") as raised:
            geode.checkpoint(node_state=[1])  # type: ignore[arg-type]
        assert isinstance(raised.value.__cause__, TypeError)
