"""benchmarks/receive_timeout.py's smoke test (``--quick``): its rows, its two target lines,
and its JSON file (the exit status says whether the targets held: 1 is a noisy machine's
right, so only the output is checked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpirun import ROOT, mpirun

METHODS = ("rate raw", "trip raw", "rate receive()", "trip receive()")
METHODS += ("rate receive(timeout)", "trip receive(timeout)")


@pytest.mark.mpi
def test_both_receives_are_timed_beside_raw(tmp_path: Path) -> None:
    out = tmp_path / "receive_timeout.json"
    script = str(ROOT / "benchmarks" / "receive_timeout.py")
    result = mpirun(
        2, [script, "--quick", "--timeout", "5", "--json", str(out)], timeout=120, cwd=ROOT
    )
    assert result.returncode in (0, 1), result.explain()
    for kind in ("rate", "trip"):
        assert f"{kind} with timeout=5 >= 0.8 x without:" in result.stdout, result.explain()
    found = json.loads(out.read_text())
    assert tuple(found["times"]) == METHODS
    assert all(len(values) == 2 and min(values) > 0 for values in found["times"].values())
    assert found["ratios"]["rate raw / raw"] == 1.0


@pytest.mark.mpi
def test_it_refuses_other_rank_counts() -> None:
    script = str(ROOT / "benchmarks" / "receive_timeout.py")
    result = mpirun(3, [script, "--quick"], timeout=60, cwd=ROOT)
    assert result.returncode == 2, result.explain()
