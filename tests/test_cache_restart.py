"""Shared arrays across a checkpoint and a restart, on the same or another number of ranks:
the restored queues hold the real arrays, and every cache starts empty."""

from __future__ import annotations

from pathlib import Path

import pytest
from mpirun import mpirun, python

pytestmark = pytest.mark.mpi

SCRIPT = ["-m", "geode_mpi", "tests/scripts/ckpt_cache.py"]


@pytest.mark.parametrize(("saved", "restarted"), [(1, 1), (2, 2), (4, 2), (2, 1)])
def test_a_restart_restores_real_arrays_and_empty_caches(
    tmp_path: Path, saved: int, restarted: int
) -> None:
    directory = str(tmp_path / "checkpoints")
    first = mpirun(saved, [*SCRIPT, "save", directory], timeout=120)
    assert first.returncode == 0, first.explain()
    assert f"saved on {saved} ranks" in first.stdout, first.explain()
    args = [*SCRIPT, "load", directory]  # one rank: the embedded world, without a launcher
    second = python(args, timeout=120) if restarted == 1 else mpirun(restarted, args, timeout=120)
    assert second.returncode == 0, second.explain()
    assert f"restored on {restarted} ranks" in second.stdout, second.explain()
