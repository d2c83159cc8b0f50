"""What a checkpoint's state holds comes back as it was, or the checkpoint fails whole: arrays
HDF5 cannot store (str, dates, records of them), subclasses of ndarray and of the plain types,
and a value that cannot be saved at all (the previous checkpoint stays, the failed epoch's
files go)."""

from __future__ import annotations

import enum
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode
from geode_mpi.persistence import CheckpointError, CheckpointStore, rankfile


class Level(enum.IntEnum):
    LOW = 1


def values() -> dict[str, Any]:
    return {
        "str": np.array(["alpha", "beta"]),
        "dates": np.array(["2026-01-01", "NaT"], "M8[D]"),
        "durations": np.array([5, -3], "m8[s]"),
        "record_str": np.array([(1.5, "ab")], [("x", "f8"), ("name", "U4")]),
        "record_bytes": np.array([(1.5, b"ab")], [("x", "f8"), ("name", "S4")]),
        "big_str": np.array([f"cell{k}" for k in range(20_000)]),  # over 64 KiB
        "masked": np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False], fill_value=-9),
        "big_masked": np.ma.masked_array(np.arange(20_000.0), mask=np.arange(20_000) % 2 == 0),
        "matrix": np.matrix([[1, 2], [3, 4]]),
        "recarray": np.rec.fromrecords([(1, 2.0)], names="a,b"),
        "float64": np.float64(1.5),
        "enum": Level.LOW,
        "plain": np.arange(4.0),
        "big_plain": np.arange(20_000.0),
    }


def same(got: Any, want: Any) -> bool:
    if type(got) is not type(want):
        return False
    if isinstance(want, np.ma.MaskedArray):
        return (
            np.array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(want))
            and np.array_equal(got.compressed(), want.compressed())
            and got.fill_value == want.fill_value
        )
    if isinstance(want, np.ndarray):
        return (
            got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
        )
    return bool(got == want)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_state_and_node_state_come_back_as_they_were(tmp_path: Path) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        geode.checkpoint(state=values(), node_state={"node0": values()})
    with Geode(checkpoint_dir=tmp_path, restart=True) as again:
        state, node_state = again.restored_state, again.restored_node_state("node0")
        assert state is not None
        for key, want in values().items():
            assert same(state[key], want), (key, state[key])
            assert same(node_state[key], want), (key, node_state[key])
        assert np.ma.masked_array.sum(state["masked"]) == 4.0  # the masked cell stays out


def test_a_value_that_cannot_be_saved_fails_the_checkpoint_naming_it(tmp_path: Path) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        assert geode.checkpoint(state={"step": 1}) == 1
        with pytest.raises(CheckpointError, match=r"rank 0: .*state\['lock'\] \(lock\)") as raised:
            geode.checkpoint(state={"step": 2, "lock": threading.Lock()})
        assert isinstance(raised.value.__cause__, TypeError)
        with pytest.raises(CheckpointError, match=r"node_state\['node0'\]\['value'\]"):
            geode.checkpoint(node_state={"node0": threading.Lock()})
        with pytest.raises(CheckpointError, match="node_state must be a mapping"):
            geode.checkpoint(node_state=[1])  # type: ignore[arg-type]
        store = CheckpointStore(tmp_path)
        assert store.epochs(complete_only=False) == [1]  # nothing left of 2, 3 and 4
        assert geode.checkpoint(state={"step": 5}) == 5  # the next one works
    with Geode(checkpoint_dir=tmp_path, restart=True) as again:
        assert again.restored_epoch == 5 and again.restored_state == {"step": 5}


def test_a_failed_write_leaves_no_files_and_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills up mid-file: the partial file is removed (on a full disk it made
    every later checkpoint fail too), and a restart uses the checkpoint before."""
    with Geode(checkpoint_dir=tmp_path) as geode:
        assert geode.checkpoint(state={"step": 1}) == 1
        write = rankfile._data_dataset

        def full(group: Any, key: str, kind: bytes, value: Any) -> None:
            if key.startswith("v"):  # the large values, after the index and the blob
                raise OSError(28, "No space left on device")
            write(group, key, kind, value)

        monkeypatch.setattr(rankfile, "_data_dataset", full)
        with pytest.raises(CheckpointError, match="checkpoint 2 failed: rank 0: .*No space left"):
            geode.checkpoint(state={"step": 2, "big": np.ones(100_000)})
        assert not CheckpointStore(tmp_path).epoch_path(2).exists()
        monkeypatch.setattr(rankfile, "_data_dataset", write)
    with Geode(checkpoint_dir=tmp_path, restart=True) as again:
        assert again.restored_epoch == 1 and again.restored_state == {"step": 1}


# A file-size limit fails the writes past it (EFBIG) as a full disk does (ENOSPC), without
# root or a small file system; in a child process, which the limit and a crash stay in.
_FULL_DISK = """
import resource, signal, sys
import numpy as np
from geode_mpi import Geode
from geode_mpi.persistence import CheckpointError, CheckpointStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, resource.RLIM_INFINITY))
directory = sys.argv[1]
with Geode(checkpoint_dir=directory) as geode:
    assert geode.checkpoint(state={"step": 1}) == 1
    try:  # small values, which HDF5 writes when it closes the file, past the limit
        geode.checkpoint(state={"step": 2, "u": np.ones(7000)})
    except CheckpointError as exc:
        print("raised", exc)
    else:
        print("returned")
    print("epochs", CheckpointStore(directory).epochs(complete_only=False))
with Geode(checkpoint_dir=directory, restart=True) as again:
    print("restored", again.restored_epoch)
"""


def test_a_disk_full_when_hdf5_closes_the_file_fails_the_checkpoint(tmp_path: Path) -> None:
    """HDF5 writes most of a file when it closes it, and h5py drops an error there: a full
    disk made a broken file that the checkpoint reported written (the process crashing at
    exit), and a restart fell back to the epoch before without a word."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GEODE_TRANSPORT": "inproc"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("raised checkpoint 2 failed: rank 0: [Errno 27] File too large")
    assert "rank-0000.h5" in lines[0]
    assert lines[1:] == ["epochs [1]", "restored 1"]
