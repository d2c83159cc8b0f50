"""One rank's part of a checkpoint that cannot be saved or written fails the checkpoint on
every rank, naming that rank and the value, never a hang; the previous checkpoint stays and
the failed epoch's files go. At 1 rank the failing rank is rank 0 itself."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message
from geode_mpi.persistence import CheckpointError, CheckpointStore, rankfile

# (`directory`: a checkpoint directory every rank shares, from conftest.py)
TIMEOUT = 30.0  # before the fix the other ranks waited here: a timeout, not a hang


def test_arrays_of_str_and_dates_on_one_rank_are_saved(directory: Path) -> None:
    """The last rank alone holds arrays h5py cannot convert: they were its TypeError, and
    the other ranks waited in the checkpoint for ever."""
    with Geode(checkpoint_dir=directory) as geode:
        last = geode.rank == geode.size - 1
        odd = {
            "labels": np.array(["x", "yy"]),
            "when": np.array(["2026-12-06T14:00"], "M8[m]"),
            "rows": np.array([(1, "a")], [("k", "i4"), ("name", "U3")]),
        }
        state = odd if last else {"labels": np.zeros(2)}
        assert geode.checkpoint(state=state, timeout=TIMEOUT) == 1
    with Geode(checkpoint_dir=directory, restart=True) as again:
        got = again.restored_state
        assert got is not None
        if last:
            for key, want in odd.items():
                assert got[key].dtype == want.dtype and got[key].tobytes() == want.tobytes()
        else:
            assert np.array_equal(got["labels"], np.zeros(2))


def test_a_value_one_rank_cannot_save_fails_the_checkpoint_on_every_rank(
    directory: Path,
) -> None:
    geode = Geode(checkpoint_dir=directory)
    failing = geode.size - 1
    for node in geode.local_nodes:  # queued at both checkpoints: the job goes on after
        geode.send(Message(node), node, geode.nodes[0])
    assert geode.checkpoint(state={"step": 1}, timeout=TIMEOUT) == 1
    state: dict[str, Any] = {"step": 2}
    if geode.rank == failing:
        state["lock"] = threading.Lock()
    with pytest.raises(CheckpointError, match=rf"checkpoint 2 failed: rank {failing}: .*'lock'"):
        geode.checkpoint(state=state, timeout=TIMEOUT)
    # Every rank took the failed checkpoint's steps: the next one pairs up, on every rank.
    assert geode.checkpoint(state={"step": 3}, timeout=TIMEOUT) == 3
    geode.close(timeout=TIMEOUT)
    assert CheckpointStore(directory).epochs(complete_only=False) == [3, 1]
    with Geode(checkpoint_dir=directory, restart=True) as again:
        assert again.restored_epoch == 3 and again.restored_state == {"step": 3}
        if again.hosts(again.nodes[0]):
            got = sorted(again.receive(again.nodes[0], timeout=TIMEOUT).data for _ in again.nodes)
            assert got == sorted(again.nodes)


def test_a_file_one_rank_cannot_write_fails_the_checkpoint_on_every_rank(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any exception writing the file, not only an OSError: the failing rank's partial file
    and the epoch's directory are removed; the previous checkpoint is the restart's."""
    geode = Geode(checkpoint_dir=directory)
    failing = geode.size - 1
    assert geode.checkpoint(state={"step": 1}, timeout=TIMEOUT) == 1
    write = rankfile._data_dataset

    def broken(group: Any, key: str, kind: bytes, value: Any) -> None:
        write(group, key, kind, value)
        raise RuntimeError("the library failed")

    if geode.rank == failing:
        monkeypatch.setattr(rankfile, "_data_dataset", broken)
    with pytest.raises(
        CheckpointError, match=f"checkpoint 2 failed: rank {failing}: RuntimeError: the library"
    ):
        geode.checkpoint(state={"step": 2}, timeout=TIMEOUT)
    monkeypatch.setattr(rankfile, "_data_dataset", write)
    geode.close(timeout=TIMEOUT)  # (a collective: every rank is past the failed one)
    store = CheckpointStore(directory)
    assert not store.epoch_path(2).exists()
    with Geode(checkpoint_dir=directory, restart=True) as again:
        assert again.restored_epoch == 1 and again.restored_state == {"step": 1}
