"""Every ```bash block in README.md and docs/*.md runs, as a user would type it.

A block runs with ``bash -euo pipefail`` in a fresh directory holding the files the docs refer
to (``job.py``, ``mypackage/job.py``, ``package/module.py``, the checkout's ``jobs/`` and
``benchmarks/``, and a ``./dev`` that runs its command as it is: the real one would run it
with this virtual environment's bin/ first on PATH, as the block already does), with this
virtual environment's ``python`` and ``mpiexec`` first on PATH, and a timeout. The first word
after ``bash`` says when a block cannot run that way, and what stands in for it:

- ``ci``: what .ci/run itself does (a fresh venv, the install, the test suite): its ``./dev``
  lines must be .ci/run's own, its ``pip install`` and ``pytest`` lines .ci/run's or those
  ./dev runs, its venv lines are skipped, the rest runs (never the test suite: no recursion);
- ``slurm``: needs a SLURM cluster: every batch script it names must exist, and .ci/slurm
  submits each of them on a real one-node cluster;
- ``cluster``: a site's module system and MPI (not on this machine): not run;
- ``sketch``: has placeholders (a process id): not run.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from mpirun import ROOT, clean_env, mpiexec
from test_docs import BLOCKS, Block

KINDS = {"ci", "slurm", "cluster", "sketch"}
SHELL_BLOCKS = [block for block in BLOCKS if block.info[:1] == ("bash",)]
TIMEOUT = 240

JOB = '''\
"""A small SPMD job standing in for the docs' job.py: a ring, any rank count, any arguments."""
import sys

from geode_mpi import Geode

with Geode() as geode:
    right = (geode.rank + 1) % geode.size
    geode.send({"args": sys.argv[1:], "from": geode.node}, dest=right)
    geode.receive(timeout=60)
    if geode.rank == 0:
        print("job done on", geode.size, "rank(s)")
'''


# Stands in for ./dev: runs the command as it is (the block's PATH has the venv's bin/ first).
# Never the test suite: a docs block that ran it would run this test again.
DEV = """#!/bin/sh
if [ "$1" = test ]; then echo "./dev test must not run inside the test suite" >&2; exit 99; fi
exec "$@"
"""


def kind(block: Block) -> str | None:
    return block.info[1] if len(block.info) > 1 else None


def commands(block: Block) -> list[str]:
    """The block's command lines, without comments and blank lines."""
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.code.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def workspace(tmp_path: Path) -> Path:
    (tmp_path / "job.py").write_text(JOB)
    for package, module in (("mypackage", "job"), ("package", "module")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / f"{module}.py").write_text(JOB)
    (tmp_path / "jobs").symlink_to(ROOT / "jobs")
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    dev = tmp_path / "dev"
    dev.write_text(DEV)
    dev.chmod(0o755)
    return tmp_path


def shell_env() -> dict[str, str]:
    env = clean_env()
    env["PATH"] = f"{Path(mpiexec()).parent}:{env.get('PATH', '')}"
    return env


def run_shell(script: str, where: str, cwd: Path) -> None:
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=shell_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{where}: still running after {TIMEOUT} s\n{exc.stdout}\n{exc.stderr}")
    assert result.returncode == 0, (
        f"{where} failed with status {result.returncode}\n--- script ---\n{script}\n"
        f"--- stdout ---\n{result.stdout[-5000:]}\n--- stderr ---\n{result.stderr[-5000:]}"
    )


def test_every_shell_block_is_run_or_says_why_not() -> None:
    unknown = [(b.where, kind(b)) for b in SHELL_BLOCKS if kind(b) not in KINDS | {None}]
    assert unknown == [], f"bash blocks with an unknown kind (known: {sorted(KINDS)}): {unknown}"
    assert [b for b in SHELL_BLOCKS if kind(b) is None], "no runnable bash block found"


@pytest.mark.mpi
@pytest.mark.parametrize(
    "block",
    [b for b in SHELL_BLOCKS if kind(b) is None],
    ids=[b.where for b in SHELL_BLOCKS if kind(b) is None],
)
def test_shell_block_runs(block: Block, tmp_path: Path) -> None:
    run_shell(block.code, block.where, workspace(tmp_path))


CI_BLOCKS = [b for b in SHELL_BLOCKS if kind(b) == "ci"]


@pytest.mark.parametrize("block", CI_BLOCKS, ids=[b.where for b in CI_BLOCKS])
def test_ci_block_is_what_ci_runs(block: Block, tmp_path: Path) -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    dev = (ROOT / "dev").read_text().replace('"$venv/bin/python"', "python")
    rest = []
    for line in commands(block):
        if line.startswith("./dev "):
            assert line in ci, f"{block.where}: .ci/run does not run {line!r}"
        elif "pip install" in line or "pytest" in line:
            assert line in ci or line in dev, (
                f"{block.where}: neither .ci/run nor ./dev runs {line!r}"
            )
        elif "-m venv" not in line and "/activate" not in line:
            rest.append(line)
    if rest:
        run_shell("\n".join(rest), block.where, workspace(tmp_path))


SLURM_BLOCKS = [b for b in SHELL_BLOCKS if kind(b) == "slurm"]


@pytest.mark.parametrize("block", SLURM_BLOCKS, ids=[b.where for b in SLURM_BLOCKS])
def test_slurm_block_names_scripts_that_ci_submits(block: Block) -> None:
    harness = (ROOT / ".ci" / "slurm").read_text()
    scripts = re.findall(r"(jobs/slurm/[\w.-]+\.sbatch)", block.code)
    for script in scripts:
        assert (ROOT / script).exists(), f"{block.where}: {script} does not exist"
        name = Path(script).name
        assert name in harness, f"{block.where}: .ci/slurm never submits {name}"
