"""`hotpath.py --steps` (benchmarks/steps.py) runs to its table: every row's messages are taken,
so no later row waits on a queue it left full (it hung at the second repeat once runs and the
direct take came in)."""

from __future__ import annotations

import pytest
from mpirun import ROOT, mpirun

pytestmark = pytest.mark.mpi


def test_the_per_step_table_runs_through_its_repeats() -> None:
    args = [str(ROOT / "benchmarks" / "hotpath.py"), "--steps", "--messages", "20"]
    result = mpirun(2, [*args, "--repeats", "24"], timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.explain()
    assert "best and median of 3" in result.stdout, result.stdout
    for row in ("Engine.take_arrival", "raw recv of the dict", "SendPath.plain"):
        assert row in result.stdout, result.stdout
