"""A nearly full /dev/shm: MPI's shared segment is a sparse file there, so a copy of a large
topic message into pages the file system has no room for killed the publisher with SIGBUS (no
traceback; its subscribers waited). The job runs here in a private mount namespace whose
/dev/shm is a 64 MiB tmpfs (root and unshare(1) needed): never the machine's own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mpirun import clean_env, mpiexec, run

JOB = """
import warnings
import numpy as np
from geode_mpi import Geode

warnings.simplefilter("always")
with Geode() as g:
    topic = g.topic("big", publishers=g.nodes[:1], subscribers=g.nodes[1:])
    for k in range(2):  # 100 MiB each: more than the whole of /dev/shm
        if g.rank == 0:
            topic.publish(np.arange(100 * 2**17, dtype=np.float64) + k).wait(timeout=60)
        else:
            data = g.receive(timeout=60).data
            right = np.array_equal(data, np.arange(100 * 2**17, dtype=np.float64) + k)
            print(f"message {k}: {data.nbytes} bytes, right {right}", flush=True)
"""

# /dev/shm full before the first large message: the segment exists (topic() made it) but
# not even this rank's table of flags at the head of its part has a page (SIGBUS at take()).
FULL_FIRST = """
import warnings
import numpy as np
from geode_mpi import Geode

warnings.simplefilter("always")
with Geode() as g:
    topic = g.topic("big", publishers=g.nodes[:1], subscribers=g.nodes[1:])
    if g.rank == 0:
        with open("/dev/shm/filler", "wb") as f:
            try:
                while True:
                    f.write(bytes(2**20))
                    f.flush()
            except OSError:
                pass
        a = {array}
        topic.publish(a).wait(timeout=60)
    else:
        data = g.receive(timeout=60).data
        right = np.array_equal(data, np.arange(2**18, dtype=np.float64))
        print(f"got {{data.nbytes}} bytes, right {{right}}", flush=True)
"""

SMALL_SHM = 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"'


def private_shm() -> list[str]:
    """The command prefix that runs a command with its own small /dev/shm, or a skip."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs Linux, root and unshare(1) for a private /dev/shm")
    prefix = ["unshare", "-m", "sh", "-c", SMALL_SHM, "sh"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no private tmpfs here: {probe.stderr.decode(errors='replace')!r}")
    return prefix


def test_a_full_dev_shm_sends_copies_with_a_warning_not_sigbus(tmp_path: Path) -> None:
    prefix = private_shm()
    job = tmp_path / "job.py"
    job.write_text(JOB)
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "geode_mpi", str(job)]
    result = run([*prefix, *command], timeout=120, env=clean_env())
    assert result.returncode == 0, result.stderr[-2000:]
    said = [f"message {k}: 104857600 bytes, right True" for k in (0, 1)]
    assert result.stdout.splitlines() == said, result.stderr[-2000:]
    warned = [line for line in result.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warned) == 1, result.stderr
    assert "no room in /dev/shm for 104857600 bytes of a large topic message" in warned[0]
    assert warned[0].startswith(f"{job}:"), warned[0]  # the job's line, not geode_mpi's


@pytest.mark.parametrize(
    "array,said",
    [
        ("np.arange(2**18, dtype=np.float64)", ["a large topic message"]),
        (
            "g.zero_copy_array(2**18); a[:] = np.arange(2**18)",
            ["zero_copy_array: /dev/shm has no room", "a large topic message"],
        ),
    ],
    ids=["publish", "zero_copy_array"],
)
def test_dev_shm_full_before_the_first_large_message_warns_at_the_users_line(
    tmp_path: Path, array: str, said: list[str]
) -> None:
    prefix = private_shm()
    job = tmp_path / "job.py"
    job.write_text(FULL_FIRST.format(array=array))
    command = [mpiexec(), "-n", "2", sys.executable, "-m", "geode_mpi", str(job)]
    result = run([*prefix, *command], timeout=120, env=clean_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["got 2097152 bytes, right True"], result.stderr[-2000:]
    warned = [line for line in result.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warned) == len(said), result.stderr
    for line, words in zip(warned, said, strict=True):
        assert words in line, line
        assert line.startswith(f"{job}:"), line  # the job's line, not geode_mpi's
