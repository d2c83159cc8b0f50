"""--stats of a job with more nodes than a table should hold: a summary, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpirun import clean_env, mpirun, python

MANY = "tests/scripts/many_nodes.py"


def _trouble(nodes: int, rank_of: dict[str, int]) -> list[str]:
    """What the job of MANY leaves wrong, as the summary says it: node7's dead letter, the last
    node's message never received, and its sender's message never acknowledged."""
    last, before = f"node{nodes - 1}", f"node{nodes - 2}"
    return [
        f"nodes to look at (3 of {nodes}):",
        f"  node7 (rank {rank_of['node7']}): 1 dead letter",
        f"  {before} (rank {rank_of[before]}): 1 message sent, never acknowledged",
        f"  {last} (rank {rank_of[last]}): 1 message never received (left in its queue)",
    ]


def _summary(stderr: str, heading: str) -> list[str]:
    """The lines from ``heading`` to the last of the nodes to look at."""
    lines = stderr.splitlines()
    start = lines.index(heading)
    end = next(k for k in range(start, len(lines)) if lines[k].startswith("nodes to look at"))
    return lines[start : end + 4]


def test_40_nodes_on_one_rank_print_a_summary_and_the_json_holds_every_row(
    tmp_path: Path,
) -> None:
    out = tmp_path / "stats.json"
    args = ["-m", "geode_mpi", "--stats", "--stats-json", str(out), MANY, "--nodes", "40"]
    result = python(args, timeout=60)
    assert result.returncode == 0, result.explain()
    summary = _summary(result.stderr, "geode_mpi statistics (1 rank(s)):")
    assert summary[1] == (
        "40 nodes: a summary (a row per node is printed up to 32 nodes); every node's row is "
        f"in {out} (--stats-json)"
    )
    assert len(summary) == 1 + 1 + 2 + 16 + 4  # no row per node
    sent = summary[4].split()
    assert sent[:2] == ["sent", str(40 + 10)]  # the ring, and node0's 10 more to node1
    assert sent[-4:] == ["11", "node0", "(rank", "0)"]  # the busiest sender
    assert summary[-4:] == _trouble(40, {f"node{k}": 0 for k in range(40)})
    rows = json.loads(out.read_text())["nodes"]
    assert [row["node"] for row in rows] == [f"node{k}" for k in range(40)]


@pytest.mark.mpi
def test_41_nodes_on_2_ranks_name_the_ranks_of_the_stragglers() -> None:
    result = mpirun(2, ["-m", "geode_mpi", MANY, "--nodes", "41"], env=clean_env(GEODE_STATS="1"))
    assert result.returncode == 0, result.explain()
    summary = _summary(result.stderr, "geode_mpi statistics (2 rank(s)):")
    assert summary[1].endswith(
        "; for every node's row, run with --stats-json FILE (GEODE_STATS_JSON=FILE)"
    )
    rank_of = {f"node{k}": k % 2 for k in range(41)}  # nodes go round-robin over the ranks
    assert summary[-4:] == _trouble(41, rank_of)
    received = next(line for line in summary if line.startswith("recv ")).split()
    assert received[:2] == ["recv", "51"] and received[-4:] == ["11", "node1", "(rank", "1)"]


def test_a_failing_job_of_40_nodes_prints_a_partial_summary(tmp_path: Path) -> None:
    out = tmp_path / "stats.json"
    args = ["--stats", "--stats-json", str(out), MANY, "--nodes", "40", "--fail"]
    result = python(["-m", "geode_mpi", *args], timeout=60)
    assert result.returncode == 1, result.explain()
    heading = next(line for line in result.stderr.splitlines() if "statistics, partial" in line)
    summary = _summary(result.stderr, heading)
    assert summary[1].endswith("; every node's row is in the parts listed below (--stats-json)")
    assert summary[-4:] == _trouble(40, {f"node{k}": 0 for k in range(40)})
    part = tmp_path / "stats.rank0.json"
    assert f"parts left by rank 0: {part}" in result.stderr
    assert len(json.loads(part.read_text())["nodes"]) == 40
