"""benchmarks/suite.py: its report from result files, and a benchmark that crashes or hangs.

No real benchmark runs here: the report is made from small fake result files, and the launches
are of tiny fake benchmark scripts (under the real mpiexec, with the suite's real timeouts).
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
MiB = 1 << 20
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def suite(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    pytest.importorskip("matplotlib", reason="the bench extra: pip install -e '.[bench]'")
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmarks import each other by name
    return importlib.import_module("suite")


# -- the report from result files ---------------------------------------------------------------


def methods(times: dict[str, float]) -> dict[str, Any]:
    return {m: {"median_us": t, "repeats_us": [t] * 3} for m, t in times.items()}


def pingpong_size(size: int, us: float) -> dict[str, Any]:
    times = {"raw Send": us, "geode": us * 1.1, "geode kept": us * 1.2, "raw pickle": us * 1.5}
    return {
        "size": size,
        "methods": methods(times),
        "bandwidth_GBps": {method: size / t / 1e3 for method, t in times.items()},
        "geode_over_send_bandwidth": 0.91,
        "geode_kept_over_send_bandwidth": 0.83,
        "geode_over_pickle_latency": 0.73,
    }


def fanout_size(size: int, us: float) -> dict[str, Any]:
    times = {"raw Bcast": us, "geode": us * 1.1, "geode acks": us * 1.2}
    return {
        "size": size,
        "methods": methods(times),
        "geode_over_bcast": 1.1,
        "geode_acks_over_bcast": 1.2,
    }


def checkpoint_size(mib: int) -> dict[str, Any]:
    def phase(geode: float, raw: float) -> dict[str, Any]:
        times = {"geode": geode * mib, "raw h5py": raw * mib, "plain h5py": 0.002 * mib}
        return {"median_s": times, "median_raw_over_geode": raw / geode}

    return {"bytes_per_rank": mib * MiB, "write": phase(0.01, 0.012), "read": phase(0.01, 0.009)}


def fake_results() -> dict[str, dict[str, Any]]:
    """Result files shaped as the benchmarks write them, with only what the report reads."""
    env = {"mpi_library": "MPICH Version:  5.0.2", "mpi4py": "4.1.2", "host": "testhost"}
    env |= {"cores": 2, "ranks": 2, "python": "3.11.7", "numpy": "2.4.6", "geode_mpi": "0.1.0"}
    head = {"started": "2026-11-27T08:00:00+00:00", "settings": {"quick": False}}
    head["environment"] = env
    message = {"target": "(3) a small Message", "result": "PASS", "ratios": {"Message": 2.5}}
    message["worst"] = {"case": "Message", "ratio": 2.5}
    keys = ("no_acks_over_raw", "acks_over_raw", "acks_over_no_acks", "dict_data_over_raw")
    missed = {"target": "(1) the fake target (with detail)", "ratio": 0.42, "result": "FAIL"}
    topic_rates = {"raw bcast": [1.0] * 3, "geode": [0.4, 0.5, 0.45], "geode acks": [0.3, 0.4]}
    sizes = ((8, 2.0), (1024, 3.0), (MiB, 100.0), (4 * MiB, 400.0))
    return {
        "pingpong": head
        | {
            "arrays": [pingpong_size(size, us) for size, us in sizes],
            "small_message": {"geode_over_dict_latency": 2.5},
            "targets": [message],
        },
        "rate": head
        | {
            "ratios": {key: [0.4, 0.5, 0.6] for key in keys},
            "median_ratios": dict(zip(keys, (0.5, 0.45, 0.9, 0.4), strict=True)),
            "targets": [missed],
        },
        "fanout": head
        | {
            "arrays": [fanout_size(size, us * 10) for size, us in sizes],
            "barrier": {"median_us": 20.0},
            "small_messages": {"ratios_to_raw": topic_rates},
        },
        "checkpoint": head
        | {
            "sizes": {f"{n} MiB": checkpoint_size(n) for n in (1, 4, 16)},
            "pipeline": {"median_lost_around_checkpoint": 0.021},
        },
    }


def test_report_draws_the_plots_and_the_summary_from_result_files(
    suite: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, result in fake_results().items():
        (tmp_path / f"{name}.json").write_text(json.dumps(result))

    assert suite.main(["--report", str(tmp_path)]) == 0

    plots = ("pingpong-latency", "pingpong-bandwidth", "fanout", "checkpoint", "rate-ratios")
    for name in plots:
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    summary = (tmp_path / "summary.md").read_text()
    assert "| pingpong | (3) a small Message | 2.50 | PASS |" in summary
    assert "| rate | (1) the fake target (with detail) | 0.42 | **FAIL** |" in summary
    assert "| 1 MiB | 0.91 | 0.83 | 0.73 |" in summary  # pingpong's ratios, per size
    assert "| 16 MiB | 1.20 | 0.90 |" in summary  # checkpoint write and restore
    assert "| pipeline | 2.1% |" in summary
    for name in plots:
        assert f"![{name}.png]({name}.png)" in summary
    figures = (tmp_path / "figures.md").read_text()
    assert "2026-11-27 at 08:00 UTC" in figures and "MPICH 5.0.2" in figures
    assert "| rate | (1) the fake target | 0.42 | **FAIL** |" in figures
    record = json.loads((tmp_path / "suite.json").read_text())
    assert [run["status"] for run in record["runs"]] == ["ok"] * 4
    assert {t["result"] for t in record["targets"]} == {"PASS", "FAIL"}
    assert record["plots"] == [f"{name}.png" for name in plots]
    assert "FAIL  rate" in capsys.readouterr().out


# -- a benchmark that crashes or hangs ------------------------------------------------------------

FAKE = """
import json, os, sys, time
rank = int(os.environ.get("PMI_RANK", "0"))
with open(os.path.join({folder!r}, f"{name}-{{rank}}.pid"), "w") as pids:
    pids.write(str(os.getpid()))
out = sys.argv[sys.argv.index("--json") + 1]
{body}
"""
BODIES = {
    "passes": """
if rank == 0:
    target = {"target": "(1) all is well", "ratio": 1.5, "result": "PASS"}
    json.dump({"benchmark": "passes", "targets": [target]}, open(out, "w"))
""",
    "misses": """
if rank == 0:  # a missed target, said with exit status 1 (as backpressure.py does): no crash
    target = {"target": "(1) fast enough", "ratio": 0.2, "result": "FAIL"}
    json.dump({"benchmark": "misses", "targets": [target]}, open(out, "w"))
sys.exit(1)
""",
    "crashes": """
if rank == 1:
    raise RuntimeError("rank 1 fell over")
""",
    "hangs": """
time.sleep(120)
""",
}


def fake_benchmarks(suite: ModuleType, folder: Path) -> list[Any]:
    benchmarks = []
    for name, body in BODIES.items():
        script = folder / f"{name}.py"
        script.write_text(FAKE.format(folder=str(folder), name=name, body=textwrap.dedent(body)))
        limit = 3.0 if name == "hangs" else 60.0
        benchmarks.append(suite.Benchmark(name, script, 2, timeout=limit, quick_timeout=limit))
    return benchmarks


def running(pid: int) -> bool:
    """True if process ``pid`` exists and is not a zombie (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.mpi
def test_a_crash_or_a_hang_is_reported_and_fails_the_suite(
    suite: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    benchmarks = fake_benchmarks(suite, tmp_path)
    out = tmp_path / "out"

    status = suite.main(["--out", str(out)], benchmarks=benchmarks)

    printed = capsys.readouterr().out
    assert status == 1, printed
    assert "[1/4] passes (2 ranks) ... " in printed
    assert "targets: 1 PASS" in printed
    assert "[2/4] misses (2 ranks) ... " in printed and "targets: 1 FAIL" in printed
    assert "CRASHED (exit status 1; it wrote no crashes.json)" in printed
    assert "rank 1 fell over" in printed  # the end of its output, shown
    assert "TIMED OUT (still running after 3 s: stopped)" in printed
    record = json.loads((out / "suite.json").read_text())
    statuses = {run["name"]: run["status"] for run in record["runs"]}
    assert statuses == {"passes": "ok", "misses": "ok", "crashes": "crashed", "hangs": "timed out"}
    summary = (out / "summary.md").read_text()
    assert "**CRASHED**: exit status 1" in summary and "**TIMED OUT**" in summary
    assert "| misses | (1) fast enough | 0.20 | **FAIL** |" in summary
    for rank in (0, 1):  # the hung ranks were ended with their job
        assert not running(int((tmp_path / f"hangs-{rank}.pid").read_text()))


@pytest.mark.mpi
def test_a_suite_whose_benchmarks_all_ran_exits_0_even_with_a_missed_target(
    suite: ModuleType, tmp_path: Path
) -> None:
    benchmarks = fake_benchmarks(suite, tmp_path)
    only = ["--only", "passes,misses", "--out", str(tmp_path / "out")]
    assert suite.main(only, benchmarks=benchmarks) == 0


@pytest.mark.mpi
def test_mpiexec_and_python_choose_the_mpi_the_benchmarks_run_on(
    suite: ModuleType, tmp_path: Path
) -> None:
    """--mpiexec and --python (another MPI's launcher and venv, docs/mpis.md) are what runs."""
    seen = tmp_path / "seen.txt"
    launcher = tmp_path / "other-mpiexec"
    launcher.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {seen}\nexec {suite.mpiexec()} "$@"\n')
    launcher.chmod(0o755)
    benchmarks = fake_benchmarks(suite, tmp_path)
    out = tmp_path / "out"
    args = ["--only", "passes", "--out", str(out), "--mpiexec", str(launcher)]
    assert suite.main([*args, "--python", sys.executable], benchmarks=benchmarks) == 0
    assert seen.read_text().startswith(f"-n 2 {sys.executable} {tmp_path / 'passes.py'} ")
    record = json.loads((out / "suite.json").read_text())
    assert record["mpi"] == {"mpiexec": str(launcher), "python": sys.executable}
    with pytest.raises(SystemExit):
        suite.main(["--mpiexec", str(tmp_path / "no-such-mpiexec")], benchmarks=benchmarks)


@pytest.mark.mpi
def test_args_and_realtime_reach_the_command_of_the_benchmark_they_name(
    suite: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--args NAME=ARGS goes after that benchmark's own arguments; --realtime puts its prefix
    (chrt -f 1; here a stand-in that records it was used) before mpiexec."""
    seen = tmp_path / "seen.txt"
    wrapper = tmp_path / "realtime"
    wrapper.write_text(f'#!/bin/sh\nprintf "realtime %s\\n" "$1" >> {seen}\nexec "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(suite, "REALTIME", (str(wrapper),))
    benchmarks = fake_benchmarks(suite, tmp_path)
    out = tmp_path / "out"
    args = ["--only", "passes,misses", "--out", str(out), "--realtime", "passes"]
    args += ["--args", "passes=--sizes '8,1Mi' --repeats 5", "--args", "misses="]
    assert suite.main(args, benchmarks=benchmarks) == 0
    assert seen.read_text() == f"realtime {suite.mpiexec()}\n"  # passes only
    commands = {
        run["name"]: run["command"] for run in json.loads((out / "suite.json").read_text())["runs"]
    }
    assert commands["passes"].startswith(f"{wrapper} {suite.mpiexec()} -n 2 ")
    assert commands["passes"].endswith(
        f"passes.py --sizes 8,1Mi --repeats 5 --json {out}/passes.json"
    )
    assert commands["misses"].startswith(f"{suite.mpiexec()} -n 2 ")
    for wrong in (["--args", "nosuch=--x"], ["--realtime", "passes,nosuch"]):
        with pytest.raises(SystemExit):
            suite.main(wrong, benchmarks=benchmarks)
