"""--stats, --trace, --hang-timeout, --log-level and progress, as a user runs them."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from mpirun import clean_env, load_slack, mpirun, python

from geode_mpi import ProgressReport, report_progress
from geode_mpi.core import registry
from geode_mpi.core.observe import COLUMNS, format_table
from geode_mpi.runner.logs import configure_logging
from geode_mpi.transport.watchdog import hang_timeout

OBSERVED = "tests/scripts/observed.py"


def _ranks_in(label: str) -> set[int]:
    """The ranks a report's label names: ``[rank 2/4 node2]``, ``[ranks 0,2-3 of 4]``."""
    if label.startswith("rank "):
        return {int(label.split()[1].split("/")[0])}
    ranks: set[int] = set()
    for run in label.split()[1].split(","):
        low, _, high = run.partition("-")
        ranks.update(range(int(low), int(high or low) + 1))
    return ranks


def _waiting(err: str) -> set[int]:
    """The ranks that a hang report says wait (in lines merged or not)."""
    found = re.findall(r"^\[(ranks? [^\]]+)\] waiting \d+ s with nothing", err, re.MULTILINE)
    return set().union(*map(_ranks_in, found))


def _rows(path: Path) -> list[dict]:
    data = json.loads(path.read_text())
    return data["nodes"]


def _flows(trace: Path) -> tuple[list[dict], dict[str, set]]:
    events = json.loads(trace.read_text())["traceEvents"]
    flows: dict[str, set] = {"s": set(), "f": set()}
    for event in events:
        if event["ph"] in flows:
            flows[event["ph"]].add(event["id"])
    return events, flows


# -- in one process ------------------------------------------------------------------------


def test_stats_table_and_json_in_the_embedded_world(tmp_path: Path) -> None:
    out = tmp_path / "stats.json"
    result = python(
        ["-m", "geode_mpi", "--stats", "--stats-json", str(out), OBSERVED, "--steps", "5"],
        timeout=60,
    )
    assert result.returncode == 0, result.explain()
    assert "geode_mpi statistics (1 rank(s)):" in result.stderr
    header = result.stderr.splitlines()[1].split()
    assert header[:3] == ["node", "rank", "sent"]
    rows = _rows(out)
    assert [row["node"] for row in rows] == ["node0", "node1", "node2", "node3"]
    # Everything sent arrived (the work queue's own requests included); each node got its
    # 5 ring arrays of 8000 bytes.
    assert sum(row["sent"] for row in rows) == sum(row["received"] for row in rows)
    assert all(row["received"] >= 5 and row["received_bytes"] > 5 * 8000 for row in rows)
    assert rows[0]["sent"] >= 5 + 3 + 3  # ring, a topic copy per subscriber, a task each
    assert all(row["unacked"] == 0 and row["dead_letters"] == 0 for row in rows)
    total = result.stderr.splitlines()[-1].split()
    assert total[0] == "total" and int(total[1]) == sum(row["sent"] for row in rows)


def test_format_table_totals_count_checkpoints_once_per_rank() -> None:
    row = {key: 0 for _, key, _ in COLUMNS} | {"node": "a", "sent_mb": 0.0}
    rows = [
        row | {"node": "node0", "rank": 0, "sent": 2, "checkpoint_seconds": 1.5, "queue_peak": 3},
        row | {"node": "node1", "rank": 0, "sent": 5, "checkpoint_seconds": 1.5, "queue_peak": 7},
    ]
    lines = format_table(rows).splitlines()
    total = lines[-1].split()
    assert total[:2] == ["total", "7"]
    assert total[-1] == "1.50"  # one rank's checkpoint time, not twice it
    assert total[COLUMNS.index(("peak q", "queue_peak", "d")) - 1] == "7"  # the largest peak


def test_trace_joins_every_send_to_its_receive(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    result = python(["-m", "geode_mpi", "--trace", str(trace), OBSERVED, "--steps", "4"])
    assert result.returncode == 0, result.explain()
    events, flows = _flows(trace)
    names = {event["name"] for event in events if event["ph"] == "X"}
    assert {"send Ring", "send Done", "send Message", "receive"} <= names
    count = Counter(e["name"] for e in events if e["ph"] == "X")
    assert (count["send Ring"], count["send Done"]) == (4 * 4, 1)
    assert count["send Message"] == 3 + 3  # 3 tasks put, and handed out
    assert flows["s"] and flows["s"] == flows["f"]  # every arrow has both ends
    threads = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert threads == {"node0", "node1", "node2", "node3"}


def test_a_short_close_timeout_never_gives_up_in_the_gather_of_the_trace(tmp_path: Path) -> None:
    """Before: rank 0's close(timeout=0.2) timed out in the rooted gather of the --trace parts
    (every rank had arrived; rank 1 was writing a large part), and its retry waited for ever in
    the drain, rank 1 having closed."""
    trace = tmp_path / "trace.json"
    script = ["-m", "geode_mpi", "--trace", str(trace), "tests/scripts/slow_trace_close.py"]
    result = mpirun(2, [*script, "20000"], timeout=120)
    assert result.returncode == 0, result.explain()
    assert "rank 0 closed in" in result.stdout, result.explain()
    assert trace.exists()


@pytest.fixture
def no_geode_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a process that has created no Geode (tests before this one may have left one
    open, and the first one's node labels this process's lines for good)."""
    monkeypatch.setattr(registry, "_open", [])
    monkeypatch.setattr(registry, "_first_node", [])


@pytest.mark.usefixtures("no_geode_yet")
def test_progress_prints_lines_and_a_summary() -> None:
    stream = io.StringIO()
    assert list(report_progress(range(5), "steps", every=0, stream=stream)) == [0, 1, 2, 3, 4]
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[rank 0/1] steps: 1/5 (20%) in ")
    assert "left" in lines[0]
    assert lines[-1].startswith("[rank 0/1] steps: 5 done in ")
    quiet = io.StringIO()
    work = ProgressReport(total=None, label="x", every=3600, stream=quiet)
    work.update(3)
    assert quiet.getvalue() == "" and work.done == 3
    with pytest.raises(ValueError, match="total must be >= 0 or None, got -1"):
        ProgressReport(total=-1)


def test_hang_timeout_setting_is_checked() -> None:
    assert hang_timeout({}) is None
    assert hang_timeout({"GEODE_HANG_TIMEOUT": "2.5"}) == 2.5
    with pytest.raises(ValueError, match="GEODE_HANG_TIMEOUT must be a number of seconds > 0"):
        hang_timeout({"GEODE_HANG_TIMEOUT": "soon"})


@pytest.mark.usefixtures("no_geode_yet")
def test_log_records_carry_the_rank_label() -> None:
    configure_logging(None, 2, 4)
    record = logging.getLogger("job").makeRecord("job", logging.INFO, "f", 1, "hi", (), None)
    assert record.geode_label == "[rank 2/4]"
    with pytest.raises(ValueError, match="--log-level must be DEBUG, INFO"):
        configure_logging("loud")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--hang-timeout", "-1"], "--hang-timeout must be > 0 seconds, got -1"),
        (
            ["--wait-notice", "-1"],
            "--wait-notice must be a number of seconds >= 0 (0: off), got '-1'",
        ),
        # (inf passed the runner's own check, then every Geode() refused it: one parser now)
        (
            ["--wait-notice", "inf"],
            "--wait-notice must be a number of seconds >= 0 (0: off), got 'inf'",
        ),
        (
            ["--wait-notice", "soon"],
            "--wait-notice must be a number of seconds >= 0 (0: off), got 'soon'",
        ),
        (["--log-level", "loud"], "--log-level must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    ],
)
def test_bad_runner_options_are_named(args: list[str], error: str) -> None:
    result = python(["-m", "geode_mpi", *args, OBSERVED], timeout=60)
    assert result.returncode == 2, result.explain()
    assert error in result.stderr


# -- on MPI ranks --------------------------------------------------------------------------


@pytest.mark.mpi
def test_stats_trace_and_log_labels_at_3_ranks(tmp_path: Path) -> None:
    stats, trace = tmp_path / "stats.json", tmp_path / "trace.json"
    result = mpirun(
        3,
        [
            "-m", "geode_mpi", "--stats", "--stats-json", str(stats), "--trace", str(trace),
            "--log-level", "INFO", OBSERVED, "--steps", "6", "--checkpoint-dir",
            str(tmp_path / "ckpt"),
        ],
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.explain()
    rows = _rows(stats)
    assert [row["rank"] for row in rows] == [0, 1, 2]
    assert sum(row["sent"] for row in rows) == sum(row["received"] for row in rows)
    assert all(row["received_bytes"] > 6 * 8000 and row["unacked"] == 0 for row in rows)
    assert all(row["checkpoints"] == 1 and row["checkpoint_seconds"] > 0 for row in rows)
    assert "geode_mpi statistics (3 rank(s)):" in result.stderr
    assert "[rank 0/3 node0] INFO geode_mpi: checkpoint 1:" in result.stderr
    events, flows = _flows(trace)
    assert {event["pid"] for event in events} == {0, 1, 2}
    assert flows["s"] and flows["s"] == flows["f"]  # arrows cross ranks: sender to receiver
    names = {event["name"] for event in events if event["ph"] == "X"}
    assert {"handle Tick", "dispatch", "publish news", "send _Want"} <= names
    checkpoints = [e for e in events if e["ph"] == "X" and e["name"] == "checkpoint"]
    assert sorted(e["pid"] for e in checkpoints) == [0, 1, 2]


@pytest.mark.mpi
def test_hang_timeout_reports_every_rank_and_aborts() -> None:
    result = mpirun(
        3,
        ["-m", "geode_mpi", "--hang-timeout", "3", "tests/scripts/deadlock.py"],
        timeout=90,
        env=clean_env(),
    )
    assert not result.timed_out, result.explain()
    assert result.returncode != 0, result.explain()
    err = result.stderr
    assert "[rank 0/3 node0] geode_mpi: no progress for 3" in err
    assert "   in tests/scripts/deadlock.py:" in err
    assert "msg = " not in err and "geode.receive(source=left)" in err
    assert (
        "node0: 0 message(s) queued, 0 received, 1 sent, not yet acknowledged by node1 (1)" in err
    )
    assert _waiting(err) == {0, 2}  # rank 2 answered from its own wait
    assert "no answer within" in err and "from rank 1: busy outside" in err
    assert result.seconds < 60 * load_slack()


@pytest.mark.mpi
def test_hang_timeout_reports_8_hung_ranks_as_waiting_beside_a_cpu_hog() -> None:
    """Issue 15: with every rank waiting inside geode_mpi and a CPU hog beside, the report used
    to call 5 of 7 ranks busy outside geode_mpi (a rank that had asked, or deferred, did not
    answer for seconds). Asked down a tree, each answers; the census costs 2 (P - 1) messages
    (every hung rank asked every other before: up to P (P - 1) questions)."""
    ranks = 8
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = mpirun(
            ranks,
            ["-m", "geode_mpi", "--hang-timeout", "3", "tests/scripts/all_hang.py"],
            timeout=120,
        )
    finally:
        hog.kill()
        hog.wait()
    assert result.returncode == 124 and not result.timed_out, result.explain()
    err = result.stderr
    assert _waiting(err) == set(range(ranks)), result.explain()
    assert "no answer within" not in err and "busy outside" not in err, result.explain()
    counted = re.search(r"down a tree of depth 1: (\d+) watchdog message\(s\) in all", err)
    assert counted is not None, result.explain()
    assert int(counted.group(1)) <= 4 * (ranks - 1), result.explain()  # 14 when all answer


@pytest.mark.mpi
def test_a_hang_report_says_once_what_ranks_alike_say() -> None:
    """4 ranks waiting alike: each rank's five lines, one rank after another (22 lines); now
    each line once, naming the ranks that said it (a rank's own node reads "its node")."""
    result = mpirun(4, ["-m", "geode_mpi", "--hang-timeout", "2", "tests/scripts/all_hang.py"])
    assert result.returncode == 124 and not result.timed_out, result.explain()
    err = result.stderr
    report = [line for line in err.splitlines() if line.startswith("[rank")]
    assert len(report) <= 9, result.explain()  # 5 alike, 1-3 more if the seconds differ
    assert _waiting(err) == {0, 1, 2, 3}, result.explain()
    merged = "[ranks 0-3 of 4]   in tests/scripts/all_hang.py:9 in <module>: geode.receive("
    assert merged in err, result.explain()
    assert "[ranks 0-3 of 4]   its node: 0 message(s) queued, 0 received, 0 sent" in err


@pytest.mark.mpi
def test_hang_timeout_asks_from_rank_1_once_when_rank_0_computes() -> None:
    """Rank 0 cannot ask: rank 1 does, one grace period later, and the ranks above it, which
    would ask a little later still, leave it to rank 1: one census, 2 (P - 1) messages."""
    result = mpirun(
        4,
        ["-m", "geode_mpi", "--hang-timeout", "3", "tests/scripts/rank0_busy.py"],
        timeout=120,
    )
    assert result.returncode == 124 and not result.timed_out, result.explain()
    err = result.stderr
    assert "[rank 1/4 node1] geode_mpi: no progress for" in err, result.explain()
    assert err.count("asked every rank what it waits for") == 1, result.explain()
    assert "[rank 1/4 node1] asked 3 rank(s) down a tree of depth 1: 6 watchdog" in err
    assert "from rank 0: busy outside geode_mpi" in err
    assert {2, 3} <= _waiting(err), result.explain()


@pytest.mark.mpi
def test_hang_timeout_leaves_a_computing_rank_alone() -> None:
    result = mpirun(
        2,
        ["-m", "geode_mpi", "--hang-timeout", "6", OBSERVED, "--compute", "2"],
        timeout=90,
    )
    assert result.returncode == 0, result.explain()
    assert "no progress" not in result.stderr


@pytest.mark.mpi
def test_hang_timeout_leaves_a_waiting_rank_alone_while_another_runs() -> None:
    result = mpirun(
        3,
        ["-m", "geode_mpi", "--hang-timeout", "2", "tests/scripts/busy_peers.py"],
        timeout=90,
    )
    assert result.returncode == 0, result.explain()
    assert "result: computed" in result.stdout and "no progress" not in result.stderr


@pytest.mark.mpi
def test_hang_timeout_counts_the_traffic_of_every_open_geode() -> None:
    """The watchdog was the last Geode's: a rank waiting while its messages moved on the other
    Geode looked stuck (a false hang, status 124), and after that Geode closed nothing watched."""
    script = "tests/scripts/two_geodes.py"
    result = mpirun(2, ["-m", "geode_mpi", "--hang-timeout", "2", script], timeout=90)
    assert result.returncode == 0, result.explain()
    assert "echoes: " in result.stdout and "no progress" not in result.stderr
    result = mpirun(
        2, ["-m", "geode_mpi", "--hang-timeout", "2", script, "--hang-after"], timeout=90
    )
    assert result.returncode == 124 and not result.timed_out, result.explain()
    assert "geode_mpi: no progress for" in result.stderr
    assert "in tests/scripts/two_geodes.py:44 in <module>: job.receive(" in result.stderr


@pytest.mark.mpi
def test_hang_timeout_catches_a_hang_made_of_short_waits() -> None:
    result = mpirun(
        2,
        ["-m", "geode_mpi", "--hang-timeout", "2", "tests/scripts/polling_hang.py"],
        timeout=90,
    )
    assert result.returncode != 0 and not result.timed_out, result.explain()
    assert "geode_mpi: no progress for" in result.stderr
    assert "in tests/scripts/polling_hang.py:" in result.stderr
    assert "geode.receive(timeout=0.5)" in result.stderr  # node1's part: where it polls
    assert result.seconds < 45 * load_slack()


@pytest.mark.mpi
@pytest.mark.parametrize("stats", ["0", "1"])
def test_close_keeps_its_timeout_with_stats_on(stats: str) -> None:
    result = mpirun(
        2, ["-m", "geode_mpi", "tests/scripts/late_close.py"], timeout=90,
        env=clean_env(GEODE_STATS=stats),
    )  # fmt: skip
    assert result.returncode == 0, result.explain()
    timed_out = [line for line in result.stdout.splitlines() if "timed out after" in line]
    assert timed_out and float(timed_out[0].split()[-2]) < 3.0, result.explain()
    assert "closed on retry" in result.stdout


def test_a_bad_hang_timeout_setting_is_refused_before_anything_starts() -> None:
    code = "import geode_mpi\ntry:\n    geode_mpi.Geode()\nexcept ValueError as e:\n    print(e)"
    result = python(["-c", code], timeout=60, env=clean_env(GEODE_HANG_TIMEOUT="soon"))
    assert result.returncode == 0, result.explain()
    assert "GEODE_HANG_TIMEOUT must be a number of seconds > 0, got 'soon'" in result.stdout
    assert result.stderr == ""  # nothing half-made left to close at exit


# -- what --stats and --trace leave when the job fails -----------------------------------------

FAILING = """\
from geode_mpi import Geode

with Geode() as geode:
    right = (geode.rank + 1) % geode.size
    for step in range(3):
        geode.send(step, dest=right)
        geode.receive(timeout=60)
    if geode.rank == geode.size - 1:
        raise ValueError("the last rank fails")
    geode.receive(timeout=60)  # waits for a message that never comes
"""


def _observe_args(tmp_path: Path) -> list[str]:
    return [
        "--stats", "--stats-json", str(tmp_path / "stats.json"),
        "--trace", str(tmp_path / "trace.json"),
    ]  # fmt: skip


def _partial_parts(tmp_path: Path, ranks: int) -> None:
    """Every rank left its stats and trace parts, marked partial, with what it did."""
    assert not (tmp_path / "stats.json").exists() and not (tmp_path / "trace.json").exists()
    for rank in range(ranks):
        stats = json.loads((tmp_path / f"stats.rank{rank}.json").read_text())
        assert stats["partial"] is True and stats["rank"] == rank
        assert "status" in stats["reason"]
        nodes = stats["nodes"]
        assert [row["rank"] for row in nodes] == [rank]
        assert nodes[0]["sent"] >= 3 and nodes[0]["received"] >= 3
        trace = json.loads((tmp_path / f"trace.rank{rank}.json").read_text())
        assert trace["partial"] is True and trace["rank"] == rank
        sends = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "send Message"]
        assert len(sends) >= 3 and {e["pid"] for e in sends} == {rank}


@pytest.mark.mpi
def test_a_failing_rank_leaves_every_ranks_partial_stats_and_trace(tmp_path: Path) -> None:
    job = tmp_path / "failing.py"
    job.write_text(FAILING)
    result = mpirun(2, ["-m", "geode_mpi", *_observe_args(tmp_path), str(job)], timeout=120)
    assert result.returncode == 1 and not result.timed_out, result.explain()
    assert "ValueError: the last rank fails" in result.stderr
    _partial_parts(tmp_path, 2)
    err = result.stderr
    assert "geode_mpi statistics, partial (the job ended with status 1" in err, err
    table = err[err.index("statistics, partial") :].splitlines()
    assert [line.split()[0] for line in table[3:5]] == ["node0", "node1"]
    assert "partial --stats-json/--trace parts left by ranks 0-1:" in err


@pytest.mark.mpi
def test_ranks_failing_together_leave_their_parts_to_one_that_says_so(tmp_path: Path) -> None:
    """Every rank raising at once: each asked every other for its part and printed a table of
    them all (P - 1 questions and answers each, ~2 P^2 messages; 4 tables here, 2,000 at
    2,000 ranks); now one rank collects and prints, the others answer it."""
    job = tmp_path / "failing.py"
    job.write_text(FAILING.replace("if geode.rank == geode.size - 1:", "if True:"))
    result = mpirun(4, ["-m", "geode_mpi", *_observe_args(tmp_path), str(job)], timeout=120)
    assert result.returncode == 1 and not result.timed_out, result.explain()
    err = result.stderr
    assert err.count("ValueError: the last rank fails") == 4, result.explain()
    _partial_parts(tmp_path, 4)
    assert err.count("statistics, partial") == 1, result.explain()
    assert "; from ranks 0-3 of 4):" in err, result.explain()
    assert err.count("parts left by ranks 0-3: ") == 1, result.explain()
    assert len(err.splitlines()) <= 4 * 5 + 12, result.explain()  # 4 tracebacks, 1 table


@pytest.mark.mpi
def test_a_hang_timeout_leaves_every_ranks_partial_stats_and_trace(tmp_path: Path) -> None:
    job = tmp_path / "hang.py"
    job.write_text(FAILING.replace('raise ValueError("the last rank fails")', "pass"))
    result = mpirun(
        2,
        ["-m", "geode_mpi", "--hang-timeout", "2", *_observe_args(tmp_path), str(job)],
        timeout=120,
    )
    assert result.returncode == 124 and not result.timed_out, result.explain()
    _partial_parts(tmp_path, 2)
    assert "geode_mpi statistics, partial (the job ended with status 124" in result.stderr


def test_a_failing_job_leaves_partial_stats_and_trace_in_the_embedded_world(
    tmp_path: Path,
) -> None:
    job = tmp_path / "failing.py"
    job.write_text(
        "from geode_mpi import Geode\n"
        "with Geode() as geode:\n"
        "    for step in range(3):\n"
        "        geode.send(step, 'node0', 'node1')\n"
        "        geode.receive('node1')\n"
        "    raise ValueError('failed')\n"
    )
    result = python(["-m", "geode_mpi", *_observe_args(tmp_path), str(job)], timeout=60)
    assert result.returncode == 1, result.explain()
    stats = json.loads((tmp_path / "stats.rank0.json").read_text())
    assert stats["partial"] is True
    assert {row["node"]: row["sent"] for row in stats["nodes"]}["node0"] == 3
    trace = json.loads((tmp_path / "trace.rank0.json").read_text())
    assert trace["partial"] is True
    assert sum(e["name"] == "send Message" for e in trace["traceEvents"]) == 3


def test_a_finished_job_removes_the_parts_a_failed_run_left(tmp_path: Path) -> None:
    stale = tmp_path / "trace.rank0.json"
    stale.write_text('{"partial": true}')
    result = python(
        ["-m", "geode_mpi", "--trace", str(tmp_path / "trace.json"), OBSERVED, "--steps", "2"]
    )
    assert result.returncode == 0, result.explain()
    assert (tmp_path / "trace.json").exists() and not stale.exists()


def test_a_finished_job_removes_the_parts_of_ranks_it_does_not_have(tmp_path: Path) -> None:
    """An earlier failed run at 4 ranks left four parts; a finished run at 1 rank removes all."""
    stale = [
        tmp_path / f"{name}.rank{rank}.json" for name in ("stats", "trace") for rank in range(4)
    ]
    for part in stale:
        part.write_text('{"partial": true}')
    kept = [tmp_path / "stats.rank1x.json", tmp_path / "other.rank2.json"]  # not parts of ours
    for other in kept:
        other.write_text("{}")
    args = ["--stats-json", str(tmp_path / "stats.json"), "--trace", str(tmp_path / "trace.json")]
    result = python(["-m", "geode_mpi", *args, OBSERVED, "--steps", "2"], timeout=60)
    assert result.returncode == 0, result.explain()
    assert (tmp_path / "stats.json").exists() and (tmp_path / "trace.json").exists()
    assert [part.name for part in stale if part.exists()] == []
    assert all(other.exists() for other in kept)


@pytest.mark.parametrize("option", ["--stats-json", "--trace"])
@pytest.mark.parametrize("ranks", [1, 2])
def test_an_output_file_that_cannot_be_written_is_refused_at_the_start(
    tmp_path: Path, option: str, ranks: int
) -> None:
    missing = tmp_path / "no_such_dir" / "out.json"
    job = tmp_path / "job.py"
    job.write_text("print('the job ran')\n")
    args = ["-m", "geode_mpi", option, str(missing), str(job)]
    result = python(args, timeout=60) if ranks == 1 else mpirun(ranks, args, timeout=60)
    assert result.returncode == 2, result.explain()
    directory = str(missing.parent)
    said = f"error: {option}: the directory {directory!r} of {str(missing)!r} does not exist"
    assert result.stderr.count(said) == 1, result.explain()
    assert "the job ran" not in result.stdout and "Traceback" not in result.stderr


def test_an_output_directory_is_refused_naming_it(tmp_path: Path) -> None:
    result = python(["-m", "geode_mpi", "--trace", str(tmp_path), OBSERVED], timeout=60)
    assert result.returncode == 2, result.explain()
    assert f"--trace: {str(tmp_path)!r} is a directory (give a file name)" in result.stderr


def test_a_geode_refuses_an_output_file_that_cannot_be_written(tmp_path: Path) -> None:
    """Without the runner: GEODE_STATS_JSON set by hand is checked when the Geode starts."""
    missing = str(tmp_path / "no_such_dir" / "stats.json")
    code = "from geode_mpi import Geode\nGeode()\nprint('started')\n"
    result = python(["-c", code], timeout=60, env=clean_env(GEODE_STATS_JSON=missing))
    assert result.returncode == 1 and "started" not in result.stdout, result.explain()
    assert f"ValueError: GEODE_STATS_JSON: the directory {str(tmp_path / 'no_such_dir')!r}" in (
        result.stderr
    )


HANGING_AIO = """\
import asyncio
from geode_mpi import Geode

async def wait_for_peer(geode):
    return await geode.areceive(geode.node)  # the await the report must name

async def main(geode):
    await asyncio.gather(wait_for_peer(geode), asyncio.sleep(1000))

with Geode() as geode:
    asyncio.run(main(geode))
"""


@pytest.mark.parametrize("ranks", [1, 2])
def test_hang_timeout_in_asyncio_names_the_jobs_await(tmp_path: Path, ranks: int) -> None:
    """The thread's stack ends in the event loop (asyncio/base_events.py): the report names
    each waiting task's innermost await in the job's code instead."""
    job = tmp_path / "hang_aio.py"
    job.write_text(HANGING_AIO)
    args = ["-m", "geode_mpi", "--hang-timeout", "2", str(job)]
    result = python(args, timeout=60) if ranks == 1 else mpirun(ranks, args, timeout=60)
    assert result.returncode == 124 and not result.timed_out, result.explain()
    where = f"in {job}:5 in wait_for_peer: return await geode.areceive(geode.node)"
    assert result.stderr.count(where) == 1, result.explain()  # (2 ranks: said once for both)
    label = "[rank 0/1 node0]" if ranks == 1 else "[ranks 0-1 of 2]"
    assert f"{label}   {where}" in result.stderr, result.explain()
    assert "base_events.py" not in result.stderr and "events.py" not in result.stderr
