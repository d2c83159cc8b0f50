"""Wrong arguments to the public API: refused at once with a message naming the argument and
the value (never a bare AttributeError from deep inside, never silently read as something
else), and numpy scalars taken wherever a Python int or float is."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message, ProgressReport, QueueConfig, report_progress
from geode_mpi.runner.cli import main

Call = Callable[[Geode], Any]


@pytest.fixture
def geode() -> Any:
    made = Geode(4)
    yield made
    made.close()


# -- 7a: a single name where a list is expected ----------------------------------------------


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda g: g.group("node1"), "members must be a list of nodes, got 'node1'"),
        (lambda g: g.topic("t", "node0", ["node1"]), "publishers must be a list of nodes"),
        (lambda g: g.topic("t", ["node0"], "node1"), "subscribers must be a list of nodes"),
        (lambda g: g.work_queue("q", "node1"), "consumers must be a list of nodes, got 'node1'"),
        (lambda g: g.work_queue("q", ["node1"], producers="node0"), "producers must be a list"),
        (lambda g: g.group(1), "members must be a list of nodes, got 1"),
        (lambda g: g.executor(workers=np.int64(1)), "workers must be a list of nodes, got "),
    ],
)
def test_a_single_node_where_a_list_is_expected_is_refused_naming_it(
    geode: Geode, call: Call, said: str
) -> None:
    with pytest.raises(TypeError, match=said):
        call(geode)


def test_the_subscribe_calls_take_a_single_node_as_a_list_of_one(geode: Geode) -> None:
    topic = geode.topic("t", ["node0"], ["node1"])
    topic.subscribe("node2")
    topic.subscribe(np.int64(3))
    assert topic.subscribers == ("node1", "node2", "node3")
    with pytest.raises(TypeError, match=r"nodes must be a node or a list of nodes, got 1\.0"):
        topic.subscribe(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nodes must be a node or a list of nodes, got None"):
        geode.subscribe(None, "t*")  # type: ignore[arg-type]


# -- 7b: a clear message, not a bare Python error -------------------------------------------


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda g: g.topic("t", None, ["node1"]), "publishers must be a list of nodes, got None"),
        (lambda g: g.reply(5, "x"), "reply.. needs the request it answers .*got 5"),
        (lambda g: g.run("node1", until=5, timeout=0.1), "until must be a function.*got 5"),
        (lambda g: g.zero_copy_array(2.5), "shape must be an int or a tuple of ints.*got 2.5"),
        (lambda g: g.zero_copy_array((2, "x")), r"shape must be a tuple of ints, got \(2, 'x'\)"),
        (lambda g: Message(1, headers=[("a", 1), 5]), r"headers must be a mapping.*\('a', 1\)"),
        (lambda g: ProgressReport(stream=5), "stream must be a text stream.*got 5"),
        (lambda g: Geode(queues=[QueueConfig()]), "queues must be a dict of node name"),
        (lambda g: Geode(comm="world"), "comm must be an mpi4py intracommunicator.*'world'"),
        (lambda g: Geode(checkpoint_dir=5), "checkpoint_dir must be a directory path.*got 5"),
    ],
)
def test_a_wrong_argument_is_named_with_its_value(geode: Geode, call: Call, said: str) -> None:
    with pytest.raises(TypeError, match=said):
        call(geode)


# -- 7c: the call named is the one made ------------------------------------------------------


def test_stop_without_a_node_names_stop(geode: Geode) -> None:
    with pytest.raises(TypeError, match=r"stop\(\) needs the node whose run\(\) loop ends"):
        geode.stop(None)  # type: ignore[arg-type]


def test_request_after_close_names_request() -> None:
    geode = Geode(4)
    geode.close()
    with pytest.raises(Exception, match=r"request\(\) on a closed Geode"):
        geode.request("x", "node1", timeout=1)


# -- 7d: no truthy stand-ins for True/False, no nan or negative where meaningless -----------


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda g: Geode(acks="no"), "acks must be True or False, got 'no'"),
        (lambda g: Geode(restart="no"), "restart must be True or False, got 'no'"),
        (lambda g: g.send(1, dest="node1", ack="yes"), "ack must be True or False, got 'yes'"),
        (lambda g: g.isend(1, dest="node1", ack=0), "ack must be True or False, got 0"),
        (
            lambda g: g.topic("t", ["node0"], ["node1"], total_order="no"),
            "total_order must be True or False, got 'no'",
        ),
        (lambda g: g.run("node1", quiescent="yes"), "quiescent must be True or False"),
        (lambda g: ProgressReport(quiet="no"), "quiet must be True or False, got 'no'"),
    ],
)
def test_a_flag_must_be_a_bool(geode: Geode, call: Call, said: str) -> None:
    with pytest.raises(TypeError, match=said):
        call(geode)
    assert not geode.stats("node1").received  # nothing was sent on the way


def test_a_numpy_bool_is_a_flag(geode: Geode) -> None:
    handle = geode.isend("x", dest="node1", ack=np.bool_(True))
    assert geode.receive("node1", timeout=5).data == "x"
    handle.wait(timeout=5)
    assert geode.topic("t", ["node0"], ["node1"], total_order=np.True_).total_order


@pytest.mark.parametrize("every", [math.nan, -1.0])
def test_progress_every_must_be_a_number_of_seconds(every: float) -> None:
    with pytest.raises(ValueError, match="every must be >= 0 seconds"):
        report_progress(range(3), every=every)  # at the call, not at the first item
    with pytest.raises(ValueError, match="every must be >= 0 seconds"):
        ProgressReport(every=every)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--stats-json", "", "job.py"], "--stats-json needs a file name, got ''"),
        (["inspect", "--depth", "-1", "."], "--depth must be >= 1 (levels shown), got -1"),
        (["inspect", "--depth", "0", "."], "--depth must be >= 1 (levels shown), got 0"),
        (["-"], "a job script read from standard input ('-') is not supported"),
    ],
)
def test_command_line_values_that_mean_nothing_are_refused(
    capsys: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    assert main(argv) == 2
    assert said in capsys.readouterr().err


def test_the_inspect_directory_error_is_printed_by_the_first_rank_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nodir")
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert main(["inspect", missing]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("PMI_RANK", "0")
    assert main(["inspect", missing]) == 2
    assert f"checkpoint directory {missing!r} does not exist" in capsys.readouterr().err


# -- 7e: numpy scalars where an int or a float is accepted ----------------------------------


def test_numpy_scalars_are_counts_and_seconds() -> None:
    geode = Geode(np.int64(3), queue=QueueConfig(capacity=np.int64(30), window=np.int32(4)))
    assert geode.nodes == ("node0", "node1", "node2")
    geode.send("a", dest="node1", timeout=np.float32(1))
    geode.isend("b", dest="node1", timeout=np.int64(1)).wait(timeout=np.float64(1))
    assert geode.receive("node1", timeout=np.float32(1)).data == "a"
    taken = geode.receive_many("node1", limit=np.int64(5), timeout=np.int64(1))
    assert [m.data for m in taken] == ["b"]
    geode.send("c", dest="node1")
    geode.on(Message, "node1")(lambda message: None)
    summary = geode.run("node1", count=np.int64(1), timeout=np.float32(1))
    assert (summary.processed, summary.reason) == (1, "count")
    assert geode.zero_copy_array(np.int64(4)).shape == (4,)
    assert geode.zero_copy_array((np.int64(2), 3)).shape == (2, 3)
    geode.close()
    config = QueueConfig(capacity=np.int64(8), max_attempts=np.int16(2))
    assert config == QueueConfig(capacity=8, max_attempts=2)
    assert repr(config) == repr(QueueConfig(capacity=8, max_attempts=2))  # compared by repr
    assert ProgressReport(total=np.int64(3), every=np.float32(0.5), stream=io.StringIO()).total


@pytest.mark.parametrize("timeout", [True, "1", np.array([1.0])])
def test_a_timeout_is_still_a_number_not_a_bool(geode: Geode, timeout: Any) -> None:
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
        geode.receive("node1", timeout=timeout)
