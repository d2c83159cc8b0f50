"""Issue 15's evidence: the smoke at scale (tests/scripts/smoke.py), benchmarks/scale.py.

.ci/run launches the smoke at 64 ranks; here it runs in one process and at 4 ranks, and it must
fail (non-zero, naming the part) when any one part fails. scale.py runs in --quick mode at
2, 3 and 4 ranks, so that every number, fit, table and the plot it writes are checked.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from mpirun import ROOT, mpirun, python, run

SMOKE = "tests/scripts/smoke.py"
PARTS = ("hello", "all-to-all", "topic", "work queue", "checkpoint", "restart")
SMOKE_LINE = re.compile(
    r"smoke OK: (?P<nodes>\d+) nodes on (?P<ranks>\d+) rank\(s\): hello \S+ s, all-to-all \S+ s, "
    r"topic \S+ s, work queue \S+ s, checkpoint \S+ s, restart \S+ s; total \S+ s"
)
PNG = b"\x89PNG\r\n\x1a\n"


def smoke_line(stdout: str) -> re.Match[str]:
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    match = SMOKE_LINE.fullmatch(lines[0])
    assert match is not None, stdout
    return match


def test_smoke_in_one_process(tmp_path: Path) -> None:
    result = python([SMOKE, "--dir", str(tmp_path / "ck")], timeout=120)
    assert result.returncode == 0, result.explain()
    match = smoke_line(result.stdout)
    assert (match["nodes"], match["ranks"]) == ("4", "1")


@pytest.mark.mpi
def test_smoke_at_4_ranks(tmp_path: Path) -> None:
    result = mpirun(4, ["-m", "geode_mpi", SMOKE, "--dir", str(tmp_path / "ck")], timeout=180)
    assert result.returncode == 0, result.explain()
    match = smoke_line(result.stdout)
    assert (match["nodes"], match["ranks"]) == ("4", "4")
    assert list((tmp_path / "ck").iterdir()), "the checkpoint directory is empty"


@pytest.mark.mpi
@pytest.mark.parametrize("part", PARTS)
def test_smoke_fails_when_one_part_fails(tmp_path: Path, part: str) -> None:
    args = ["-m", "geode_mpi", SMOKE, "--dir", str(tmp_path / "ck"), "--fail", part]
    result = mpirun(2, args, timeout=180)
    assert result.returncode != 0 and not result.timed_out, result.explain()
    assert "smoke OK" not in result.stdout, result.explain()
    assert f"smoke: {part} failed: failing on purpose" in result.stderr, result.explain()


# -- benchmarks/scale.py -----------------------------------------------------------------------


@pytest.fixture
def scale_report(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # they import each other by name
    return importlib.import_module("scale_report")


@pytest.mark.parametrize(
    ("model", "times"),
    [("log2 P", lambda p: 0.002 + 0.003 * np.log2(p)), ("P", lambda p: 0.002 + 0.003 * p)],
)
def test_scale_fit_finds_how_a_time_grows(
    scale_report: ModuleType, model: str, times: object
) -> None:
    ranks = [2, 4, 8, 16, 32, 64]
    fitted = scale_report.fit(ranks, [times(p) for p in ranks])  # type: ignore[operator]
    assert fitted["best"] == model
    best = fitted["models"][model]
    assert best["a_s"] == pytest.approx(0.002) and best["b_s"] == pytest.approx(0.003)
    assert (
        best["rel_rms"]
        < 1e-9
        < min(m["rel_rms"] for m in fitted["models"].values() if m is not best)
    )


def test_scale_fit_needs_three_rank_counts(scale_report: ModuleType) -> None:
    assert scale_report.fit([2, 4], [0.1, 0.2]) == {"best": None, "models": {}}


@pytest.mark.mpi
@pytest.mark.slow
def test_scale_quick_measures_fits_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    command = [sys.executable, "benchmarks/scale.py", "--quick", "--ranks", "2,3,4"]
    result = run([*command, "--other-ranks", "--grow-to", "4", "--json", str(out)], timeout=600)
    assert result.returncode == 0, result.explain()
    summary = json.loads(out.read_text())["summary"]
    assert not summary["failed"]
    for op, record in summary["ops"].items():
        assert [row["ranks"] for row in record["rows"]] == [2, 3, 4], op
        assert all(row["geode_s"] > 0 and row["raw_s"] > 0 for row in record["rows"]), op
        assert {fit["best"] for fit in record["fits"].values()} <= {"log2 P", "P"}, op
    for row in summary["ops"]["checkpoint"]["rows"]:  # beside both baselines
        assert row["durable_s"] > 0 and row["durable_ratio"] > 0, row
    assert "checkpoint: geode_mpi beside raw (" in result.stdout, result.explain()
    assert "within 2x of: " in result.stdout, result.explain()
    jobs = ("objects bare", "objects raw", "objects geode", "arrays raw", "arrays geode")
    for row in summary["memory"]:  # each job's peak, the largest rank's (scale_memory.py)
        peak = {name: row[name]["peak"]["max"] for name in jobs}
        assert 0 < peak["objects bare"] <= peak["objects raw"] < peak["objects geode"], row
        assert peak["objects raw"] < peak["arrays raw"] < peak["arrays geode"], row
    restart = summary["other_restarts"]["4"]  # of the 4-rank checkpoint on 2 ranks
    assert restart["ranks"] == 2 and (restart["supported"] or "rank" in restart["error"])
    (grown,) = summary["grown_restarts"]  # of the 2-rank checkpoint on 4 ranks, checked there
    assert (grown["from"], grown["ranks"]) == (2, 4), grown
    assert all(grown[f"{m}_s"] > 0 for m in ("restart", "open", "raw")), grown
    assert "Restart on twice the ranks" in result.stdout, result.explain()
    assert out.with_suffix(".png").read_bytes().startswith(PNG)
    for title in ("geode_mpi, ms", "raw mpi4py/h5py, ms", "Growth fits", "Peak RSS per rank"):
        assert title in result.stdout, result.explain()
