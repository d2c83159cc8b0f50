"""benchmarks/fanout_shapes.py's smoke test (``--quick``) at 4 ranks: every workload runs, each
subscriber checked what it got (the script raises otherwise), and on one node every subscriber
of each topic got read-only views of the shared copy (the strided array too)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mpirun import ROOT, mpirun

from geode_mpi.transport.paths import network_within_host


@pytest.mark.mpi
def test_every_fan_out_shape_arrives_and_is_timed(tmp_path: Path) -> None:
    out = tmp_path / "shapes.json"
    args = [str(ROOT / "benchmarks" / "fanout_shapes.py"), "--quick", "--json", str(out)]
    result = mpirun(4, args, timeout=180, cwd=ROOT)
    assert result.returncode == 0, result.explain()
    records = json.loads(out.read_text())["workloads"]
    names = [record["workload"]["name"] for record in records]
    assert len(names) == 11 and "f8 strided [::2]" in names, names  # (--quick: 2 sizes)
    for record in records:
        assert record["ratio"]["median"] > 0, record
        subscribers = 2 if record["workload"]["topic"] == "subset" else 3
        if not network_within_host(os.environ):  # (there every rank is a node of its own)
            assert record["views"] == subscribers, record
