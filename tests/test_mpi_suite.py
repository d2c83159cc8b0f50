"""The MPI tier: SPMD tests under mpiexec at 1 to 4 ranks, and the runner's behaviour.

Each launch has a timeout, and the runner aborts the job when any rank fails, so a failure is
reported with its message instead of hanging the suite.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mpirun import ROOT, clean_env, load_slack, mpiexec, mpirun, python

pytestmark = pytest.mark.mpi

SPMD = ["-m", "geode_mpi", "-m", "pytest", "tests/mpi", "-x", "-q", "-p", "no:cacheprovider"]
SPMD += ["-o", "addopts=", "--timeout=120"]  # (each rank's conftest scales it by the load)


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_spmd_suite(ranks: int) -> None:
    """3 ranks too: a group's sequencer on rank 2 of 3 once delivered to its own node out of
    order (every 32nd send polls, and the poll forwarded the next message)."""
    # 420 s: the whole tests/mpi at 4 ranks passed 94% of its tests in 240 s on Debian's MPICH
    # 4.0.2 (the system-mpich leg, 2026-12-07) once the session's new tests were in
    result = mpirun(ranks, SPMD, timeout=420)
    assert result.returncode == 0, result.explain()
    assert " passed" in result.stdout and "failed" not in result.stdout, result.explain()


def test_relay_trees_at_8_ranks() -> None:
    """Relays two levels deep, a rank outside a relayed stream, seven subscribers per topic."""
    relays = [arg if arg != "tests/mpi" else "tests/mpi/test_relays.py" for arg in SPMD]
    result = mpirun(8, relays, timeout=240)
    assert result.returncode == 0, result.explain()
    assert " passed" in result.stdout and "failed" not in result.stdout, result.explain()


def test_hello_embedded_prints_hello_world() -> None:
    result = python(["jobs/hello.py"], timeout=60)
    assert result.returncode == 0, result.explain()
    assert result.stdout == "Hello, World!\n"


def test_original_hello_runs_unchanged_in_the_embedded_world() -> None:
    result = python(["tests/scripts/hello_original.py"], timeout=60)
    assert result.returncode == 0, result.explain()
    assert result.stdout == "Hello, World!\n"


@pytest.mark.parametrize("ranks", [3, 4])
def test_hello_spmd_prints_once(ranks: int) -> None:
    result = mpirun(ranks, ["-m", "geode_mpi", "jobs/hello.py"], timeout=60)
    assert result.returncode == 0, result.explain()
    assert result.stdout == "Hello, World!\n"


def test_hello_at_2_ranks_names_the_missing_node() -> None:
    result = mpirun(2, ["-m", "geode_mpi", "jobs/hello.py"], timeout=60)
    assert result.returncode != 0
    assert "unknown dest 'node2': this job has nodes node0, node1" in result.stderr


def test_original_hello_at_3_ranks_fails_clearly_instead_of_hanging() -> None:
    result = mpirun(3, ["-m", "geode_mpi", "tests/scripts/hello_original.py"], timeout=60)
    assert result.returncode != 0
    assert "NodeNotLocalError: receive('node2') was called on rank" in result.stderr


@pytest.mark.parametrize("ranks", [4, 8])
def test_exception_on_one_rank_ends_the_job_within_10_s(ranks: int) -> None:
    result = mpirun(ranks, ["-m", "geode_mpi", "tests/scripts/fail_rank.py", "2"], timeout=60)
    assert not result.timed_out, result.explain()
    assert result.returncode != 0, result.explain()
    assert _ended_after_failing(result.stderr) < 10 * load_slack(), result.explain()
    assert f"[rank 2/{ranks} node2] ValueError: failing on purpose on rank 2" in result.stderr
    assert f"[rank 2/{ranks} node2] Traceback (most recent call last):" in result.stderr
    _assert_no_segment_left(result.stderr)


def test_sys_exit_on_one_rank_gives_its_status() -> None:
    result = mpirun(4, ["-m", "geode_mpi", "tests/scripts/fail_rank.py", "1", "3"], timeout=60)
    assert result.returncode == 3, result.explain()
    assert _ended_after_failing(result.stderr) < 10 * load_slack(), result.explain()
    assert "sys.exit(3)" in result.stderr
    _assert_no_segment_left(result.stderr)


NETWORK = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}


@pytest.mark.parametrize("ranks", [2, 3])
def test_exception_on_the_network_path_leaves_no_rank_s_segment(ranks: int) -> None:
    """On MPICH's network path each rank maps only its own /dev/shm/mpich_shm_<job>_<rank>:
    the failing rank removed its own, and the other ranks' stayed (5 runs in 5 at 3 ranks).
    Another job's segment stays."""
    other_job = Path(f"/dev/shm/mpich_shm_{os.getpid():x}geode_0")  # (never removed)
    other_job.write_bytes(b"")
    try:
        args = ["-m", "geode_mpi", "tests/scripts/fail_rank.py", "1"]
        result = mpirun(ranks, args, timeout=60, env=clean_env(**NETWORK))
        assert other_job.exists(), "the abort removed another job's segment"
    finally:
        other_job.unlink(missing_ok=True)
    assert not result.timed_out, result.explain()
    assert result.returncode != 0, result.explain()
    assert f"[rank 1/{ranks} node1] ValueError: failing on purpose on rank 1" in result.stderr
    _assert_no_segment_left(result.stderr)


def _assert_no_segment_left(stderr: str) -> None:
    """The shared-memory segments of the job (tests/scripts/fail_rank.py prints those the
    failing rank had mapped, /dev/shm/mpich_shm_<job>_<rank>) are gone from /dev/shm, every
    rank's: MPICH leaves them there after an abort, a few MiB of RAM each until the machine
    restarts."""
    found = re.search(r"shared segments: (.*)", stderr)
    paths = found.group(1).split() if found else []
    jobs = {path.rpartition("_")[0] + "_" for path in paths}
    left = [path for path in paths if Path(path).exists()]
    left += [str(p) for job in jobs for p in Path("/dev/shm").glob(Path(job).name + "*")]
    assert not left, f"left in /dev/shm after the abort: {sorted(set(left))}"


def _ended_after_failing(stderr: str) -> float:
    """Seconds from the failing rank's "failing at" line (tests/scripts/fail_rank.py) to now,
    just after the job ended: what the runner's abort takes, not the job's start-up (CI's
    network-path leg once took 17.4 s for the whole launch at load 15)."""
    found = re.search(r"failing at (\d+\.\d+)", stderr)
    assert found is not None, stderr
    return time.time() - float(found.group(1))


def test_sys_exit_in_the_embedded_world() -> None:
    result = python(["-m", "geode_mpi", "tests/scripts/fail_rank.py", "0", "5"], timeout=60)
    assert result.returncode == 5, result.explain()


def test_job_sees_its_argv_and_runs_as_main() -> None:
    args = ["-m", "geode_mpi", "tests/scripts/argv_echo.py", "--steps", "3", "-x"]
    result = mpirun(2, args, timeout=60)
    assert result.returncode == 0, result.explain()
    # mpiexec may interleave the ranks' lines: read them as tokens.
    seen = sorted(re.findall(r"rank=\d size=2 name=__main__ argv=\[[^\]]*\]", result.stdout))
    assert seen == [
        "rank=0 size=2 name=__main__ argv=['--steps', '3', '-x']",
        "rank=1 size=2 name=__main__ argv=['--steps', '3', '-x']",
    ], result.explain()


def test_nothing_sent_is_lost_when_the_job_drops_its_geode() -> None:
    result = mpirun(3, ["-m", "geode_mpi", "tests/scripts/dropped_geode.py"], timeout=60)
    assert result.returncode == 0, result.explain()
    for rank in (1, 2):
        assert f"rank {rank} received {32 * 2**20} bytes" in result.stdout, result.explain()


@pytest.mark.parametrize("attempt", range(3))
def test_more_ranks_than_cores_never_hangs(attempt: int) -> None:
    result = mpirun(4, ["-m", "geode_mpi", "tests/scripts/oversubscribed_storm.py"], timeout=120)
    assert result.returncode == 0, result.explain()
    assert len(re.findall(r"rank \d received 300 messages", result.stdout)) == 4, result.explain()


@pytest.mark.timeout(960)  # its launch has 900 s; 23 s quiet, minutes at load 20
@pytest.mark.parametrize("ranks", [2, 4])
def test_ten_thousand_topics_make_no_communicator_and_leave_idle_waits_alone(ranks: int) -> None:
    """Issue 15: MPICH runs out at about 2,045 communicators, and a communicator per topic
    publisher used to fail at 3,000 topics; an idle wait used to test every topic's stream.
    (10,000 topics take 10,000 agreement checks: over two minutes on a loaded machine.)"""
    args = ["-m", "geode_mpi", "tests/scripts/many_topics.py", "10000"]
    result = mpirun(ranks, args, timeout=900)
    assert result.returncode == 0, result.explain()
    lines = re.findall(r"rank (\d+): 10000 topics .*communicators made: (\d+) .*", result.stdout)
    assert len(lines) == ranks, result.explain()
    assert all(int(made) <= 2 for _, made in lines), result.explain()  # the library's Dup
    trips = re.search(
        r"rank 0: .* ([\d.]+) us with no topic, ([\d.]+) us with 10000", result.stdout
    )
    assert trips is not None, result.explain()
    idle, busy = float(trips[1]), float(trips[2])
    # Coarse (the figure is in benchmarks/README.md): with a stream polled per topic, 1,000
    # topics made it 147 times slower (at 10,000, ten times the polls). Two short timings on a
    # loaded machine differ by far more than 3x: 388 us against 169 at load 20, and at load
    # 8-10 (4 ranks on 2 cores) 338 us against 15, 316 against 16, 484 against 318, where a
    # quiet machine gives 19-20 both. So 50x and a millisecond: still far under the defect.
    assert busy < 50 * idle + 1000, result.explain()


def test_ctrl_c_ends_the_job() -> None:
    proc = subprocess.Popen(
        [mpiexec(), "-n", "2", sys.executable, "-m", "geode_mpi", "tests/scripts/wait_forever.py"],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not all(f"rank {r} waiting" in "".join(seen) for r in (0, 1)):
            assert time.monotonic() < deadline, "the ranks never reached receive()"
            assert proc.poll() is None, "the job ended on its own"
            reader.join(0.05)  # both ranks must be inside receive() before the Ctrl-C
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to mpiexec
        proc.wait(timeout=30)
        assert time.monotonic() - start < 10
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(10)


@pytest.mark.slow
def test_array_over_2_gib() -> None:
    result = mpirun(2, ["-m", "geode_mpi", "tests/scripts/huge_array.py"], timeout=300)
    assert result.returncode == 0, result.explain()
    assert f"received {2**31 + 4096} bytes intact" in result.stdout
