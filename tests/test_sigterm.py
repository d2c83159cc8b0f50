"""SIGTERM ends the job within its documented bound, at 2 and 4 ranks.

SIGTERM goes to mpiexec alone (it forwards it to every rank, as SLURM signals every process).
After the first SIGTERM at t0, with ``GEODE_TERM_GRACE=G``: the next maybe_checkpoint() writes a
last checkpoint and exits 0; a call still blocked at t0 + G/2 raises Terminated (uncaught: exit
143, one line); at t0 + G the process ends (143, one line); a second SIGTERM ends it at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mpirun import ROOT, clean_env, mpiexec, mpirun

from geode_mpi.core.termination import SAME_SIGNAL
from geode_mpi.persistence import CheckpointStore

pytestmark = pytest.mark.mpi

SCRIPTS = ROOT / "tests" / "scripts"
STATUS = 143  # 128 + SIGTERM
SLACK = 6.0  # seconds for mpiexec to notice and tear down the ranks, on a loaded machine
START = 60.0  # seconds for every rank to start and say "ready"


class Job:
    """A job under mpiexec in its own process group, its output read as it comes."""

    def __init__(
        self, n: int, script: str, args: list[str], grace: float, runner: bool = True
    ) -> None:
        command = [mpiexec(), "-n", str(n), sys.executable]
        command += ["-m", "geode_mpi"] if runner else []  # without: Geode()'s abort hook
        command += [str(SCRIPTS / script), *args]
        self.n = n
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=clean_env(GEODE_TERM_GRACE=str(grace)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name: str, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            (self.out if name == "out" else self.err).append(line)
            self.lines.put((name, line))

    def wait_for(self, text: str, count: int, timeout: float) -> None:
        """Wait until the output holds ``text`` ``count`` times (ranks' lines can interleave
        without their newlines, so this counts in the whole text)."""
        deadline = time.monotonic() + timeout
        while self.text().count(text) < count:
            try:
                self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.kill()
                pytest.fail(f"{count} x {text!r} not seen in {timeout} s\n{self.explain()}")

    def sigterm(self) -> float:
        """SIGTERM to mpiexec only; the time it was sent."""
        os.kill(self.proc.pid, signal.SIGTERM)
        return time.monotonic()

    def ended(self, timeout: float) -> tuple[int, float]:
        """The exit status, and when it ended; fails (killing the job) if it runs on."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running {timeout} s later\n{self.explain()}")
        when = time.monotonic()
        self.proc.communicate()
        return self.proc.returncode, when

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def text(self) -> str:
        return "".join(self.out + self.err)

    def explain(self) -> str:
        return f"--- stdout ---\n{''.join(self.out)}\n--- stderr ---\n{''.join(self.err)[-6000:]}"


def start(n: int, script: str, args: list[str], grace: float, runner: bool = True) -> Job:
    job = Job(n, script, args, grace, runner)
    job.wait_for("ready", n, START)
    return job


@pytest.mark.parametrize("runner", [True, False], ids=["runner", "plain"])
@pytest.mark.parametrize("n", [2, 4])
def test_a_job_blocked_in_receive_raises_terminated_at_half_its_grace(
    n: int, runner: bool, tmp_path: Path
) -> None:
    grace = 8.0
    job = start(n, "sigterm_blocked.py", ["--dir", str(tmp_path / "ck")], grace, runner)
    sent = job.sigterm()
    status, when = job.ended(grace + SLACK)
    assert status == STATUS, job.explain()
    assert grace / 2 - 0.5 <= when - sent <= grace / 2 + SLACK, (when - sent, job.explain())
    text = job.text()
    assert "geode_mpi: Terminated: SIGTERM" in text, job.explain()
    assert "Traceback" not in text, job.explain()
    assert "did not end within" not in text, job.explain()  # Terminated came first


@pytest.mark.parametrize("n", [2, 4])
def test_a_job_that_catches_terminated_saves_its_state(n: int, tmp_path: Path) -> None:
    grace = 8.0
    directory = tmp_path / "ck"
    job = start(n, "sigterm_blocked.py", ["--dir", str(directory), "--save"], grace)
    sent = job.sigterm()
    status, when = job.ended(grace + SLACK)
    assert status == STATUS, job.explain()
    assert when - sent <= grace + SLACK, job.explain()
    assert "".join(job.out).count("saved checkpoint 1") == n, job.explain()
    loaded = CheckpointStore(directory, keep=2).newest([])
    assert loaded is not None and loaded.epoch == 1
    for rank in range(n):
        state = loaded.read(rank)[1]["state"]["plain"]
        assert state["saved_by"] == "Terminated" and state["waited"] >= grace / 2 - 0.5


@pytest.mark.parametrize("stuck", [False, True], ids=["computing", "stuck-in-mpi"])
@pytest.mark.parametrize("n", [2, 4])
def test_a_computing_job_is_ended_after_its_grace(n: int, stuck: bool, tmp_path: Path) -> None:
    grace = 5.0
    flags = ["--stuck"] if stuck else []
    job = start(n, "sigterm_compute.py", ["--dir", str(tmp_path / "ck"), *flags], grace)
    sent = job.sigterm()
    status, when = job.ended(grace + SLACK)
    assert status == STATUS, job.explain()
    assert grace - 0.5 <= when - sent <= grace + SLACK, (when - sent, job.explain())
    text = job.text()
    assert "did not end within term_grace=5 s; exiting with status 143" in text, job.explain()
    assert "Traceback" not in text, job.explain()


@pytest.mark.parametrize("n", [2, 4])
def test_a_second_sigterm_ends_the_job_at_once(n: int, tmp_path: Path) -> None:
    grace = 120.0
    job = start(n, "sigterm_compute.py", ["--dir", str(tmp_path / "ck")], grace)
    job.sigterm()
    job.wait_for("SIGTERM: a last checkpoint at the next maybe_checkpoint()", n, 30)
    # Not a wait for a message: a SIGTERM within SAME_SIGNAL of the first counts as the same
    # one (SLURM and the launcher each deliver the time limit's), so the second comes after.
    time.sleep(SAME_SIGNAL + 0.5)
    sent = job.sigterm()
    status, when = job.ended(SLACK)
    assert status == STATUS, job.explain()
    assert when - sent <= SLACK
    assert "geode_mpi: SIGTERM: a second SIGTERM; exiting with status 143" in job.text()


@pytest.mark.parametrize("n", [2, 4])
def test_the_same_sigterm_twice_from_slurm_and_the_launcher_is_one(n: int, tmp_path: Path) -> None:
    """Under SLURM every rank gets the time limit's SIGTERM from SLURM and again from mpiexec
    (or srun), moments apart: that must still leave the job its grace, not end it at once."""
    grace = 5.0
    job = start(n, "sigterm_compute.py", ["--dir", str(tmp_path / "ck")], grace)
    ranks = [int(pid) for pid in re.findall(r"ready \d+ pid (\d+)", job.text())]
    assert len(ranks) == n, job.explain()
    sent = job.sigterm()  # mpiexec forwards it to every rank, and SLURM signals each rank too
    for pid in ranks:
        os.kill(pid, signal.SIGTERM)
    status, when = job.ended(grace + SLACK)
    assert status == STATUS, job.explain()
    assert grace - 0.5 <= when - sent <= grace + SLACK, (when - sent, job.explain())
    assert "a second SIGTERM" not in job.text(), job.explain()
    assert "did not end within term_grace=5 s" in job.text(), job.explain()


@pytest.mark.parametrize("n", [2, 4])
def test_maybe_checkpoint_writes_the_last_checkpoint_and_the_restart_ends_alike(
    n: int, tmp_path: Path
) -> None:
    grace = 20.0
    steps = ["--steps", "20", "--work", "0.25"]  # rank 0 computes; the others wait in receive
    job_args = ["-m", "geode_mpi", str(SCRIPTS / "sigterm_steps.py")]
    ref = ["--dir", str(tmp_path / "ref"), "--out", str(tmp_path / "ref"), *steps]
    reference = mpirun(n, [*job_args, *ref], timeout=120)
    assert reference.returncode == 0, reference.explain()
    want = [json.loads((tmp_path / f"ref.{rank}").read_text()) for rank in range(n)]

    directory, out = tmp_path / "ck", tmp_path / "out"
    args = ["--dir", str(directory), "--out", str(out), *steps]
    job = start(n, "sigterm_steps.py", args, grace)
    time.sleep(1.0)  # a few steps in: not a way to wait for a message
    sent = job.sigterm()
    status, when = job.ended(grace + SLACK)
    assert status == 0, job.explain()
    assert when - sent <= grace / 2, (when - sent, job.explain())
    assert "geode_mpi: SIGTERM: checkpoint 1 written" in job.text(), job.explain()
    assert "geode_mpi: Terminated" not in job.text(), job.explain()
    assert not any(Path(f"{out}.{rank}").exists() for rank in range(n))  # stopped early
    loaded = CheckpointStore(directory, keep=2).newest([])
    assert loaded is not None and loaded.epoch == 1

    again = mpirun(
        n,
        ["-m", "geode_mpi", "--restart", str(SCRIPTS / "sigterm_steps.py"), *args],
        timeout=120,
    )
    assert again.returncode == 0, again.explain()
    assert "resuming at step" in again.stdout, again.explain()
    got = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(n)]
    assert got == want


@pytest.mark.parametrize("timeout", [60.0, None], ids=["timeout", "no-timeout"])
@pytest.mark.parametrize("n", [2, 4])
def test_maybe_checkpoint_waits_for_a_late_rank_within_the_grace(
    n: int, timeout: float | None, tmp_path: Path
) -> None:
    """The other ranks wait in maybe_checkpoint() past t0 + grace/2 for a rank still computing:
    it never raises Terminated (with a timeout it did, and the last checkpoint was lost)."""
    grace, late = 10.0, 6.5  # late: past the grace's patience (5 s), inside the grace
    directory = tmp_path / "ck"
    args = ["--dir", str(directory), "--late", str(late)]
    args += [] if timeout is None else ["--timeout", str(timeout)]
    job = start(n, "sigterm_late_rank.py", args, grace)
    status, _ = job.ended(grace + START)
    text = job.text()
    assert status == 0, job.explain()
    assert "geode_mpi: SIGTERM: checkpoint 1 written" in text, job.explain()
    assert "geode_mpi: Terminated" not in text, job.explain()
    assert "did not end within" not in text, job.explain()
    loaded = CheckpointStore(directory, keep=2).newest([])
    assert loaded is not None and loaded.epoch == 1
    assert loaded.read(0)[1]["state"]["plain"] == {"step": 3}


def test_maybe_checkpoint_waits_no_longer_than_the_grace(tmp_path: Path) -> None:
    """A rank that reaches maybe_checkpoint() after t0 + grace: the timer ends the job."""
    grace = 5.0
    args = ["--dir", str(tmp_path / "ck"), "--late", "60", "--timeout", "60"]
    job = start(2, "sigterm_late_rank.py", args, grace)
    status, _ = job.ended(grace + SLACK)
    assert status == STATUS, job.explain()
    text = job.text()
    assert "did not end within term_grace=5 s; exiting with status 143" in text, job.explain()
    assert "geode_mpi: Terminated" not in text, job.explain()  # maybe_checkpoint() waited on
    assert "checkpoint 1 written" not in text, job.explain()
