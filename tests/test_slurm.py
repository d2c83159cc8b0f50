"""The SLURM batch scripts on a real one-node cluster: .ci/slurm, for developers who ask for it.

CI runs .ci/slurm directly after pytest. It installs SLURM with apt-get when missing and needs
root, so this test only runs with GEODE_SLURM_TESTS=1 (about two and a half minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "slurm"
TIMEOUT = 900  # the script bounds every wait itself; this is the backstop


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.skipif(
    os.environ.get("GEODE_SLURM_TESTS") != "1",
    reason="starts a real SLURM cluster (root, apt-get, ~2.5 min): set GEODE_SLURM_TESTS=1",
)
def test_batch_scripts_on_a_real_slurm_cluster() -> None:
    env = dict(os.environ)
    # The script submits jobs with the `python` on PATH: make it this one.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.Popen(
        [str(SCRIPT)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the script's trap stops the daemons it started
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f".ci/slurm still running after {TIMEOUT} s\n{out}\n--- stderr ---\n{err}")
    assert proc.returncode == 0, f"{out}\n--- stderr ---\n{err}"
    assert "all SLURM checks passed" in out
