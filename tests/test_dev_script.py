"""./dev, the README's set-up: it makes the venv and installs on first use, and only then.

A stand-in Python records what ./dev asks of it (``-m venv``, ``-m pip install``, ``-m
pytest``) instead of downloading anything; every other command runs the real interpreter.
.ci/run runs the real thing from nothing (a fresh venv in a temporary directory).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mpirun import ROOT

BASE = """#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
    echo "venv $3" >>"{log}"
    mkdir -p "$3/bin" && cp "{venv_python}" "$3/bin/python" && exit 0
fi
exec "{real}" "$@"
"""

VENV_PYTHON = """#!/bin/sh
if [ "$1" = -m ] && [ "$2" = pip ]; then
    echo "pip $* in $(pwd)" >>"{log}"
    [ -e "{fail}" ] && exit 1
    exit 0
fi
if [ "$1" = -m ] && [ "$2" = pytest ]; then echo "$*" >>"{log}"; exit 0; fi
exec "{real}" "$@"
"""


@pytest.fixture
def dev(tmp_path: Path):  # type: ignore[no-untyped-def]
    log, fail = tmp_path / "log", tmp_path / "fail"
    venv_python = tmp_path / "venv-python"
    venv_python.write_text(VENV_PYTHON.format(log=log, fail=fail, real=sys.executable))
    base = tmp_path / "python3"
    base.write_text(BASE.format(log=log, venv_python=venv_python, real=sys.executable))
    for script in (venv_python, base):
        script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env |= {"GEODE_VENV": str(tmp_path / "venv"), "GEODE_PYTHON": str(base)}

    def run(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        log.unlink(missing_ok=True)
        result = subprocess.run(
            [str(ROOT / "dev"), *args], env=env, capture_output=True, text=True, timeout=60
        )
        return result, log.read_text().splitlines() if log.exists() else []

    run.venv = tmp_path / "venv"  # type: ignore[attr-defined]
    run.fail = fail  # type: ignore[attr-defined]
    return run


def test_first_use_makes_the_venv_and_installs_then_runs(dev) -> None:  # type: ignore[no-untyped-def]
    result, calls = dev("python", "-c", "import sys; print('job ran', sys.argv)")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "job ran ['-c']\n"  # stdout is the command's alone
    assert calls == [f"venv {dev.venv}", f"pip -m pip install -e .[test] in {ROOT}"]
    assert "installing geode_mpi and the test tools" in result.stderr


def test_a_second_run_does_not_install_again(dev) -> None:  # type: ignore[no-untyped-def]
    dev("setup")
    result, calls = dev("python", "-c", "print('again')")
    assert (result.returncode, result.stdout, calls) == (0, "again\n", [])
    assert result.stderr == ""


def test_a_changed_pyproject_installs_again(dev) -> None:  # type: ignore[no-untyped-def]
    dev("setup")
    stamp = dev.venv / ".geode-dev-stamp"
    stamp.write_text(stamp.read_text().replace(" ", " 1", 1))  # as if pyproject.toml changed
    result, calls = dev("setup")
    assert result.returncode == 0 and calls == [f"pip -m pip install -e .[test] in {ROOT}"]


def test_a_failed_install_is_retried_next_time(dev) -> None:  # type: ignore[no-untyped-def]
    dev.fail.touch()
    result, _ = dev("python", "-c", "print('never')")
    assert result.returncode != 0 and "never" not in result.stdout
    dev.fail.unlink()
    result, calls = dev("python", "-c", "print('now')")
    assert result.stdout == "now\n" and calls == [f"pip -m pip install -e .[test] in {ROOT}"]


def test_test_runs_pytest_with_its_arguments_in_the_venv(dev) -> None:  # type: ignore[no-untyped-def]
    dev("setup")
    result, calls = dev("test", "-x", "tests/unit")
    assert result.returncode == 0 and calls == ["-m pytest -x tests/unit"]
    path, _ = dev("sh", "-c", 'echo "$PATH"; echo "$VIRTUAL_ENV"')
    assert path.stdout.split(":")[0] == str(dev.venv / "bin")
    assert path.stdout.splitlines()[-1] == str(dev.venv)


def test_no_command_prints_the_usage(dev) -> None:  # type: ignore[no-untyped-def]
    result, calls = dev()
    assert result.returncode == 2 and "./dev test [pytest arguments]" in result.stdout
    assert calls == []
