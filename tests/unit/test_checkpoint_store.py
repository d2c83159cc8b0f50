"""The checkpoint store: round trips, retention, the lock, and every kind of damage detected
before anything is read, with a fallback to the previous complete checkpoint."""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode
from geode_mpi.persistence import CheckpointError, CheckpointStore, write_rank_file

TREE: dict[str, Any] = {
    "state": {"step": 17, "params": {"dt": 0.1, "name": "heat"}, "grid": np.arange(12.0)},
    "nodes": {
        "node0": {
            "metas": b"\x02\x00abc",
            "offsets": np.array([0, 5], np.int64),
            "empty": np.zeros(0, np.float32),
            "none": None,
        }
    },
}


def write_epoch(store: CheckpointStore, epoch: int, ranks: int = 2) -> Path:
    path = store.prepare(epoch)
    files = [
        write_rank_file(path, rank, {"epoch": epoch, "rank": rank}, TREE) for rank in range(ranks)
    ]
    return store.write_manifest(epoch, files, {"nodes": ["node0", "node1"]})


def same(got: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return set(got) == set(want) and all(same(got[k], want[k]) for k in want)
    if isinstance(want, np.ndarray):
        return got.dtype == want.dtype and np.array_equal(got, want)
    return bool(got == want)


def test_a_checkpoint_reads_back_what_was_written(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    write_epoch(store, 1)
    loaded = store.newest()
    assert loaded is not None and loaded.epoch == 1 and loaded.manifest["ranks"] == 2
    attrs, tree = loaded.read(1)
    assert attrs == {"epoch": 1, "rank": 1}
    assert same(tree, TREE)


def test_only_the_newest_complete_checkpoints_are_kept(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for epoch in range(1, 5):
        write_epoch(store, epoch)
    assert store.epochs() == [4, 3]
    store.prepare(5)  # a job killed while writing epoch 5: no manifest
    assert store.epochs() == [4, 3] and store.epochs(complete_only=False) == [5, 4, 3]
    assert store.newest() is not None and store.newest().epoch == 4  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="keep must be an int >= 2, got 1"):
        CheckpointStore(tmp_path, keep=1)


def damage_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage,problem",
    [
        (damage_truncate, "bytes, the manifest says"),
        (damage_flip, "checksum mismatch"),
        (lambda path: path.unlink(), "missing \\(listed in the manifest\\)"),
        (lambda path: (path.parent / "manifest.json").unlink(), "manifest.json: missing"),
        (lambda path: (path.parent / "manifest.json").write_text("{not json"), "unreadable"),
    ],
    ids=["truncated", "flipped", "rank file deleted", "manifest deleted", "manifest garbage"],
)
def test_damage_is_named_and_the_previous_checkpoint_is_used(
    tmp_path: Path, damage: Any, problem: str
) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    write_epoch(store, 1)
    newest = write_epoch(store, 2)
    damage(newest / "rank-0001.h5")
    with pytest.raises(CheckpointError, match=problem):
        store.validate(2)
    problems: list[str] = []
    loaded = store.newest(problems)
    assert loaded is not None and loaded.epoch == 1
    assert len(problems) == 1 and "epoch-000002" in problems[0]
    assert same(loaded.read(0)[1], TREE)


def test_no_valid_checkpoint_at_all_is_none_with_reasons(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    damage_flip(write_epoch(store, 1) / "rank-0000.h5")
    problems: list[str] = []
    assert store.newest(problems) is None
    assert problems == [
        f"{tmp_path / 'epoch-000001' / 'rank-0000.h5'}: checksum mismatch (corrupted)"
    ]
    assert CheckpointStore(tmp_path / "nothing-here").newest() is None


def test_two_jobs_cannot_share_a_directory(tmp_path: Path) -> None:
    first, second = CheckpointStore(tmp_path), CheckpointStore(tmp_path)
    first.lock()
    try:
        with pytest.raises(CheckpointError, match="is in use by another job \\(host .* pid"):
            second.lock()
    finally:
        first.unlock()
    second.lock()  # free again
    second.unlock()


def test_values_that_cannot_be_stored_are_named(tmp_path: Path) -> None:
    path = CheckpointStore(tmp_path).prepare(1)
    with pytest.raises(CheckpointError, match="'obj' of type object is neither"):
        write_rank_file(path, 0, {}, {"obj": object()})
    with pytest.raises(CheckpointError, match="holds Python objects"):
        write_rank_file(path, 0, {}, {"a": np.array([1, "x"], dtype=object)})
    with pytest.raises(CheckpointError, match="checkpoint key '' must be a non-empty str"):
        write_rank_file(path, 0, {}, {"": 1})


def test_inspect_shows_each_checkpoint_and_what_a_restart_resumes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from geode_mpi.runner.cli import main

    store = CheckpointStore(tmp_path, keep=3)
    write_epoch(store, 1)
    damage_flip(write_epoch(store, 2) / "rank-0000.h5")
    store.prepare(3)
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "epoch 3: incomplete: " in out and "manifest.json: missing" in out
    assert "epoch 2: BAD: " in out and "rank-0000.h5: checksum mismatch" in out
    assert "epoch 1: complete, 2 rank file(s)" in out
    assert "a restart resumes from epoch 1:" in out
    assert "grid: array float64 (12,)" in out and "step: 17" in out
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "'" + str(tmp_path / "missing") + "' does not exist" in capsys.readouterr().err


def test_inspect_reads_a_geode_checkpoint_as_queues_and_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from geode_mpi import Geode, Message
    from geode_mpi.runner.cli import main

    with Geode(checkpoint_dir=tmp_path) as geode:
        topic = geode.topic("log", publishers=["node0"], subscribers=["node2"], retain=4)
        for k in range(3):
            geode.send(Message(k), "node0", "node1")
            topic.publish(k, source="node0")
        geode.receive("node2")
        assert geode.checkpoint(state={"step": 3, "field": np.zeros(4)}) == 1
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "node1: 3 message(s) queued; sent 0, received 3, processed 0" in out
    assert "node2: 2 message(s) queued" in out
    assert "outbox: 5 message(s) sent and not yet acknowledged" in out
    assert "topic 'log': next numbers" in out and "3 retained" in out
    assert "state keys: field, step" in out


def test_an_in_memory_queue_is_empty_after_a_restart_and_its_senders_are_acked(
    tmp_path: Path,
) -> None:
    from geode_mpi import Geode, Message, QueueConfig

    queues = {"node1": QueueConfig(persistent=False)}
    with Geode(checkpoint_dir=tmp_path, queues=queues) as geode:
        for k in range(3):
            geode.send(Message(k), "node0", "node1")  # transient: not saved
            geode.send(Message(k), "node0", "node2")  # persistent (the default)
        geode.checkpoint()
        assert geode.pending("node1") == 3  # the running job keeps them
    with Geode(checkpoint_dir=tmp_path, queues=queues, restart=True) as again:
        assert again.pending("node1") == 0 and again.pending("node2") == 3
        assert again.stats("node1").dropped == 3
        assert [again.receive("node2").data for _ in range(3)] == [0, 1, 2]
        again.flush()
        assert again.stats("node0").unacked == 0  # nothing waits for the dropped ones
    with pytest.raises(TypeError, match="persistent must be a bool"):
        QueueConfig(persistent="yes")  # type: ignore[arg-type]


def test_a_bounded_in_memory_queue_gives_its_senders_credits_back_at_a_restart(
    tmp_path: Path,
) -> None:
    """Before: the messages an in-memory queue held at the checkpoint were acknowledged at the
    restart but not counted taken: a sender whose window they filled got no credit back and
    stayed blocked (here: QueueFull at the first send after the restart)."""
    from geode_mpi import Geode, QueueConfig

    queues = {"node1": QueueConfig(persistent=False, capacity=8, policy="block")}
    window = 4  # (capacity 8 shared by the two nodes that may send to node1)
    with Geode(nodes=2, checkpoint_dir=tmp_path, queues=queues) as geode:
        for k in range(window):
            geode.send(k, "node0", "node1")
        geode.checkpoint()
    with Geode(nodes=2, checkpoint_dir=tmp_path, queues=queues, restart=True) as again:
        assert again.pending("node1") == 0
        for k in range(window):
            again.send(100 + k, "node0", "node1")
        assert [again.receive("node1").data for _ in range(window)] == [100, 101, 102, 103]


def test_a_work_queue_and_a_topic_continue_after_a_restart(tmp_path: Path) -> None:
    from geode_mpi import Geode

    def build(geode: Geode) -> tuple[Any, Any]:
        queue = geode.work_queue("w", consumers=["node1"], producers=["node0"])
        topic = geode.topic("t", publishers=["node0"], subscribers=["node2"], retain=2)
        return queue, topic

    with Geode(checkpoint_dir=tmp_path) as geode:
        queue, topic = build(geode)
        for k in range(5):
            queue.put(k, source="node0")
            topic.publish(k, source="node0")
        geode.pending("node0")  # the dispatcher hands one task to node1's one request
        assert queue.waiting == 4
        geode.checkpoint()
    with Geode(checkpoint_dir=tmp_path, restart=True) as again:
        queue, topic = build(again)
        assert queue.waiting == 4
        queue.finish(source="node0")
        tasks = [task.data for task in iter(lambda: queue.get("node1", timeout=5), None)]
        assert tasks == [0, 1, 2, 3, 4]  # each once, in order
        topic.publish(5, source="node0")
        got = [again.receive("node2").data for _ in range(6)]
        assert got == [0, 1, 2, 3, 4, 5]  # numbering continued: no duplicate, no gap
        assert again.stats("node2").duplicates == 0


def test_a_restart_skips_a_corrupted_checkpoint_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from geode_mpi import Geode

    with Geode(checkpoint_dir=tmp_path, keep_checkpoints=3) as geode:
        geode.checkpoint(state={"step": 1})
        geode.checkpoint(state={"step": 2})
    damage_flip(tmp_path / "epoch-000002" / "rank-0000.h5")
    with caplog.at_level("WARNING", logger="geode_mpi"):
        again = Geode(checkpoint_dir=tmp_path, restart=True)
    assert again.restored_epoch == 1 and again.restored_state == {"step": 1}
    assert "epoch-000002/rank-0000.h5: checksum mismatch (corrupted)" in caplog.text
    again.close()


def test_restored_epoch_stays_the_one_restarted_from_after_later_checkpoints(
    tmp_path: Path,
) -> None:
    from geode_mpi import Geode

    with Geode(checkpoint_dir=tmp_path) as geode:
        assert geode.restored_epoch is None
        geode.checkpoint(state={"step": 1})
        assert geode.restored_epoch is None  # started afresh: a checkpoint changes nothing
    with Geode(checkpoint_dir=tmp_path, restart=True) as again:
        assert again.restored_epoch == 1
        assert again.checkpoint(state={"step": 2}) == 2
        assert again.checkpoint(state={"step": 3}) == 3
        assert again.restored_epoch == 1 and again.restored_state == {"step": 1}


def test_the_last_checkpoint_reports_its_cost(tmp_path: Path) -> None:
    from geode_mpi import Geode

    with Geode(checkpoint_dir=tmp_path) as geode:
        assert geode.last_checkpoint is None
        geode.checkpoint(state={"a": np.ones(100_000)})
        report = geode.last_checkpoint
        assert report is not None and report["epoch"] == 1
        assert report["bytes"] == report["rank_bytes"] > 800_000
        assert 0 <= report["drain_seconds"] <= report["seconds"]


def test_maybe_checkpoint_follows_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from geode_mpi import Geode
    from geode_mpi.core import checkpoint_cut, checkpointing

    with Geode(checkpoint_dir=tmp_path / "m", checkpoint_every_messages=5) as geode:
        epochs = []
        for k in range(12):
            geode.send(k, "node0", "node1")
            epochs.append(geode.maybe_checkpoint({"k": k}))
        assert [e for e in epochs if e is not None] == [1, 2]  # after the 5th and the 10th send
        assert epochs.index(1) == 4 and epochs.index(2) == 9
    # The policy's clock, moved on by the test: a loaded machine pausing it cannot make a
    # checkpoint due early (with every=0.05 s and real time, a 50 ms pause did).
    ahead = [0.0]
    clock = SimpleNamespace(
        monotonic=lambda: time.monotonic() + ahead[0], perf_counter=time.perf_counter
    )
    monkeypatch.setattr(checkpointing, "time", clock)  # (maybe()'s vote)
    monkeypatch.setattr(checkpoint_cut, "time", clock)  # (the time a checkpoint was taken)
    with Geode(checkpoint_dir=tmp_path / "t", checkpoint_every=60) as geode:
        assert geode.maybe_checkpoint() is None  # not due yet
        ahead[0] += 59
        assert geode.maybe_checkpoint() is None
        ahead[0] += 2
        assert geode.maybe_checkpoint() == 1
        assert geode.maybe_checkpoint() is None
    with pytest.raises(ValueError, match="maybe_checkpoint\\(\\) needs Geode\\(checkpoint_dir"):
        Geode().maybe_checkpoint()


def test_an_old_checkpoint_that_cannot_be_removed_never_fails_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Removing an epoch no longer kept raised from checkpoint() once the new one was sealed:
    IsADirectoryError for a manifest.json that is a directory (which also counted as sealed),
    any other OSError likewise."""
    from geode_mpi import Geode

    with Geode(checkpoint_dir=tmp_path, keep_checkpoints=2) as geode:
        assert [geode.checkpoint(state={"k": k}) for k in range(2)] == [1, 2]
        manifest = tmp_path / "epoch-000001" / "manifest.json"
        manifest.unlink()
        manifest.mkdir()  # damage: no manifest there, nothing sealed
        store = CheckpointStore(tmp_path)
        assert store.epochs() == [2]
        assert geode.checkpoint(state={"k": 2}) == 3
        assert not (tmp_path / "epoch-000001").exists()
        real_unlink = Path.unlink

        def refused(path: Path, missing_ok: bool = False) -> None:
            if path.name == "manifest.json":
                raise PermissionError(13, "Permission denied", str(path))
            real_unlink(path, missing_ok)

        monkeypatch.setattr(Path, "unlink", refused)
        with caplog.at_level(logging.WARNING, logger="geode_mpi"):
            assert geode.checkpoint(state={"k": 3}) == 4
        monkeypatch.undo()
        kept = tmp_path / "epoch-000002"
        assert f"old checkpoint {kept} left in place: [Errno 13] Permission denied" in caplog.text
        assert store.epochs() == [4, 3, 2]  # left whole: its files too
        assert sorted(p.name for p in kept.iterdir()) == ["manifest.json", "rank-0000.h5"]
        assert geode.checkpoint(state={"k": 4}) == 5  # and removed at the next one
        assert store.epochs() == [5, 4]


def test_a_checkpoint_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    from geode_mpi import Geode

    path = tmp_path / "ck"
    path.write_text("x")
    with pytest.raises(CheckpointError) as raised:
        Geode(checkpoint_dir=path)
    assert str(raised.value) == (
        f"checkpoint_dir {str(path)!r} is not a directory (a file is in the way): give the job "
        "a directory, or a path that does not exist yet"
    )


def test_a_directory_that_cannot_be_written_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only directory (an archived checkpoint) gave a bare OSError from the lock file:
    (root writes through file modes, so the file system's refusal is made here)."""
    from geode_mpi.persistence import store_lock

    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system", str(args[0]))

    monkeypatch.setattr(store_lock, "open", read_only, raising=False)
    with pytest.raises(CheckpointError, match="cannot be written \\(Read-only file system\\)"):
        CheckpointStore(tmp_path).lock()


def test_inspect_calls_an_old_checkpoint_retention_unsealed_by_its_name(tmp_path: Path) -> None:
    """Before: ``epoch 1: incomplete: .../manifest.json: missing (the checkpoint is
    incomplete)``, which reads as damage, for what the third checkpoint's retention left
    (until close(), or for ever in a job that ends before it)."""
    from geode_mpi.runner.inspect import inspect_lines

    with Geode(checkpoint_dir=tmp_path, keep_checkpoints=2) as geode:
        for step in range(3):
            geode.checkpoint(state={"step": step})
        epochs = [line for line in inspect_lines(tmp_path) if line.startswith("  epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["  epoch 3", "  epoch 2", "  epoch 1"]
    assert epochs[2].startswith("  epoch 1: unsealed, older than epoch 3: an old checkpoint")
    assert "incomplete" not in "\n".join(epochs)
