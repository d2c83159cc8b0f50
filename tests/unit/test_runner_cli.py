"""The runner's command line, without MPI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mpirun import ROOT, clean_env, mpiexec, mpirun, python

from geode_mpi.runner.cli import split_argv
from geode_mpi.runner.run import exit_status


@pytest.mark.parametrize(
    "argv,ours,theirs",
    [
        (["job.py", "-x", "--info"], ["job.py"], ["-x", "--info"]),
        (["--info"], ["--info"], []),
        (["-m", "pytest", "-x", "tests"], ["-m", "pytest"], ["-x", "tests"]),
        (["--", "job.py", "--version"], ["job.py"], ["--version"]),
        # --restart takes DIR as its value, whether it exists or not ...
        (["--restart", "ckpt", "job.py", "a"], ["--restart", "ckpt", "job.py"], ["a"]),
        (["--restart=ckpt", "job.py", "a"], ["--restart=ckpt", "job.py"], ["a"]),
        # ... and alone when the job script follows it
        (["--restart", "job.py", "ckpt"], ["--restart=", "job.py"], ["ckpt"]),
        (["--restart", "-m", "pkg.job", "x"], ["--restart=", "-m", "pkg.job"], ["x"]),
        (
            ["--stats-json=s.json", "--trace", "t.json", "job.py"],
            ["--stats-json=s.json", "--trace", "t.json", "job.py"],
            [],
        ),
        (["-c", "print(1)", "a", "-x"], ["-c", "print(1)"], ["a", "-x"]),
        (["--stats", "-mpkg.job", "-x"], ["--stats", "-mpkg.job"], ["-x"]),
    ],
)
def test_job_arguments_are_left_to_the_job(
    argv: list[str], ours: list[str], theirs: list[str]
) -> None:
    assert split_argv(argv) == (ours, theirs)


def test_exit_status_follows_sys_exit() -> None:
    assert [exit_status(c) for c in (None, 0, 3, 256 + 7, -1, True, False)] == [
        0, 0, 3, 7, 255, 1, 0,
    ]  # fmt: skip


def test_a_non_zero_exit_code_never_gives_status_0() -> None:
    """The operating system keeps 8 bits: sys.exit(256) alone would exit with 0."""
    assert [exit_status(c) for c in (256, 512, -256, 1 << 40)] == [1, 1, 1, 1]


@pytest.mark.mpi
@pytest.mark.parametrize("code", [256, -1])
def test_sys_exit_with_a_multiple_of_256_on_one_rank_ends_the_job(
    tmp_path: Path, code: int
) -> None:
    job = _job(
        tmp_path,
        "import sys\nfrom geode_mpi import Geode\ngeode = Geode()\n"
        f"if geode.rank == 1:\n    sys.exit({code})\ngeode.receive(timeout=None)\n",
    )
    result = mpirun(2, ["-m", "geode_mpi", job], timeout=60)
    assert not result.timed_out, result.explain()
    assert result.returncode == exit_status(code) != 0, result.explain()
    assert f"geode_mpi: sys.exit({code}), ending the job with status " in result.stderr


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


@pytest.mark.parametrize("option", ["--hang", "--log", "--stats-j"])
def test_an_abbreviated_option_is_refused_naming_it(tmp_path: Path, option: str) -> None:
    """argparse took --hang for --hang-timeout, but split_argv took its value for the job."""
    job = _job(tmp_path, "print('ran')\n")
    result = python(["-m", "geode_mpi", option, "30", job], timeout=60)
    assert result.returncode == 2, result.explain()
    assert f"error: unrecognized arguments: {option}" in result.stderr, result.explain()
    assert "ran" not in result.stdout


@pytest.mark.mpi
@pytest.mark.parametrize(
    ("args", "stream", "said"),
    [
        (["--hang-timeout", "abc", "job.py"], "stderr", "usage:"),
        (["--hang-timeout", "-1", "job.py"], "stderr", "--hang-timeout must be > 0"),
        (["no_such_job.py"], "stderr", "does not exist"),
        (["--log-level", "INFO", "no_such_job.py"], "stderr", "does not exist"),
        (["--help"], "stdout", "usage:"),
        (["--version"], "stdout", "geode_mpi "),
        (["inspect", "--depth", "x", "dir"], "stderr", "usage:"),
        (["inspect", "no_such_dir"], "stderr", "'no_such_dir' does not exist"),
        (["-"], "stderr", "standard input ('-') is not supported"),
    ],
)
def test_command_line_errors_and_help_are_printed_once_for_the_job(
    tmp_path: Path, args: list[str], stream: str, said: str
) -> None:
    _job(tmp_path, "print('ran')\n")
    result = mpirun(3, ["-m", "geode_mpi", *args], timeout=60, cwd=tmp_path)
    assert not result.timed_out, result.explain()
    assert getattr(result, stream).count(said) == 1, result.explain()


def test_uncaught_exception_in_the_embedded_world_is_labelled(tmp_path) -> None:  # type: ignore[no-untyped-def]
    job = tmp_path / "boom.py"
    job.write_text("raise KeyError('nope')\n")
    result = python(["-m", "geode_mpi", str(job)], timeout=60)
    assert result.returncode == 1
    assert "[rank 0/1] KeyError: 'nope'" in result.stderr
    assert "runpy" not in result.stderr, "the runner's own frames are hidden"


CHECKPOINTING = """\
import sys
from geode_mpi import Geode

own = sys.argv[1] if len(sys.argv) > 1 else None
with Geode(checkpoint_dir=own) as geode:
    print("restored", geode.restored_epoch)
    geode.checkpoint({"step": 1})
"""


def _job(tmp_path: Path, text: str, name: str = "job.py") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_restart_dir_that_does_not_exist_is_named(tmp_path: Path) -> None:
    job = _job(tmp_path, CHECKPOINTING)
    missing = str(tmp_path / "nodir")
    for args in (["--restart", missing, job], [f"--restart={missing}", job]):
        result = python(["-m", "geode_mpi", *args], timeout=60)
        assert result.returncode == 2, result.explain()
        assert f"--restart: checkpoint directory {missing!r} does not exist" in result.stderr
        assert "job script" not in result.stderr


def test_restart_dir_is_the_directory_a_job_without_its_own_restores_from(
    tmp_path: Path,
) -> None:
    job, ckpt = _job(tmp_path, CHECKPOINTING), tmp_path / "ckpt"
    ckpt.mkdir()
    for args in (["--restart", str(ckpt)], [f"--restart={ckpt}"], ["--restart", str(ckpt)]):
        result = python(["-m", "geode_mpi", *args, job], timeout=60)
        assert result.returncode == 0, result.explain()
    # Three runs: the first started afresh, each later one restored the one before.
    assert result.stdout == "restored 2\n"


def test_restart_dir_other_than_the_jobs_own_is_an_error_naming_both(tmp_path: Path) -> None:
    job, ckpt, own = _job(tmp_path, CHECKPOINTING), tmp_path / "ckpt", tmp_path / "own"
    ckpt.mkdir()
    result = python(["-m", "geode_mpi", "--restart", str(ckpt), job, str(own)], timeout=60)
    assert result.returncode == 1, result.explain()
    assert "RestartDirError" in result.stderr
    assert f"--restart {str(ckpt)!r}" in result.stderr and f"{str(own)!r}" in result.stderr
    assert "restored" not in result.stdout and not own.exists()
    same = python(["-m", "geode_mpi", "--restart", str(ckpt), job, str(ckpt)], timeout=60)
    assert same.returncode == 0 and same.stdout == "restored None\n", same.explain()


def test_bare_restart_uses_the_jobs_own_directory(tmp_path: Path) -> None:
    job, own = _job(tmp_path, CHECKPOINTING), tmp_path / "own"
    for _ in range(2):
        result = python(["-m", "geode_mpi", "--restart", job, str(own)], timeout=60)
        assert result.returncode == 0, result.explain()
    assert result.stdout == "restored 1\n"


def test_c_runs_code_as_the_job() -> None:
    code = "import sys\nfrom geode_mpi import Geode\nprint(sys.argv, __name__, Geode().size)"
    result = python(["-m", "geode_mpi", "-c", code, "a", "--info"], timeout=60)
    assert result.returncode == 0, result.explain()
    assert result.stdout == "['-c', 'a', '--info'] __main__ 1\n"
    failing = python(["-m", "geode_mpi", "-c", "raise KeyError('nope')"], timeout=60)
    assert failing.returncode == 1 and "[rank 0/1] KeyError: 'nope'" in failing.stderr


@pytest.mark.mpi
def test_c_runs_on_every_rank() -> None:
    code = "from geode_mpi import Geode\ng = Geode()\nprint('rank', g.rank, 'of', g.size)"
    result = run_mpi(2, ["-m", "geode_mpi", "-c", code])
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["rank 0 of 2", "rank 1 of 2"]


@pytest.mark.mpi
def test_ranks_print_whole_lines_even_unbuffered() -> None:
    # PYTHONUNBUFFERED made print() write each piece apart, and mpiexec spliced two ranks'
    # lines ("rankrank 1 of 2"): 124 of 6,000 lines here before the runner wrote whole lines.
    code = (
        "import os\nfor i in range(3000): print('rank', os.environ['PMI_RANK'], 'line', i, 'end')"
    )
    result = run_mpi(2, ["-m", "geode_mpi", "-c", code], PYTHONUNBUFFERED="1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    spliced = [line for line in lines if not re.fullmatch(r"rank [01] line \d+ end", line)]
    assert len(lines) == 6000 and spliced == [], spliced[:5]


def run_mpi(n: int, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [mpiexec(), "-n", str(n), sys.executable, *args], env=clean_env(**env), cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_inspect_into_head_ends_without_a_traceback(tmp_path: Path) -> None:
    # A checkpoint whose report is larger than a pipe holds, so head leaves before the end.
    code = (
        "import sys\nfrom geode_mpi import Geode\n"
        "with Geode(checkpoint_dir=sys.argv[1]) as g:\n"
        "    g.checkpoint({f'key_number_{k:06d}': k for k in range(8000)})\n"
    )
    ckpt = tmp_path / "ckpt"
    made = python(["-c", code, str(ckpt)], timeout=120)
    assert made.returncode == 0, made.explain()
    command = f"{sys.executable} -m geode_mpi inspect {ckpt} | head -1"
    result = subprocess.run(
        ["bash", "-c", command], env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert result.stdout == f"checkpoint directory {ckpt}\n"
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.stderr == ""


def test_inspect_of_a_missing_directory_fails_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nodir")
    result = python(["-m", "geode_mpi", "inspect", missing], timeout=60)
    assert result.returncode == 2, result.explain()
    assert f"checkpoint directory {missing!r} does not exist" in result.stderr


def test_info_without_a_loadable_mpi_library_names_the_fix(tmp_path: Path) -> None:
    missing = str(tmp_path / "libmpi.so.12")
    result = python(["-m", "geode_mpi", "--info"], timeout=60, env=clean_env(MPI4PY_LIBMPI=missing))
    assert result.returncode == 1, result.explain()
    assert "MPI library: none could be loaded" in result.stdout
    assert missing in result.stderr and "pip install geode_mpi[mpich]" in result.stderr
    assert "--no-binary=mpi4py" in result.stderr  # mpi4py built on the site's MPI


WAITING = """\
import sys
import time
from geode_mpi import Geode

with Geode() as geode:
    print("ready", flush=True)
    if geode.rank == 0:
        time.sleep(60)
    else:
        geode.receive(timeout=60)
"""


def _interrupt(args: list[str], ready: int) -> tuple[int, str, str]:
    """Start ``args`` in a session of its own, wait for ``ready`` lines "ready", then send
    SIGINT to the whole session, as Ctrl-C in a terminal does."""
    proc = subprocess.Popen(
        args, cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        said = ""
        while said.count("ready") < ready:  # the ranks' lines may come through interleaved
            line = proc.stdout.readline()
            assert line, f"the job ended before it was ready: {said!r}"
            said += line
        time.sleep(0.5)  # into the waits (there is no message to wait for: a signal is sent)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out, err


def test_ctrl_c_in_the_embedded_world_prints_one_line(tmp_path: Path) -> None:
    job = _job(tmp_path, WAITING)
    status, _, err = _interrupt([sys.executable, "-m", "geode_mpi", job], 1)
    assert status == 130, err
    assert err == f"[rank 0/1 node0] geode_mpi: interrupted (Ctrl-C) in {job}:8, ending the job " \
        "with status 130\n"  # fmt: skip


AWAITING = """\
import asyncio
from geode_mpi import Geode

with Geode() as geode:
    async def main():
        print("ready", flush=True)
        await geode.areceive(timeout=60)
    asyncio.run(main())
"""


def test_ctrl_c_in_an_asyncio_job_names_the_await(tmp_path: Path) -> None:
    """It named asyncio's runners.py, where asyncio.run raises the interrupt anew."""
    job = _job(tmp_path, AWAITING)
    status, _, err = _interrupt([sys.executable, "-m", "geode_mpi", job], 1)
    assert status == 130, err
    assert err == f"[rank 0/1 node0] geode_mpi: interrupted (Ctrl-C) in {job}:7, ending the job " \
        "with status 130\n"  # fmt: skip


@pytest.mark.mpi
def test_ctrl_c_at_2_ranks_prints_one_line_for_the_job(tmp_path: Path) -> None:
    job = _job(tmp_path, WAITING)
    status, _, err = _interrupt([mpiexec(), "-n", "2", sys.executable, "-m", "geode_mpi", job], 2)
    assert status == 130, err
    ours = [line for line in err.splitlines() if not line.startswith("[mpiexec@")]
    assert ours == [
        f"[rank 0/2 node0] geode_mpi: interrupted (Ctrl-C) in {job}:8, ending the job with "
        "status 130"
    ], err


# Modules a job that neither checkpoints nor uses arrays must not load through the runner
# (issue 17: start-up): numpy and h5py (issue 15), and what only the runner's options need.
NOT_AT_START = ("numpy", "h5py.h5", "h5py._conv", "argparse", "shutil")
LOADED = f"import sys; print(sorted(n for n in {NOT_AT_START!r} if n in sys.modules))"


def test_a_plain_job_loads_no_heavy_module_through_the_runner(tmp_path: Path) -> None:
    """``python -m geode_mpi job.py args``: a message sent and received, then the check."""
    job = tmp_path / "job.py"
    job.write_text(
        "import sys\nfrom geode_mpi import Geode, Message\n"
        "with Geode(nodes=['a', 'b']) as geode:\n"
        "    geode.send(Message(sys.argv[1:]), 'a', 'b')\n"
        "    print(geode.receive('b', timeout=30).data)\n" + LOADED + "\n"
    )
    result = python(["-m", "geode_mpi", str(job), "--stats", "x"], env=clean_env(), timeout=120)
    assert result.returncode == 0, result.explain()
    assert result.stdout.splitlines() == ["['--stats', 'x']", "[]"], result.explain()


def test_the_check_of_heavy_modules_sees_them() -> None:
    """The same check after an option (argparse parses it) and with numpy imported."""
    code = f"import numpy; {LOADED}"
    result = python(["-m", "geode_mpi", "--stats", "-c", code], env=clean_env(), timeout=120)
    assert result.returncode == 0, result.explain()
    assert result.stdout.splitlines()[0] == "['argparse', 'numpy', 'shutil']", result.explain()


def test_a_fatal_signal_prints_where_the_job_was(tmp_path: Path) -> None:
    """A SIGBUS (a shared page that /dev/shm had no room for) or SIGSEGV ended a rank with the
    launcher's one line ("Bus error (signal 7)"): the runner now prints each thread's stack."""
    job = tmp_path / "job.py"
    job.write_text("import os, signal\n\nos.kill(os.getpid(), signal.SIGBUS)\n")
    result = python(["-m", "geode_mpi", str(job)], env=clean_env(), timeout=60)
    assert result.returncode == -signal.SIGBUS, result.explain()
    assert "Fatal Python error: Bus error" in result.stderr, result.explain()
    assert f'File "{job}", line 3 in <module>' in result.stderr, result.explain()


def test_run_works_when_sys_stderr_has_no_file_descriptor() -> None:
    """A notebook or a capturing harness replaces sys.stderr: run() raised
    UnsupportedOperation from faulthandler.enable; the fatal-signal report goes to the
    process's own stderr then."""
    code = (
        "import faulthandler, io, sys\n"
        "from geode_mpi.runner.run import run\n"
        "sys.stderr = io.StringIO()\n"
        "status = run(\"print('job ran')\", [], kind='code')\n"
        "print('status', status, faulthandler.is_enabled())\n"
    )
    result = python(["-c", code], timeout=120, env=clean_env())
    assert result.stdout.splitlines() == ["job ran", "status 0 True"], result.stderr
