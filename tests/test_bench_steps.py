"""benchmarks/hotpath.py's smoke tests (``--quick``): `hotpath.py --steps` (benchmarks/steps.py)
runs to its table, every row's messages taken, so no later row waits on a queue it left full (it
hung at the second repeat once runs and the direct take came in); the in-process mode too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpirun import ROOT, mpirun, python


@pytest.mark.mpi
def test_the_per_step_table_runs_through_its_repeats(tmp_path: Path) -> None:
    out = tmp_path / "steps.json"
    args = [str(ROOT / "benchmarks" / "hotpath.py"), "--steps", "--quick", "--json", str(out)]
    result = mpirun(2, args, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.explain()
    assert "200 messages, best and median of 3" in result.stdout, result.stdout
    rows = ("Engine.take_arrival", "raw recv of the dict", "SendPath.plain")
    for row in rows:
        assert row in result.stdout, result.stdout
    found = json.loads(out.read_text())["results"]
    assert all(any(row in name for name in found) for row in rows), found


def test_the_in_process_hot_path_runs_quick(tmp_path: Path) -> None:
    out = tmp_path / "hotpath.json"
    args = [str(ROOT / "benchmarks" / "hotpath.py"), "--quick", "--json", str(out)]
    result = python(args, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.explain()
    found = json.loads(out.read_text())["results"]
    assert sorted(found) == ["isend+receive", "send+receive"], found
    assert all(0 < row["best_us"] <= row["median_us"] for row in found.values()), found
