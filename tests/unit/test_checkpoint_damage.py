"""Damaged checkpoints that a checksum cannot see: a manifest of the wrong shape, a rank file
damaged before it was hashed (HDF5 structures, content), and files planted with a recomputed
checksum. A restart falls back to the previous usable epoch, within a bounded time, and with a
job key (GEODE_CHECKPOINT_KEY) never reads an unauthenticated file."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from geode_mpi import Geode, Message
from geode_mpi.persistence import FORMAT, CheckpointError, CheckpointStore, write_rank_file
from geode_mpi.persistence.store import JsonValue

ROOT = Path(__file__).resolve().parents[2]


def channels(geode: Geode) -> tuple[Any, Any]:
    topic = geode.topic("news", publishers=["node0"], subscribers=["node1"], retain=2)
    return topic, geode.work_queue("w", consumers=["node1"], producers=["node0"])


def two_epochs(directory: Path) -> None:
    """Epochs 1 and 2 of a small job: messages queued, a topic, a work queue, state."""
    with Geode(checkpoint_dir=directory, keep_checkpoints=3) as geode:
        topic, queue = channels(geode)
        for step in (1, 2):
            geode.send(Message((step, np.arange(4.0))), "node0", "node1")
            topic.publish(step, source="node0")
            queue.put(step, source="node0")
            geode.checkpoint(state={"step": step, "grid": np.full(3, step), "obj": {"s": step}})


def reseal(directory: Path, epoch: int, rank: int = 0) -> None:
    """Recompute a rank file's size and SHA-256 in its manifest (as if it had been damaged
    before it was hashed)."""
    path = directory / f"epoch-{epoch:06d}"
    manifest = json.loads((path / "manifest.json").read_text())
    data = (path / f"rank-{rank:04d}.h5").read_bytes()
    manifest["files"][rank]["size"] = len(data)
    manifest["files"][rank]["sha256"] = hashlib.sha256(data).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def restart(directory: Path) -> Geode:
    """A restarted Geode, with the job's topic and work queue created again."""
    geode = Geode(checkpoint_dir=directory, keep_checkpoints=3, restart=True)
    channels(geode)
    return geode


# -- the manifest --------------------------------------------------------------------------


def _set(key: str, value: Any) -> Any:
    return lambda manifest: {**manifest, key: value}


def _drop(key: str) -> Any:
    return lambda manifest: {k: v for k, v in manifest.items() if k != key}


def _file(**changes: Any) -> Any:
    return lambda manifest: {**manifest, "files": [{**manifest["files"][0], **changes}]}


SHAPES = {
    "a list": lambda manifest: [manifest],
    "null": lambda manifest: None,
    "a string": lambda manifest: "manifest",
    "a number": lambda manifest: 7,
    "files missing": _drop("files"),
    "files a dict": _set("files", {"name": "rank-0000.h5"}),
    "files of strings": _set("files", ["rank-0000.h5"]),
    "ranks missing": _drop("ranks"),
    "ranks a string": _set("ranks", "1"),
    "epoch missing": _drop("epoch"),
    "epoch of another": _set("epoch", 1),
    "created a string": _set("created", "yesterday"),
    "size a string": _file(size="12"),
    "sha256 a number": _file(sha256=12),
    "sha256 not hex": _file(sha256="z" * 64),
    "name elsewhere": _file(name="../epoch-000001/rank-0000.h5"),
    "name missing": lambda manifest: {**manifest, "files": [{"size": 1, "sha256": "0" * 64}]},
    "nodes a string": _set("nodes", "node0"),
    "nodes missing": _drop("nodes"),
    "hmac a number": _set("hmac", 5),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_a_manifest_of_the_wrong_shape_falls_back_to_the_previous_epoch(
    tmp_path: Path, shape: Any, caplog: pytest.LogCaptureFixture
) -> None:
    two_epochs(tmp_path)
    path = tmp_path / "epoch-000002" / "manifest.json"
    path.write_text(json.dumps(shape(json.loads(path.read_text()))))
    with caplog.at_level("WARNING", logger="geode_mpi"):
        geode = restart(tmp_path)
    assert geode.restored_epoch == 1 and geode.restored_state is not None
    assert geode.restored_state["step"] == 1
    assert "checkpoint skipped: " in caplog.text and "epoch-000002" in caplog.text
    assert [geode.receive("node1", timeout=5).data[0] for _ in range(1)] == [1]
    geode.close()


def test_the_store_names_what_is_wrong_with_a_manifest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    path = store.prepare(1)
    files = [write_rank_file(path, 0, {}, {"x": 1})]
    store.write_manifest(1, files, {})
    manifest = path / "manifest.json"
    good = json.loads(manifest.read_text())
    for value, problem in [
        ([1], "a JSON list, not an object"),
        (None, "a JSON NoneType, not an object"),
        ({**good, "ranks": 2}, "files must list 2 rank files, got"),
        ({**good, "files": [{**good["files"][0], "name": "/etc/passwd"}]}, "files\\[0\\] must be"),
        ({**good, "geode_format": 2}, "checkpoint format 2, this geode_mpi reads format 4"),
    ]:
        manifest.write_text(json.dumps(value))
        with pytest.raises(CheckpointError, match=problem):
            store.validate(1)


# -- a rank file damaged before it was hashed ----------------------------------------------


def test_seeded_damage_to_the_hdf5_structures_falls_back_or_restores_never_fails(
    tmp_path: Path,
) -> None:
    """Bytes in the first 8 KiB of the newest rank file (superblock, root object header and
    attributes, group B-trees and heaps) damaged and the checksum recomputed, 120 seeds: each
    restart either restores epoch 2 (harmless damage) or falls back to epoch 1; never another
    exception, a crash or a hang (it runs in a subprocess with a timeout)."""
    two_epochs(tmp_path / "base")
    script = textwrap.dedent(
        f"""
        import hashlib, json, logging, random, shutil, sys
        from pathlib import Path
        from geode_mpi import Geode
        logging.disable(logging.CRITICAL)
        base, work = Path({str(tmp_path / "base")!r}), Path({str(tmp_path / "work")!r})
        original = (base / "epoch-000002" / "rank-0000.h5").read_bytes()
        outcomes = {{}}
        for seed in range(120):
            rng = random.Random(seed)
            data = bytearray(original)
            for _ in range(rng.choice([1, 2, 4, 8])):
                position = rng.randrange(min(8192, len(data)))
                data[position] = rng.randrange(256)
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(base, work)
            (work / "epoch-000002" / "rank-0000.h5").write_bytes(bytes(data))
            manifest_path = work / "epoch-000002" / "manifest.json"
            manifest = json.loads(manifest_path.read_text())
            manifest["files"][0]["sha256"] = hashlib.sha256(data).hexdigest()
            manifest_path.write_text(json.dumps(manifest))
            try:
                geode = Geode(checkpoint_dir=work, keep_checkpoints=3, restart=True)
                geode.topic("news", publishers=["node0"], subscribers=["node1"], retain=2)
                geode.work_queue("w", consumers=["node1"], producers=["node0"])
                outcome = f"epoch {{geode.restored_epoch}}"
                geode.close()
            except BaseException as exc:
                outcome = f"seed {{seed}}: {{type(exc).__name__}}: {{exc}}"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        print(json.dumps(outcomes))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout)
    assert set(outcomes) <= {"epoch 1", "epoch 2"}, outcomes
    assert outcomes.get("epoch 1", 0) > 20, outcomes  # most damage is noticed


def test_a_damaged_heap_reference_cannot_hang_the_restart(tmp_path: Path) -> None:
    """A rank file with variable-length string attributes (as geode_mpi wrote them before
    format 3) whose global heap object claims 64 bytes instead of 2: HDF5 looped forever
    reading the attribute. The reader now refuses variable-length data before reading it."""
    two_epochs(tmp_path)
    path = tmp_path / "epoch-000002" / "rank-0000.h5"
    path.unlink()
    with h5py.File(path, "w") as file:
        file.attrs["geode_format"] = FORMAT
        file.attrs["geode_attrs"] = "{}"  # a variable-length string: global heap object 1
        file.attrs["epoch"] = "2"
        file.attrs["rank"] = "0"
    data = bytearray(path.read_bytes())
    heap = data.find(b"GCOL")
    assert heap > 0 and data[heap + 24] == 2  # object 1's size: len("{}")
    data[heap + 24] = 0x40
    path.write_bytes(bytes(data))
    reseal(tmp_path, 2)
    script = textwrap.dedent(
        f"""
        import logging
        from geode_mpi import Geode
        logging.disable(logging.CRITICAL)
        geode = Geode(checkpoint_dir={str(tmp_path)!r}, keep_checkpoints=3, restart=True)
        print("restored epoch", geode.restored_epoch)
        geode.topic("news", publishers=["node0"], subscribers=["node1"], retain=2)
        geode.work_queue("w", consumers=["node1"], producers=["node0"])
        geode.close()
        """
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the restart hung reading a damaged attribute")
    assert result.stdout == "restored epoch 1\n", result.stderr[-3000:]
    with pytest.raises(CheckpointError, match="attribute 'geode_attrs' has type object"):
        CheckpointStore(tmp_path).validate(2).read(0)


def rewrite(directory: Path, epoch: int, change: Any) -> None:
    """Rewrite rank 0's file of ``epoch`` with ``change`` applied to its tree, as valid HDF5
    with a matching checksum: damage in the content itself."""
    path = directory / f"epoch-{epoch:06d}"
    attrs, tree = CheckpointStore(directory).validate(epoch, 0).read(0)
    change(tree)
    (path / "rank-0000.h5").unlink()
    write_rank_file(path, 0, attrs, _as_written(tree))
    reseal(directory, epoch)


def _as_written(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _as_written(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return JsonValue(tree)
    return tree


def _engine(tree: Any) -> Any:
    return tree["engine"]


CONTENT = {
    "engine missing": lambda tree: tree.pop("engine"),
    "pair numbers of strings": lambda tree: _engine(tree)["pairs_in"][0].update(numbers=["a"] * 6),
    "pair key of three": lambda tree: _engine(tree)["pairs_out"][0].update(key=[0, 1, 2]),
    "queue fields short": lambda tree: _engine(tree)["nodes"]["1"].update(
        queue_fields=np.zeros(3, np.int64)
    ),
    "blob ends past the data": lambda tree: _engine(tree)["nodes"]["1"]["queue"]["metas"].update(
        ends=np.array([10**9], np.int64)
    ),
    "stats of another kind": lambda tree: _engine(tree)["nodes"]["0"]["info"]["stats"].update(
        spent=1
    ),
    "a node not hosted": lambda tree: _engine(tree)["nodes"].update(
        {"9": _engine(tree)["nodes"]["0"]}
    ),
    "counters a list": lambda tree: tree["geode"].update(counters=[1]),
    "topic numbering a string": lambda tree: tree["topics"]["news"].update(next_seq="x"),
    "work queue task garbage": lambda tree: tree["queues"]["w"]["tasks"]["metas"].update(
        data=b"\xff" * len(tree["queues"]["w"]["tasks"]["metas"]["data"])
    ),
    "pickled state garbage": lambda tree: tree["state"]["pickled"].update(obj=b"\x80\x05junk"),
    "state a number": lambda tree: tree.update(state=5),
}


@pytest.mark.parametrize("change", CONTENT.values(), ids=CONTENT.keys())
def test_content_damage_falls_back_to_the_previous_epoch(
    tmp_path: Path, change: Any, caplog: pytest.LogCaptureFixture
) -> None:
    two_epochs(tmp_path)
    rewrite(tmp_path, 2, change)
    with caplog.at_level("WARNING", logger="geode_mpi"):
        geode = restart(tmp_path)
    assert geode.restored_epoch == 1, caplog.text
    assert geode.restored_state is not None and geode.restored_state["obj"] == {"s": 1}
    assert "epoch-000002/rank-0000.h5: " in caplog.text
    # Nothing of the damaged epoch was put in place: epoch 1's messages only.
    queued = [message.data for message in iter(lambda: geode.try_receive("node1"), None)]
    steps = [item[0] if isinstance(item, tuple) else item for item in queued]
    assert steps == [1, 1, 1], queued  # the message, the topic's and the work queue's
    geode.close()


def test_when_every_sealed_checkpoint_is_damaged_the_restart_stops_and_says_why(
    tmp_path: Path,
) -> None:
    two_epochs(tmp_path)
    for epoch in (1, 2):
        rewrite(tmp_path, epoch, CONTENT["state a number"])
    with pytest.raises(CheckpointError) as caught:
        restart(tmp_path)
    text = str(caught.value)
    assert f"restart: {tmp_path} holds checkpoint(s) 2, 1 and none can be used: " in text
    from geode_mpi.runner.inspect import inspect_lines

    for epoch in (1, 2):  # inspect sees damage to the files (not to the values in them)
        (tmp_path / f"epoch-{epoch:06d}" / "rank-0000.h5").write_bytes(b"damaged")
    assert inspect_lines(tmp_path)[-1].startswith("a restart would stop with an error")
    assert "epoch-000002/rank-0000.h5: state: expected a mapping, got int" in text
    assert "move the directory aside" in text


def test_an_incomplete_checkpoint_alone_still_starts_afresh(tmp_path: Path) -> None:
    CheckpointStore(tmp_path).prepare(1)  # killed before its manifest
    with restart(tmp_path) as geode:
        assert geode.restored_epoch is None


# -- authentication ------------------------------------------------------------------------


class Planted:
    """Unpickling it creates a file: what a planted checkpoint could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.touch, (self.marker,))


def plant(directory: Path, marker: Path) -> None:
    """Replace epoch 2's file with one whose state runs code when unpickled, and recompute
    its checksum in the manifest (but not the HMAC: the key is not known)."""
    rewrite(
        directory,
        2,
        lambda tree: tree["state"]["pickled"].update(obj=pickle.dumps(Planted(marker))),
    )


def test_with_a_key_a_planted_file_is_never_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GEODE_CHECKPOINT_KEY", "s3cret")
    two_epochs(tmp_path)
    manifest = json.loads((tmp_path / "epoch-000002" / "manifest.json").read_text())
    assert manifest["hmac"].startswith("hmac-sha256:") and len(manifest["hmac"]) == 12 + 64
    marker = tmp_path / "planted-code-ran"
    plant(tmp_path, marker)
    with caplog.at_level("WARNING", logger="geode_mpi"):
        geode = restart(tmp_path)
    assert geode.restored_epoch == 1 and geode.restored_state["obj"] == {"s": 1}  # type: ignore[index]
    geode.close()
    assert not marker.exists()
    assert "epoch-000002/manifest.json: fails authentication: its hmac does not match" in (
        caplog.text
    )


def test_without_a_key_a_planted_file_is_read_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trust model without a key: whoever can write the directory can run code."""
    monkeypatch.delenv("GEODE_CHECKPOINT_KEY", raising=False)
    two_epochs(tmp_path)
    assert "hmac" not in json.loads((tmp_path / "epoch-000002" / "manifest.json").read_text())
    marker = tmp_path / "planted-code-ran"
    plant(tmp_path, marker)
    with restart(tmp_path) as geode:
        assert geode.restored_epoch == 2
    assert marker.exists()


def test_with_a_key_unauthenticated_checkpoints_are_an_error_not_a_fresh_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GEODE_CHECKPOINT_KEY", raising=False)
    two_epochs(tmp_path)  # written without a key
    monkeypatch.setenv("GEODE_CHECKPOINT_KEY", "s3cret")
    with pytest.raises(CheckpointError) as caught:
        restart(tmp_path)
    text = str(caught.value)
    assert f"{tmp_path} holds checkpoint(s) 2, 1 and none can be used" in text
    assert "not authenticated: no hmac, and GEODE_CHECKPOINT_KEY is set" in text
    monkeypatch.setenv("GEODE_CHECKPOINT_KEY", "another")
    two_epochs(tmp_path / "other")
    monkeypatch.setenv("GEODE_CHECKPOINT_KEY", "s3cret")
    with pytest.raises(CheckpointError, match="fails authentication"):
        restart(tmp_path / "other")
    monkeypatch.setenv("GEODE_CHECKPOINT_KEY", "another")
    with restart(tmp_path / "other") as geode:
        assert geode.restored_epoch == 2


def test_an_empty_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEODE_CHECKPOINT_KEY", "")
    with pytest.raises(CheckpointError, match="GEODE_CHECKPOINT_KEY is set but empty"):
        Geode(checkpoint_dir=tmp_path)


def test_inspect_says_whether_each_checkpoint_is_authenticated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from geode_mpi.runner.inspect import inspect_lines

    monkeypatch.setenv("GEODE_CHECKPOINT_KEY", "s3cret")
    two_epochs(tmp_path)
    plant(tmp_path, tmp_path / "marker")
    lines = "\n".join(inspect_lines(tmp_path))
    assert "epoch 2: BAD: " in lines and "fails authentication" in lines
    assert "epoch 1: complete, authenticated, 1 rank file(s)" in lines
    assert "a restart resumes from epoch 1:" in lines
    monkeypatch.delenv("GEODE_CHECKPOINT_KEY")
    lines = "\n".join(inspect_lines(tmp_path))
    assert "epoch 1: complete, carries an HMAC (not checked: no GEODE_CHECKPOINT_KEY)" in lines
    assert not (tmp_path / "marker").exists()  # inspect never unpickles
