"""Kill and restart: the 4-rank pipeline of jobs/pipeline.py, SIGKILLed at random moments and
restarted with --restart each time, ends with the result of an uninterrupted run.

Every launch has a timeout. Kills land anywhere: during start-up, during a round, while a
checkpoint is being written, during a restore. The job checks its own result (every item once:
the count and the sum of squares) and exits non-zero otherwise.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mpirun import ROOT, clean_env, load_slack, mpiexec, mpirun

pytestmark = pytest.mark.mpi

KILLS = int(os.environ.get("GEODE_RESTART_KILLS", "30"))  # at least this many SIGKILLs
KILLS_PER_TRIAL = 3  # then the trial's run is left to finish
JOB = ["jobs/pipeline.py", "--rounds", "40", "--pause", "0.02"]


def launch(directory: Path, out: Path) -> subprocess.Popen[str]:
    args = [mpiexec(), "-n", "4", sys.executable, "-m", "geode_mpi", "--restart"]
    args += [*JOB, "--dir", str(directory), "--out", str(out)]
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def ended(proc: subprocess.Popen[str], timeout: float, what: str) -> tuple[str, str]:
    """The job's output once it exits within ``timeout``; else it is killed and the test fails."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{what}: no end in {timeout} s\n{stdout[-3000:]}\n{stderr[-5000:]}")


@pytest.mark.timeout(600)  # 30 kills and 10 restarts: 1-4 minutes, longer under load
def test_a_pipeline_killed_at_random_moments_ends_as_if_never_killed(tmp_path: Path) -> None:
    reference = tmp_path / "reference.json"
    began = time.monotonic()
    plain = mpirun(
        4,
        ["-m", "geode_mpi", *JOB, "--dir", str(tmp_path / "ref"), "--out", str(reference)],
        timeout=120,
    )
    assert plain.returncode == 0, plain.explain()
    # Kill moments are drawn over the span of an uninterrupted run on this machine now (start-up
    # included), so a loaded machine moves them with the run instead of killing every start-up.
    span = time.monotonic() - began
    want = json.loads(reference.read_text())
    rng = random.Random(20261127)
    kills = trials = resumed = 0
    started = time.monotonic()
    while kills < KILLS:
        trials += 1
        directory, out = tmp_path / f"ck{trials}", tmp_path / f"out{trials}.json"
        for attempt in range(KILLS_PER_TRIAL + 1):  # each restarts from the last checkpoints
            proc = launch(directory, out)
            if attempt == KILLS_PER_TRIAL:  # killed every time: now let it finish
                stdout, stderr = ended(proc, 120 * load_slack(), f"trial {trials}")
                break
            try:
                stdout, stderr = proc.communicate(timeout=rng.uniform(0.05, 1.0) * span)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                kills += 1
                continue
            break
        assert proc.returncode == 0, f"trial {trials}:\n{stdout[-3000:]}\n{stderr[-5000:]}"
        resumed += "resuming at round" in stdout
        assert json.loads(out.read_text()) == want, f"trial {trials}: {out.read_text()}"
        limit = 900 * load_slack()  # 15 minutes on a quiet machine, longer under load
        assert time.monotonic() - started < limit, f"only {kills} kills in {limit:.0f} s"
    # Some runs picked up a checkpoint that held messages in flight, and finished from there.
    assert resumed > 0, f"{kills} kills in {trials} trials, no run resumed from a checkpoint"
    assert kills >= KILLS and want["items"] == 40 * 8


def test_sigterm_writes_a_last_checkpoint_and_exits_cleanly(tmp_path: Path) -> None:
    directory, out = tmp_path / "ck", tmp_path / "out.json"
    args = [mpiexec(), "-n", "4", sys.executable, "-m", "geode_mpi", "jobs/pipeline.py"]
    args += ["--rounds", "40", "--pause", "0.1", "--every", "3600"]  # no checkpoint but the last
    args += ["--dir", str(directory), "--out", str(out)]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    # SIGTERM once every rank is past start-up: rank 0 locks the directory after the Geode's
    # first collective, so every rank is then within moments of catching the signal.
    lock, deadline = directory / "geode.lock", time.monotonic() + 120 * load_slack()
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists(), f"the job never locked {lock}"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, stderr = ended(proc, 60 * load_slack(), "after SIGTERM")
    assert proc.returncode == 0, f"{stdout}\n{stderr[-5000:]}"
    assert "SIGTERM: checkpoint 1 written" in stdout, stdout
    # What the filters and the reducer still queue is in the checkpoint, not lost.
    assert "never received" not in stderr, stderr[-5000:]
    assert not out.exists()  # stopped early
    again = mpirun(
        4,
        ["-m", "geode_mpi", "--restart", *JOB, "--dir", str(directory), "--out", str(out)],
        timeout=120,
    )
    assert again.returncode == 0, again.explain()
    assert "resuming at round" in again.stdout
    assert json.loads(out.read_text())["items"] == 40 * 8
