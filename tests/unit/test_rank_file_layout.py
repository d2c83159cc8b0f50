"""A rank's file in format 5: an index, a blob and the large values, each with the CRC-32 of its
bytes; format 3 and 4 files still read."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from geode_mpi.persistence import CheckpointError, write_rank_file
from geode_mpi.persistence.layout import OWN_DATASET, JsonValue, flatten
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
        assert int(file.attrs["geode_format"]) == 5


def test_every_dataset_is_contiguous_with_the_crc_of_its_bytes(tmp_path: Path) -> None:
    tree = {"field": np.arange(3 * CHUNK_BYTES // 8 + 5, dtype=np.float64), "grid": BIG}
    tree["small"] = np.arange(4.0)  # in the blob
    tree["swapped"] = np.arange(CHUNK_BYTES, dtype=">i4")[::2]  # big-endian, strided
    written = write_rank_file(tmp_path, 0, {}, tree)
    with h5py.File(tmp_path / written.name) as file:
        layouts = {(file[name].chunks, file[name].fletcher32) for name in file}
        crcs = {name: int(file[name].attrs["geode_crc32"]) for name in file}
        data = {name: np.ascontiguousarray(file[name][()]) for name in file}
    assert layouts == {(None, False)}
    assert crcs == {name: zlib.crc32(value) for name, value in data.items()}
    assert same(read_rank_file(tmp_path / written.name)[1], tree)


def test_a_dtype_hdf5_may_store_otherwise_keeps_fletcher32_chunks(tmp_path: Path) -> None:
    records = np.zeros(OWN_DATASET, dtype=[("x", "<i4"), ("y", "<f8")])
    records["y"] = 1.5
    written = write_rank_file(tmp_path, 0, {}, {"records": records})
    with h5py.File(tmp_path / written.name) as file:
        assert file["v0"].fletcher32 and file["v0"].chunks is not None
        assert "geode_crc32" not in file["v0"].attrs
    assert np.array_equal(read_rank_file(tmp_path / written.name)[1]["records"], records)


@pytest.mark.parametrize("name", ["geode_index", "geode_blob", "v0"])
def test_bytes_changed_before_the_file_was_hashed_fail_the_crc(tmp_path: Path, name: str) -> None:
    """Damage the file's SHA-256 cannot see (done before it was taken): the CRC-32 of each
    dataset, taken from memory, names the dataset."""
    written = write_rank_file(tmp_path, 0, {}, TREE)
    path = tmp_path / written.name
    with h5py.File(path, "a") as file:
        data = file[name][()]
        data.reshape(-1).view(np.uint8)[1] ^= 0x10  # one bit, as a bad write would
        file[name][...] = data
    with pytest.raises(CheckpointError, match=f"/{name}: checksum mismatch \\(geode_crc32\\)"):
        read_rank_file(path)


def test_a_format_5_dataset_without_its_crc_is_refused(tmp_path: Path) -> None:
    written = write_rank_file(tmp_path, 0, {}, TREE)
    path = tmp_path / written.name
    with h5py.File(path, "a") as file:
        del file["geode_blob"].attrs["geode_crc32"]
    with pytest.raises(CheckpointError, match="/geode_blob: no checksum \\(geode_crc32\\)"):
        read_rank_file(path)


def test_a_format_4_file_still_reads(tmp_path: Path) -> None:
    """Format 4 as geode_mpi wrote it: the same index and blob, fletcher32 in chunks, no CRC."""
    index, flat = flatten(TREE)
    path = tmp_path / "rank-0000.h5"
    with h5py.File(path, "w") as file:
        file.attrs["geode_format"] = np.int64(4)
        file.attrs["geode_attrs"] = np.frombuffer(b'{"rank": 0}', np.uint8)
        text = file.create_dataset("geode_index", data=np.frombuffer(index.encode(), np.uint8))
        text.attrs["geode_kind"] = np.bytes_(b"json")
        values = {"geode_blob": ("bytes", flat.blob()), **flat.own}
        for name, (kind, value) in values.items():
            chunks = chunk_shape(value.shape, value.dtype.itemsize)
            dataset = file.create_dataset(name, data=value, fletcher32=True, chunks=chunks)
            dataset.attrs["geode_kind"] = np.bytes_(kind.encode())
    attrs, tree = read_rank_file(path)
    assert attrs == {"rank": 0} and same(tree, TREE)


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
        dataset = file.create_dataset("geode_index", data=data)
        dataset.attrs["geode_kind"] = np.bytes_(b"json")
        dataset.attrs["geode_crc32"] = np.uint32(zlib.crc32(data))  # as if damaged before it
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
        dataset = file.create_dataset("geode_index", data=data)
        dataset.attrs["geode_kind"] = np.bytes_(b"json")
        dataset.attrs["geode_crc32"] = np.uint32(zlib.crc32(data))  # as if damaged before it
    with pytest.raises(CheckpointError, match="mappings nested deeper than 32"):
        read_rank_file(path)
