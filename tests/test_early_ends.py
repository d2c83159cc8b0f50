"""A job's ends other than its last line: a thread's uncaught exception ends the whole job, as
the main thread's does; ``sys.exit(0)`` is a normal end (the collective close, its warning)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpirun import mpirun, python

pytestmark = pytest.mark.mpi

# Rank 1's worker thread fails; rank 0 waits for the message only that thread would send.
THREAD_FAILS = """\
import threading
from geode_mpi import Geode

with Geode() as geode:
    def work():
        geode.send("started", dest="node0")
        if geode.rank == 1:
            raise ValueError("bad input in the worker thread")
        geode.send("result", dest="node0")

    worker = threading.Thread(target=work, name="worker")
    worker.start()
    if geode.rank == 0:
        for _ in range(2 * geode.size):
            geode.receive(timeout=300)
    worker.join()
"""


def _job(tmp_path: Path, text: str, name: str = "job.py") -> str:
    job = tmp_path / name
    job.write_text(text)
    return str(job)


def test_a_threads_exception_ends_the_job_labelled_and_leaves_every_ranks_parts(
    tmp_path: Path,
) -> None:
    """Python printed it unlabelled and rank 0 waited for ever (here 300 s)."""
    observe = ["--stats-json", str(tmp_path / "stats.json"), "--trace", str(tmp_path / "t.json")]
    args = ["-m", "geode_mpi", *observe, _job(tmp_path, THREAD_FAILS)]
    result = mpirun(2, args, timeout=90)
    assert not result.timed_out and result.returncode == 1, result.explain()
    err = result.stderr
    assert (
        "[rank 1/2 node1] geode_mpi: uncaught exception in thread 'worker', aborting the job" in err
    ), result.explain()
    assert "[rank 1/2 node1] ValueError: bad input in the worker thread" in err
    assert "Exception in thread" not in err and "threading.py" not in err  # (its own frames)
    for rank in (0, 1):
        for part in (f"stats.rank{rank}.json", f"t.rank{rank}.json"):
            left = json.loads((tmp_path / part).read_text())
            assert left["partial"] is True and "status 1" in left["reason"], part


def test_a_threads_exception_ends_the_job_without_the_runner(tmp_path: Path) -> None:
    result = mpirun(2, [_job(tmp_path, THREAD_FAILS)], timeout=90)
    assert not result.timed_out and result.returncode == 1, result.explain()
    assert "[rank 1/2] geode_mpi: uncaught exception in thread 'worker'" in result.stderr


OWN_HOOK = """\
import sys
import threading
from geode_mpi import Geode

seen = []
threading.excepthook = lambda args: seen.append(args.exc_type.__name__)
with Geode() as geode:
    for target in (lambda: sys.exit(3), lambda: 1 / 0):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
    print(f"rank {geode.rank} saw {seen}")
"""


def test_a_threads_sys_exit_stays_silent_and_the_jobs_own_hook_decides(tmp_path: Path) -> None:
    """The job's hook, set before the Geode's, gets both (Python's way); the job goes on."""
    result = mpirun(2, [_job(tmp_path, OWN_HOOK)], timeout=90)
    assert result.returncode == 0, result.explain()
    for rank in (0, 1):
        assert f"rank {rank} saw ['SystemExit', 'ZeroDivisionError']" in result.stdout


def test_a_threads_exception_in_one_process(tmp_path: Path) -> None:
    """Under the runner it ends the process as the main thread's would (it returned 0); plain
    python keeps Python's way: the traceback, and the process goes on."""
    job = _job(tmp_path, THREAD_FAILS.replace("geode.rank == 1", "True"))
    result = python(["-m", "geode_mpi", job], timeout=60)
    assert result.returncode == 1, result.explain()
    line = "[rank 0/1 node0] geode_mpi: uncaught exception in thread 'worker', aborting the job"
    assert line in result.stderr, result.explain()
    result = python([job], timeout=60)
    assert "Exception in thread worker" in result.stderr, result.explain()
    assert "ReceiveTimeout: receive on node0 found no message, and none can arrive" in result.stderr


# Rank 1 is done early and says so with sys.exit(0); rank 0 still takes its messages.
DONE_EARLY = """\
import sys
from geode_mpi import Geode

with Geode() as geode:
    if geode.rank == 1:
        geode.send("last", dest="node0")
        sys.exit(0)
    print(geode.receive(source="node1", timeout=300).data)
"""


@pytest.mark.parametrize("runner", [True, False])
def test_sys_exit_0_on_one_rank_ends_the_job_as_its_end_of_block(
    tmp_path: Path, runner: bool
) -> None:
    """It left the block without the collective close: rank 0's close() waited for ever."""
    args = (["-m", "geode_mpi"] if runner else []) + [_job(tmp_path, DONE_EARLY)]
    result = mpirun(2, args, timeout=90)
    assert not result.timed_out and result.returncode == 0, result.explain()
    assert result.stdout == "last\n", result.explain()


def test_sys_exit_0_on_every_rank_warns_of_messages_never_received(tmp_path: Path) -> None:
    job = DONE_EARLY.replace('print(geode.receive(source="node1", timeout=300).data)', "")
    job = job.replace("if geode.rank == 1:", "if True:")
    result = mpirun(2, ["-m", "geode_mpi", _job(tmp_path, job)], timeout=90)
    assert result.returncode == 0, result.explain()
    warning = "[rank 0/2 node0] WARNING geode_mpi: the job ends with messages never received"
    assert warning in result.stderr, result.explain()


def test_hang_timeout_says_a_rank_that_ended_waits_in_close(tmp_path: Path) -> None:
    """It said rank 1 was "busy outside geode_mpi" (it sat in MPI's finalisation)."""
    job = DONE_EARLY.replace('geode.send("last", dest="node0")', "pass")
    # (a receive, with a source or none, raises once every rank it could come from is in
    # close() and can send nothing more: node1's handler still could)
    job = job.replace("from geode_mpi import Geode", "from geode_mpi import Geode, Message")
    job = job.replace(
        "    if geode.rank == 1:",
        '    geode.on(Message, node="node1")(print)\n    if geode.rank == 1:',
    )
    args = ["-m", "geode_mpi", "--hang-timeout", "4", _job(tmp_path, job)]
    result = mpirun(2, args, timeout=90)
    assert result.returncode == 124, result.explain()
    line = "[rank 1/2 node1]   in close(), this rank's end of the job: it waits for every rank"
    assert line in result.stderr, result.explain()
    assert "busy outside geode_mpi" not in result.stderr, result.explain()


def test_run_in_a_process_that_goes_on_gives_back_pythons_thread_hook() -> None:
    """``run()`` from a notebook: after the job, a thread's error ends only that thread."""
    code = (
        "import threading\n"
        "from geode_mpi.runner.run import run\n"
        "status = run('import threading; print(threading.excepthook.__module__)', [], "
        "kind='code')\n"
        "thread = threading.Thread(target=lambda: 1 / 0)\n"
        "thread.start()\n"
        "thread.join()\n"
        "print('went on', status, threading.excepthook is threading.__excepthook__)\n"
    )
    result = python(["-c", code], timeout=60)
    assert result.stdout.splitlines() == ["geode_mpi.transport.abort", "went on 0 True"], (
        result.explain()
    )
    assert "ZeroDivisionError" in result.stderr and "aborting" not in result.stderr


# A porting bug: rank 0 waits, with no timeout (as comm.recv(source=1)), for a message rank 1
# never sends; rank 1 is done and in close().
NEVER_SENT = """\
from geode_mpi import Geode

with Geode() as geode:
    if geode.rank == 0:
        geode.send("first", dest="node0")
        print(geode.receive(source="node1").data)
"""


def test_a_receive_from_a_rank_in_close_that_never_sent_raises(tmp_path: Path) -> None:
    """It waited for ever (the long-wait notice at 60 s named both waits): now it raises as
    the same receive in a one-process world does, naming node1 and its rank in close()."""
    result = mpirun(2, ["-m", "geode_mpi", _job(tmp_path, NEVER_SENT)], timeout=60)
    assert not result.timed_out and result.returncode == 1, result.explain()
    text = (
        "ReceiveTimeout: receive on node0 found no message (source=node1), and none can "
        "arrive: node1's rank (rank 1) is in close() and sends nothing more"
    )
    assert text in result.stderr, result.explain()
    assert "1 other message(s) are queued there" in result.stderr, result.explain()


# The job calls MPI.Finalize() itself (an mpi4py habit) with its Geode open, right after isend.
FINALIZES = """\
import sys
from mpi4py import MPI
from geode_mpi import Geode

geode = Geode()
if geode.rank == 0:
    for i in range(3):
        geode.isend(i, dest="node1")
else:
    print("got", [geode.receive(timeout=60).data for _ in range(3)], flush=True)
MPI.Finalize()
print(f"finalized {geode.rank}", flush=True)  # (one string: the ranks' lines may interleave)
"""


@pytest.mark.parametrize("runner", [[], ["-m", "geode_mpi"]], ids=["python", "runner"])
def test_a_jobs_own_mpi_finalize_closes_the_geode_first(tmp_path: Path, runner: list[str]) -> None:
    """The isends held to batch never left (rank 1 waited its 60 s), and the Geode's close at
    exit called MPI after MPI_Finalize (an MPICH error, status 1)."""
    result = mpirun(2, [*runner, _job(tmp_path, FINALIZES)], timeout=90)
    assert not result.timed_out and result.returncode == 0, result.explain()
    assert "got [0, 1, 2]" in result.stdout, result.explain()
    assert "finalized 0" in result.stdout and "finalized 1" in result.stdout, result.explain()
    assert "after finalizing" not in result.stderr, result.explain()
