"""A rank's file in format 4: an index, a blob and the large values; format 3 files still read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from geode_mpi.persistence import CheckpointError, write_rank_file
from geode_mpi.persistence.layout import OWN_DATASET, JsonValue
from geode_mpi.persistence.rankfile import CHUNK_BYTES, chunk_shape, read_rank_file

BIG = np.arange(OWN_DATASET // 8 + 1, dtype=np.float64)  # just over: a dataset of its own
TREE: dict[str, Any] = {
    "state": {"step": 3, "grid": np.arange(12.0).reshape(3, 4), "big": BIG},
    "flags": np.array([True, False]),
    "complex": np.array([1 + 2j], np.complex64),
    "scalar": np.array(7, np.int16),
    "empty": np.zeros((0, 3), np.float32),
    "strided": np.arange(20, dtype=np.int32)[::3],
    "metas": b"\x02\x00abc",
    "nothing": b"",
    "large bytes": bytes(range(256)) * (OWN_DATASET // 256 + 1),
    "counters": JsonValue({"sent": 4, "names": ["a", "b"]}),
    "none": None,
    "nested": {"deeper": {"deepest": {}}},
}


def same(got: Any, want: Any) -> bool:
    if isinstance(want, JsonValue):
        return bool(got == want.value)
    if isinstance(want, dict):
        return set(got) == set(want) and all(same(got[k], want[k]) for k in want)
    if isinstance(want, np.ndarray):
        return got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    return bool(got == want)


def test_every_kind_of_leaf_reads_back_as_written(tmp_path: Path) -> None:
    written = write_rank_file(tmp_path, 0, {"rank": 0}, TREE)
    attrs, tree = read_rank_file(tmp_path / written.name)
    assert attrs == {"rank": 0}
    assert same(tree, TREE)
    assert tree["state"]["grid"].flags.writeable  # a restored array is the job's own


def test_a_file_holds_an_index_a_blob_and_only_its_large_values(tmp_path: Path) -> None:
    written = write_rank_file(tmp_path, 0, {}, TREE)
    with h5py.File(tmp_path / written.name) as file:
        assert sorted(file) == ["geode_blob", "geode_index", "v0", "v1"]
        assert int(file.attrs["geode_format"]) == 4


def test_large_values_are_checksummed_in_chunks_of_about_256_kib(tmp_path: Path) -> None:
    tree = {"field": np.arange(3 * CHUNK_BYTES // 8 + 5, dtype=np.float64), "grid": BIG}
    tree["small"] = np.arange(4.0)  # in the blob
    tree["cube"] = np.ones((2, 3, CHUNK_BYTES // 4), np.float32)  # a step of axis 1 too large
    written = write_rank_file(tmp_path, 0, {}, tree)
    with h5py.File(tmp_path / written.name) as file:
        chunks = {file[name].chunks for name in file if name.startswith("v")}
        filters = {name: file[name].fletcher32 for name in file}
    assert chunks == {(CHUNK_BYTES // 8,), (BIG.size,), (1, 1, CHUNK_BYTES // 4)}
    assert filters == {"geode_index": False, "geode_blob": True, "v0": True, "v1": True, "v2": True}
    assert same(read_rank_file(tmp_path / written.name)[1], tree)


@pytest.mark.parametrize(
    ("shape", "itemsize", "chunks"),
    [
        ((10,), 8, (10,)),
        ((1000, 1000), 8, (CHUNK_BYTES // 8000, 1000)),
        ((3, 10**5), 8, (1, CHUNK_BYTES // 8)),
        ((5, 10**8), 1, (1, CHUNK_BYTES)),
        ((2, 3), 10**6, (1, 1)),
    ],
)
def test_chunks_take_whole_trailing_axes_and_split_the_first_too_large(
    shape: tuple[int, ...], itemsize: int, chunks: tuple[int, ...]
) -> None:
    assert chunk_shape(shape, itemsize) == chunks


def test_a_format_3_file_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "rank-0000.h5"
    with h5py.File(path, "w") as file:
        file.attrs["geode_format"] = np.int64(3)
        file.attrs["geode_attrs"] = np.frombuffer(b'{"rank": 0}', np.uint8)
        group = file.create_group("state")
        grid = group.create_dataset("grid", data=np.arange(4.0), fletcher32=True, chunks=True)
        grid.attrs["geode_kind"] = np.bytes_(b"array")
        step = group.create_dataset("step", data=np.frombuffer(b"17", np.uint8))
        step.attrs["geode_kind"] = np.bytes_(b"json")
    attrs, tree = read_rank_file(path)
    assert attrs == {"rank": 0}
    assert tree["state"]["step"] == 17 and np.array_equal(tree["state"]["grid"], np.arange(4.0))


@pytest.mark.parametrize(
    "index,problem",
    [
        ([], "/: a mapping's index is a list"),
        ({"x": ["b", 0, 10**9]}, "/x: bytes 0 to 1000000000 of a blob of"),
        ({"x": ["a", 0, "|O", [1]]}, "/x: dtype '|O' is not one geode_mpi writes"),
        ({"x": ["a", 0, "<f8", [-1]]}, "/x: shape [-1] is not a list of sizes"),
        ({"x": ["a", 0, "<f8", [10**6]]}, "/x: bytes 0 to 8000000 of a blob of"),
        ({"x": ["d", "../etc"]}, "/x: dataset '../etc' is not one of ours, or reused"),
        ({"x": ["d", "v7"]}, "/v7: nothing, not a dataset"),
        ({"x": ["q", 1]}, "/x: not an index entry: ['q', 1]"),
        ({"x": ["g", {"y": ["g", 5]}]}, "/x/y: a mapping's index is a int"),
    ],
)
def test_a_damaged_index_is_a_checkpoint_error_naming_the_entry(
    tmp_path: Path, index: Any, problem: str
) -> None:
    written = write_rank_file(tmp_path, 0, {}, {"grid": np.arange(4.0)})
    path = tmp_path / written.name
    with h5py.File(path, "a") as file:
        del file["geode_index"]
        data = np.frombuffer(json.dumps(index).encode(), np.uint8)
        file.create_dataset("geode_index", data=data).attrs["geode_kind"] = np.bytes_(b"json")
    with pytest.raises(CheckpointError) as raised:
        read_rank_file(path)
    assert problem in str(raised.value) and str(path) in str(raised.value)


def test_nesting_deeper_than_any_tree_written_is_refused(tmp_path: Path) -> None:
    index: Any = {}
    for _ in range(40):
        index = {"x": ["g", index]}
    written = write_rank_file(tmp_path, 0, {}, {})
    path = tmp_path / written.name
    with h5py.File(path, "a") as file:
        del file["geode_index"]
        data = np.frombuffer(json.dumps(index).encode(), np.uint8)
        file.create_dataset("geode_index", data=data).attrs["geode_kind"] = np.bytes_(b"json")
    with pytest.raises(CheckpointError, match="mappings nested deeper than 32"):
        read_rank_file(path)
