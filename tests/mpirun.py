"""Launch mpiexec from tests: every launch has a timeout, and a hang kills the whole job."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Variables a launcher sets: removed so a test subprocess never believes it is a rank.
LAUNCH_VARIABLES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDI_", "HYDRA_", "GEODE_TRANSPORT")


@dataclass
class Result:
    """What a launch produced."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool

    def explain(self) -> str:
        state = "TIMED OUT" if self.timed_out else f"exit {self.returncode}"
        return (
            f"{state} after {self.seconds:.1f} s\n--- stdout ---\n{self.stdout[-20000:]}\n"
            f"--- stderr ---\n{self.stderr[-20000:]}"
        )


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus launcher variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARIABLES)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def load_slack() -> float:
    """How much longer than on a quiet machine a launch may take now: 1 until the load
    average passes two runnable processes per core (a 4-rank test on 2 cores alone makes
    about 4), then the load over that, at most 4. A hang still fails, only later; a time a
    test promises ("ends the job within 10 s") is the quiet machine's, times this."""
    cores = os.cpu_count() or 1
    return min(4.0, max(1.0, os.getloadavg()[0] / (2 * cores)))


def mpiexec() -> str:
    """GEODE_TEST_MPIEXEC when set (.ci/other-mpi points it at another MPI's launcher), else
    the mpiexec beside this Python (the venv's mpich wheel), else the one on PATH."""
    chosen = os.environ.get("GEODE_TEST_MPIEXEC")
    if chosen:
        return chosen
    local = Path(sys.executable).parent / "mpiexec"
    found = str(local) if local.exists() else shutil.which("mpiexec")
    if found is None:
        raise RuntimeError("mpiexec not found: install the test extra (pip install -e '.[test]')")
    return found


def run(
    args: list[str], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Result:
    """Run a command in its own process group; kill the group at the timeout (scaled by
    `load_slack`: CI at a load of 20 on 2 cores took 4-rank launches past fixed limits)."""
    timeout *= load_slack()
    start = time.monotonic()
    proc = subprocess.Popen(
        args,
        cwd=cwd or ROOT,
        env=env if env is not None else clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    except BaseException:  # pytest-timeout's signal, ^C: leave no job behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return Result(proc.returncode, out, err, time.monotonic() - start, timed_out)


def mpirun(n: int, args: list[str], *, timeout: float = 60, **kwargs: object) -> Result:
    """``mpiexec -n N python <args>`` with a timeout."""
    return run([mpiexec(), "-n", str(n), sys.executable, *args], timeout=timeout, **kwargs)  # type: ignore[arg-type]


def python(args: list[str], *, timeout: float = 60, **kwargs: object) -> Result:
    """``python <args>`` without a launcher (the embedded world), with a timeout."""
    return run([sys.executable, *args], timeout=timeout, **kwargs)  # type: ignore[arg-type]
