"""The example jobs run as users run them: in one process and under mpiexec, each with a timeout.

jobs/stencil.py must match its serial numpy check (and fail when a value is corrupted);
jobs/sweep.py must bring every task back once, with the right value, into its HDF5 summary;
jobs/pipeline.py restarted on another number of ranks must end with an uninterrupted run's result.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from types import ModuleType

import h5py
import numpy as np
import pytest
from mpirun import ROOT, Result, mpirun, python

STENCIL = ["jobs/stencil.py", "--n", "50", "--steps", "20"]  # 50 rows: uneven slabs on 4 nodes
STENCIL_LINE = re.compile(
    r"stencil OK: 50x50, 20 steps on (?P<nodes>\d+) nodes \((?P<ranks>\d+) ranks?\), "
    r"max \|error\| (?P<error>\S+), [\d.]+ s"
)
SWEEP_TASKS = 12
SWEEP_LINE = re.compile(
    rf"sweep OK: {SWEEP_TASKS} tasks, (?P<workers>\d) workers? on (?P<ranks>\d) ranks?, "
    r"makespan [\d.]+ s, ideal [\d.]+ s, balance [\d.]+, wrote .*\.h5"
)
TIMEOUT = 120  # per launch; each takes 1 to 3 s on an idle 2-core machine


def one_line(result: Result, pattern: re.Pattern[str]) -> re.Match[str]:
    """The run succeeded and printed exactly one line (rank 0's), matching ``pattern``."""
    assert result.returncode == 0, result.explain()
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.explain()
    match = pattern.fullmatch(lines[0])
    assert match is not None, result.explain()
    return match


def check_stencil(result: Result, nodes: int, ranks: int) -> None:
    match = one_line(result, STENCIL_LINE)
    assert (int(match["nodes"]), int(match["ranks"])) == (nodes, ranks)
    assert float(match["error"]) <= 1e-12


def test_stencil_in_one_process() -> None:
    check_stencil(python(STENCIL, timeout=TIMEOUT), nodes=4, ranks=1)


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("ranks", "nodes", "extra"),
    [(1, 4, []), (2, 2, []), (4, 4, []), (2, 5, ["--nodes", "5"])],
    ids=["1-rank", "2-ranks", "4-ranks", "5-nodes-on-2-ranks"],
)
def test_stencil_under_mpiexec(ranks: int, nodes: int, extra: list[str]) -> None:
    result = mpirun(ranks, ["-m", "geode_mpi", *STENCIL, *extra], timeout=TIMEOUT)
    check_stencil(result, nodes, ranks)


def test_stencil_check_fails_on_a_corrupted_value() -> None:
    result = python([*STENCIL, "--perturb"], timeout=TIMEOUT)
    assert result.returncode == 1, result.explain()
    assert "stencil OK" not in result.stdout, result.explain()
    assert re.search(
        r"stencil FAILED: 50x50, 20 steps on 4 nodes \(1 rank\): max \|error\| \S+ > 1e-12 "
        r"at row 25, column 25 \(got \S+, serial numpy gives \S+\)",
        result.stderr,
    ), result.explain()


@pytest.mark.mpi
def test_stencil_check_fails_on_a_corrupted_value_under_mpiexec() -> None:
    result = mpirun(2, ["-m", "geode_mpi", *STENCIL, "--perturb"], timeout=TIMEOUT)
    assert result.returncode == 1, result.explain()
    assert not result.timed_out and "stencil OK" not in result.stdout, result.explain()
    assert "stencil FAILED: 50x50, 20 steps on 2 nodes (2 ranks): max |error|" in result.stderr


def job_module(name: str) -> ModuleType:
    """jobs/NAME.py as a module, for its functions (importing it runs nothing)."""
    spec = importlib.util.spec_from_file_location(f"{name}_job", ROOT / "jobs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_sweep(result: Result, out: Path, workers: int, ranks: int) -> None:
    match = one_line(result, SWEEP_LINE)
    assert (int(match["workers"]), int(match["ranks"])) == (workers, ranks)
    job = job_module("sweep")
    tasks = job.plan(SWEEP_TASKS, 1)
    with h5py.File(out, "r") as f:
        assert list(f["task"][:]) == list(range(SWEEP_TASKS))  # every task, once
        assert np.array_equal(f["r"][:], [r for _, r, _ in tasks])
        assert np.array_equal(f["cost_ms"][:], [cost for _, _, cost in tasks])
        want = [job.lyapunov(r) for _, r, _ in tasks]
        np.testing.assert_allclose(f["lyapunov"][:], want, rtol=1e-12, atol=1e-12)
        # Each worker node ran at least one task (each asks for one at the start).
        assert set(f["worker"].asstr()[:]) == {f"node{k}" for k in range(1, workers + 1)}
        seconds = f["seconds"][:]
        assert (seconds >= f["cost_ms"][:] / 1000).all()  # each task slept its cost
        attrs = dict(f.attrs)
    assert (attrs["tasks"], attrs["seed"]) == (SWEEP_TASKS, 1)
    assert (attrs["workers"], attrs["worker_ranks"]) == (workers, ranks)
    assert attrs["ideal_makespan"] == pytest.approx(seconds.sum() / ranks)
    assert attrs["balance"] == pytest.approx(attrs["makespan"] / attrs["ideal_makespan"])
    # Never below 1: each rank runs its tasks one after another between the first put and the
    # last result. (No upper bound here: this machine's timings are too noisy.)
    assert attrs["balance"] >= 0.99


def test_sweep_in_one_process(tmp_path: Path) -> None:
    out = tmp_path / "sweep.h5"
    args = ["jobs/sweep.py", "--tasks", str(SWEEP_TASKS), "--out", str(out)]
    result = python(args, timeout=TIMEOUT)
    check_sweep(result, out, workers=3, ranks=1)


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_sweep_under_mpiexec(ranks: int, tmp_path: Path) -> None:
    out = tmp_path / "sweep.h5"
    args = ["-m", "geode_mpi", "jobs/sweep.py", "--tasks", str(SWEEP_TASKS), "--out", str(out)]
    check_sweep(mpirun(ranks, args, timeout=TIMEOUT), out, workers=ranks - 1, ranks=ranks - 1)


def launch(ranks: int, args: list[str]) -> Result:
    """``python -m geode_mpi ARGS`` on ``ranks`` ranks; one rank as a user would, without
    mpiexec (the embedded world)."""
    if ranks == 1:
        return python(["-m", "geode_mpi", *args], timeout=TIMEOUT)
    return mpirun(ranks, ["-m", "geode_mpi", *args], timeout=TIMEOUT)


@pytest.mark.mpi
@pytest.mark.parametrize(("saved", "restarted"), [(4, 1), (2, 3)])
def test_pipeline_restarted_on_another_number_of_ranks_gives_the_same_result(
    tmp_path: Path, saved: int, restarted: int
) -> None:
    """The reducer's count and sum were its rank's `state`, which stays with the rank number:
    restarted on 1 rank from 4, rank 3's was lost ("wrong result: {'items': 152 ...}")."""
    directory, out = tmp_path / "ck", tmp_path / "result.json"
    args = ["jobs/pipeline.py", "--rounds", "6", "--dir", str(directory), "--out", str(out)]
    first = launch(saved, args)
    assert first.returncode == 0, first.explain()
    # A checkpoint a round (8 rounds: 6 and 2 to drain). The one before the last has the last
    # round's items queued at the reducer: restart from it.
    assert (directory / "epoch-000007" / "manifest.json").is_file(), first.explain()
    shutil.rmtree(directory / "epoch-000008")
    out.unlink()
    again = launch(restarted, ["--restart", *args])
    assert again.returncode == 0, again.explain()
    assert "resuming at round 7 (checkpoint 7)" in again.stdout, again.explain()
    assert json.loads(out.read_text()) == job_module("pipeline").expected(6, 8)
    assert "restored_state" not in again.stderr, again.explain()  # nothing left behind
