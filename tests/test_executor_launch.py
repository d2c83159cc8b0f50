"""The executor under the runner: a worker rank that dies ends the job, nothing hangs."""

from __future__ import annotations

from pathlib import Path

import pytest
from mpirun import load_slack, mpirun

pytestmark = pytest.mark.mpi

JOB = """
import os, sys
from geode_mpi import Geode


def task(x):
    if x == 5:
        {death}
    return x


geode = Geode()
with geode.executor() as ex:
    if ex is not None:
        print(list(ex.map(task, range(20))))
geode.close(timeout=60)
"""


@pytest.mark.parametrize(
    ("death", "said"),
    [
        ("os._exit(3)", ""),  # the rank is gone: MPI's launcher ends the job
        ("sys.exit(4)", "sys.exit(4)"),  # the runner ends the job with the rank's status
        # A task's status 0 is no clean end of the job (its client waits): status 1. The
        # worker waited in close() for the client, which waited for the outcome, before.
        ("sys.exit(0)", "called sys.exit(0) on a worker; ending the job with status 1"),
        ("sys.exit()", "called sys.exit(None) on a worker; ending the job with status 1"),
        ("quit()", "called sys.exit(None) on a worker; ending the job with status 1"),
    ],
)
@pytest.mark.parametrize("runner", [True, False], ids=["runner", "plain-python"])
def test_a_worker_that_dies_ends_the_job(
    death: str, said: str, runner: bool, tmp_path: Path
) -> None:
    if not runner and death.startswith("os._exit"):
        pytest.skip("the launcher's own doing: the same with or without the runner")
    script = tmp_path / "dies.py"
    script.write_text(JOB.format(death=death), encoding="utf-8")
    args = ["-m", "geode_mpi", str(script)] if runner else [str(script)]
    result = mpirun(3, args, timeout=120, cwd=tmp_path)
    assert not result.timed_out and result.seconds < 60 * load_slack(), result.explain()
    assert result.returncode != 0, result.explain()
    assert said in result.stderr, result.explain()
    assert "[0, 1, 2" not in result.stdout, result.explain()  # the map never completed


COMPUTE = """
import time
from geode_mpi import Geode


def square(x):
    return x * x


geode = Geode()
with geode.executor({workers}) as ex:
    if ex is not None:
        print(ex.submit(square, 2).result(timeout=60), flush=True)
        time.sleep(4)  # the client computes: its workers wait, which is no hang
        print(ex.submit(square, 3).result(timeout=60), flush=True)
geode.close(timeout=60)
"""


@pytest.mark.parametrize("workers", ["", "workers=geode.nodes"])
def test_a_client_computing_with_no_task_in_flight_is_no_hang(workers: str, tmp_path: Path) -> None:
    """Its thread sleeps outside geode_mpi's waits then, so --hang-timeout sees a busy rank;
    so does the thread that runs the client rank's own tasks when it has workers too (it
    waited in geode_mpi for the next task until the end, and the job ended as hung).

    The other ranks' workers wait meanwhile: after 3 s one of them asks every rank and waits
    4 s more (2 grace periods) for the client's rank, silent while it computes, to answer
    from its next call; the worker ranks wait from the start, so the client computes 4 s, not
    more (6 s failed when the first result took over a second to come)."""
    script = tmp_path / "compute.py"
    script.write_text(COMPUTE.format(workers=workers), encoding="utf-8")
    args = ["-m", "geode_mpi", "--hang-timeout", "3", str(script)]
    result = mpirun(2, args, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.explain()
    assert result.stdout.split() == ["4", "9"], result.explain()
