"""benchmarks/peers.py: a quick run of the peers every venv has, and peers that cannot run.

Real launches (mpiexec for raw mpi4py, geode_mpi and mpi4py.futures, local processes for
multiprocessing), each with peers.py's own timeout; Ray is made "not installed" by pointing
peers.py at a module that does not exist, whether or not the venv has Ray.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# multiprocessing's launch once hung in Pool.terminate(): its workers inherited the root's
# SIGTERM handler and one lived through terminate()'s SIGTERM (peers_local.default_sigterm).
ALWAYS = ("mpi4py", "geode", "mpi4py.futures", "multiprocessing")
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = [pytest.mark.mpi, pytest.mark.slow]


@pytest.fixture
def peers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmarks import each other by name
    module = importlib.import_module("peers")
    monkeypatch.setitem(module.MODULE, "ray", "geode_peers_test_no_such_module")
    return module


@pytest.mark.timeout(240)
def test_quick_run_reports_every_workload_and_a_missing_peer(
    peers: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "peers.json", tmp_path / "peers.png"
    argv = ["--quick", "--peers", "geode,futures,mp,ray", "--timeout", "60"]

    assert peers.main([*argv, "--json", str(out), "--plot", str(png)]) == 0

    record = json.loads(out.read_text())
    assert record["status"] == dict.fromkeys(ALWAYS, "ok") | {"ray": "not installed"}
    assert list(record["workloads"]) == list(peers.WORKLOADS)
    for name, workload in record["workloads"].items():
        assert set(workload["peers"]) == set(ALWAYS), name
        for peer, figures in workload["peers"].items():
            # raw mpi4py launches beside each of the others
            rounds = len(ALWAYS) - 1 if peer == "mpi4py" else 1
            assert len(figures["rounds"]) == rounds, (name, peer)
            assert figures["median"] > 0 and figures["median_speed_vs_raw"] > 0, (name, peer)
        assert workload["peers"]["mpi4py"]["median_speed_vs_raw"] == 1.0
    farm = record["workloads"]["farm"]["peers"]
    assert all(entry["makespan_over_ideal"] >= 0.9 for entry in farm.values()), farm
    assert record["environment"]["cores"] and record["settings"]["quick"] is True
    printed = capsys.readouterr().out
    assert "ray: not installed" in printed and "startup" in printed
    assert png.read_bytes().startswith(PNG)

    # the table and plot again from the file, nothing run
    assert peers.main(["--report", str(out), "--plot", str(png), "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert "ray: not installed" in printed
    header = "| workload | mpi4py (raw) | geode | mpi4py.futures | multiprocessing | ray |"
    assert header in printed
    assert "| `startup` |" in printed and "| not installed |\n" in printed


@pytest.mark.timeout(120)
def test_a_launch_that_times_out_is_reported_not_raised(
    peers: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "peers.json"
    argv = ["--quick", "--peers", "mp", "--workloads", "startup", "--timeout", "0.01"]

    assert peers.main([*argv, "--json", str(out)]) == 1

    record = json.loads(out.read_text())
    assert record["status"] == dict.fromkeys(
        ("mpi4py", "multiprocessing"), "timed out after 0.01 s"
    )
    assert record["workloads"]["startup"]["peers"]["multiprocessing"]["median"] is None
    assert "multiprocessing: timed out after 0.01 s" in capsys.readouterr().out
