"""benchmarks/patterns.py runs and writes what docs/topics.md and benchmarks/README.md quote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpirun import mpirun

pytestmark = pytest.mark.mpi


def test_patterns_benchmark_reports_every_step_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "patterns.json"
    args = ["benchmarks/patterns.py", "--topics", "3", "--repeat", "2", "--json", str(out)]
    result = mpirun(2, args, timeout=120)
    assert result.returncode == 0 and not result.timed_out, result.explain()
    assert "one by one / pattern" in result.stdout, result.explain()
    record = json.loads(out.read_text())
    assert (record["ranks"], record["topics"]) == (2, 3)
    assert {step: len(times) for step, times in record["times_s"].items()} == {
        "pattern": 2,
        "one by one": 2,
        "allreduce": 2,
        "topics matched": 2,
        "topics unmatched": 2,
    }
    assert all(ratio > 0 for ratio in record["ratios"].values())
