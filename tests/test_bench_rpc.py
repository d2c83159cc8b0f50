"""benchmarks/rpc.py's smoke test: every form's row beside raw, each answer checked."""

from __future__ import annotations

import pytest
from mpirun import ROOT, mpirun


@pytest.mark.mpi
def test_every_request_form_is_timed_beside_raw() -> None:
    script = str(ROOT / "benchmarks" / "rpc.py")
    result = mpirun(2, [script, "--iters", "20", "--repeats", "1"], timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.explain()
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert [row[0] for row in rows] == ["raw", "pingpong", "receive", "handler"]
    assert rows[0][2] == "1.00x" and all(float(row[1]) > 0 for row in rows)
