"""benchmarks/alltoall.py's smoke test (``--quick``): every method timed at every size, each
array received checked (a wrong one exits non-zero), the ratios and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpirun import ROOT, mpirun

METHODS = ("raw Isend/Irecv", "raw isend/irecv", "geode", "geode ack")


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_every_method_is_timed_beside_raw(tmp_path: Path, ranks: int) -> None:
    out = tmp_path / "alltoall.json"
    script = str(ROOT / "benchmarks" / "alltoall.py")
    args = [script, "--quick", "--sizes", "1Ki,64Ki", "--repeats", "2", "--json", str(out)]
    result = mpirun(ranks, args, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.explain()
    assert f"all-to-all, {ranks} ranks" in result.stdout, result.explain()
    found = json.loads(out.read_text())
    assert [row["size"] for row in found["arrays"]] == [1024, 65536]
    for row in found["arrays"]:
        assert tuple(row["repeats_us"]) == METHODS
        assert all(len(times) == 2 and min(times) > 0 for times in row["repeats_us"].values())
        assert row["ratios"]["geode / raw Isend/Irecv"] > 0
    assert found["environment"]["ranks"] == ranks
