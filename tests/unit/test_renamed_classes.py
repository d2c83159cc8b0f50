"""Messages of a class renamed or moved since they were checkpointed: the restart warns, and a
receive by type that finds nothing names them and the way out (keep the old name)."""

from __future__ import annotations

import logging
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from geode_mpi import Geode, Message, ReceiveTimeout
from geode_mpi.codec import classes

NODES = ["node0", "node1"]


@pytest.fixture
def job() -> Iterator[types.ModuleType]:
    """The job's module (as a script's classes live in ``__main__``), a new one each time."""
    name = f"renamed_classes_{uuid.uuid4().hex}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    yield module
    del sys.modules[name]


def define(module: types.ModuleType, name: str) -> type[Message]:
    cls = type(name, (Message,), {"__module__": module.__name__, "__qualname__": name})
    setattr(module, name, cls)
    return cls


def save(directory: Path, module: types.ModuleType) -> None:
    """Version 1 of the job: three messages of class Tok queued at node1, checkpointed."""
    tok = define(module, "Tok")
    with Geode(NODES, checkpoint_dir=directory) as geode:
        for k in range(3):
            geode.send(tok(k), "node0", "node1")
        geode.checkpoint()  # (and the job ends with them queued: nothing resolves Tok)


def test_a_restart_names_the_restored_messages_whose_class_is_gone(
    tmp_path: Path,
    job: types.ModuleType,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    save(tmp_path, job)
    monkeypatch.setattr(classes, "_cache", {})  # a restart is a new process: nothing found yet
    del job.Tok
    token = define(job, "Token")  # version 2: the class renamed
    with (
        caplog.at_level(logging.WARNING, logger="geode_mpi"),
        Geode(NODES, checkpoint_dir=tmp_path, restart=True) as geode,
    ):
        warned = [r.getMessage() for r in caplog.records]
        warned = [text for text in warned if "restart: messages" in text]
        assert len(warned) == 1
        assert f"restored at node1: 3 of class 'Tok' (module '{job.__name__}')" in warned[0]
        assert "Tok = NewName" in warned[0]
        with pytest.raises(ReceiveTimeout) as caught:
            geode.receive("node1", type=token, timeout=0.2)
        text = str(caught.value)
        assert "3 other message(s) are queued there" in text
        assert f"queued at node1, 3 of class 'Tok' (module '{job.__name__}')" in text
        assert "which this rank cannot find" in text
        # A poll (timeout 0) does not scan the queue: it says only how many are queued.
        with pytest.raises(ReceiveTimeout) as polled:
            geode.receive("node1", type=token, timeout=0)
        assert "cannot find" not in str(polled.value)
        job.Tok = token  # the way out the texts give: the old name kept as an alias
        assert [geode.receive("node1", type=token, timeout=1).data for _ in range(3)] == [
            0,
            1,
            2,
        ]


def test_a_restart_with_every_class_found_says_nothing_of_classes(
    tmp_path: Path, job: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    save(tmp_path, job)
    with (
        caplog.at_level(logging.WARNING, logger="geode_mpi"),
        Geode(NODES, checkpoint_dir=tmp_path, restart=True) as geode,
    ):
        assert not [r for r in caplog.records if "cannot find" in r.getMessage()]
        other = define(job, "Other")
        with pytest.raises(ReceiveTimeout) as caught:
            geode.receive("node1", type=other, timeout=0.2)
        assert "cannot find" not in str(caught.value)
        assert len([geode.receive("node1", timeout=1) for _ in range(3)]) == 3
