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
from mpirun import ROOT, clean_env, mpiexec, mpirun

pytestmark = pytest.mark.mpi

KILLS = int(os.environ.get("GEODE_RESTART_KILLS", "30"))  # at least this many SIGKILLs
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


def test_a_pipeline_killed_at_random_moments_ends_as_if_never_killed(tmp_path: Path) -> None:
    reference = tmp_path / "reference.json"
    plain = mpirun(
        4,
        ["-m", "geode_mpi", *JOB, "--dir", str(tmp_path / "ref"), "--out", str(reference)],
        timeout=120,
    )
    assert plain.returncode == 0, plain.explain()
    want = json.loads(reference.read_text())
    rng = random.Random(20261127)
    kills = trials = resumed = 0
    started = time.monotonic()
    while kills < KILLS:
        trials += 1
        directory, out = tmp_path / f"ck{trials}", tmp_path / f"out{trials}.json"
        for attempt in range(200):
            proc = launch(directory, out)
            try:
                stdout, stderr = proc.communicate(timeout=rng.uniform(0.2, 3.0))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                kills += 1
                continue
            assert proc.returncode == 0, f"attempt {attempt}:\n{stdout[-3000:]}\n{stderr[-5000:]}"
            resumed += "resuming at round" in stdout
            break
        else:
            pytest.fail(f"trial {trials} never finished in 200 attempts")
        assert json.loads(out.read_text()) == want, f"trial {trials}: {out.read_text()}"
        assert time.monotonic() - started < 900, f"only {kills} kills in 15 minutes"
    # Some runs picked up a checkpoint that held messages in flight, and finished from there.
    assert resumed > 0, f"{kills} kills in {trials} trials, no run resumed from a checkpoint"
    assert kills >= KILLS and want["items"] == 40 * 8
