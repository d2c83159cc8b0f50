"""The runner's command line, without MPI."""

from __future__ import annotations

import pytest
from mpirun import python

from geode_mpi.runner.cli import split_argv
from geode_mpi.runner.run import exit_status


@pytest.mark.parametrize(
    "argv,ours,theirs",
    [
        (["job.py", "-x", "--info"], ["job.py"], ["-x", "--info"]),
        (["--info"], ["--info"], []),
        (["-m", "pytest", "-x", "tests"], ["-m", "pytest"], ["-x", "tests"]),
        (["--", "job.py", "--version"], ["job.py"], ["--version"]),
    ],
)
def test_job_arguments_are_left_to_the_job(
    argv: list[str], ours: list[str], theirs: list[str]
) -> None:
    assert split_argv(argv) == (ours, theirs)


def test_exit_status_follows_sys_exit() -> None:
    assert [exit_status(c) for c in (None, 0, 3, 256 + 7, -1, True)] == [0, 0, 3, 7, 255, 1]


def test_version_and_info() -> None:
    version = python(["-m", "geode_mpi", "--version"], timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("geode_mpi ")
    info = python(["-m", "geode_mpi", "--info"], timeout=60)
    assert info.returncode == 0, info.explain()
    for key in ("MPI library:", "thread level:", "ranks: 1", "mpi4py"):
        assert key in info.stdout


def test_missing_script_and_missing_arguments() -> None:
    missing = python(["-m", "geode_mpi", "no_such_job.py"], timeout=60)
    assert (
        missing.returncode == 2 and "job script 'no_such_job.py' does not exist" in missing.stderr
    )
    bare = python(["-m", "geode_mpi"], timeout=60)
    assert bare.returncode == 2 and "give a job script" in bare.stderr


def test_uncaught_exception_in_the_embedded_world_is_labelled(tmp_path) -> None:  # type: ignore[no-untyped-def]
    job = tmp_path / "boom.py"
    job.write_text("raise KeyError('nope')\n")
    result = python(["-m", "geode_mpi", str(job)], timeout=60)
    assert result.returncode == 1
    assert "[rank 0/1] KeyError: 'nope'" in result.stderr
    assert "runpy" not in result.stderr, "the runner's own frames are hidden"
