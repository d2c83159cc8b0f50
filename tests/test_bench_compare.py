"""benchmarks/suite_compare.py: suite runs side by side, from small fake suite.json files."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def compare(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmarks import each other by name
    return importlib.import_module("suite_compare")


def rate_run(unacked: float, result: str) -> dict[str, Any]:
    target = {"benchmark": "rate", "target": "(2) unacked >= 0.5 x raw isend (paired)"}
    return {
        "name": "rate",
        "targets": [{**target, "measured": f"{unacked:.2f} (median)", "result": result}],
        "ratios": {"rate over raw": {"unit": "x", "rows": {"no acks": {"/ isend": unacked}}}},
    }


def fanout_run() -> dict[str, Any]:
    rows = {"1 MiB": {"/ Bcast": 0.7}, "8 B": {"/ Bcast": 4.9, "acks / Bcast": None}}
    return {"name": "fanout", "targets": [], "ratios": {"time": {"unit": "x", "rows": rows}}}


def write_suite(folder: Path, library: str, runs: list[dict[str, Any]]) -> str:
    folder.mkdir()
    suite = {
        "started": "2026-12-05T01:00:00+00:00",
        "environment": {"host": "vm", "cores": 2, "mpi_library": library, "commit": "abc1234"},
        "load_average": {"start": [3.5, 0, 0], "end": [4.25, 0, 0]},
        "runs": runs,
    }
    (folder / "suite.json").write_text(json.dumps(suite))
    return str(folder)


def test_columns_side_by_side_with_a_dash_where_a_run_lacks_a_row(
    compare: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = write_suite(
        tmp_path / "a", "MPICH Version: 5.0.2", [rate_run(0.54, "PASS"), fanout_run()]
    )
    library = "Open MPI v5.0.11, package: Open MPI user@localhost Distribution\0"
    two = write_suite(tmp_path / "b", library, [rate_run(0.41, "FAIL")])
    assert compare.main([f"MPICH wheel={one}", f"Open MPI wheel={two}"]) == 0
    out = capsys.readouterr().out
    assert "- MPICH wheel: 2026-12-05 at 01:00 UTC, vm, 2 cores (MPICH 5.0.2," in out
    assert "load average (1 min) 3.5 at the start and 4.2 at the end" in out
    assert "2 cores (Open MPI v5.0.11, mpi4py ?," in out  # the first line, no NUL
    assert "|  | MPICH wheel | Open MPI wheel |" in out
    # the trailing parenthesis of detail goes, in the target and in the measure
    assert "| rate: (2) unacked >= 0.5 x raw isend | PASS (0.54) | FAIL (0.41) |" in out
    assert "| rate no acks: / isend | 0.54 | 0.41 |" in out
    assert "| fanout 1 MiB: / Bcast | 0.70 | - |" in out
    assert "acks / Bcast" not in out  # a ratio the run could not compute (None) is no row


def test_rows_keeps_only_the_matching_ratio_rows(
    compare: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = write_suite(tmp_path / "a", "MPICH", [rate_run(0.54, "PASS"), fanout_run()])
    assert compare.main([f"x={one}", "--rows", "MiB"]) == 0
    out = capsys.readouterr().out
    assert "| fanout 1 MiB: / Bcast | 0.70 |" in out
    assert "fanout 8 B" not in out and "rate no acks" not in out
    assert "| rate: (2) unacked >= 0.5 x raw isend | PASS (0.54) |" in out  # targets all stay


def test_a_folder_without_a_suite_json_is_refused(
    compare: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        compare.main([f"x={tmp_path}"])
    assert stop.value.code == 2
    assert "expected LABEL=DIR with DIR/suite.json" in capsys.readouterr().err
