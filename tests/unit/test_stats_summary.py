"""The --stats text of a job with many nodes: totals, each column's spread and stragglers, and
the nodes with something wrong, instead of a row per node."""

from __future__ import annotations

from typing import Any

from geode_mpi.core.observe_stats import COLUMNS
from geode_mpi.core.observe_summary import FULL_TABLE_NODES, every_row, stats_text

HOW = every_row(None)


def _rows(count: int, ranks: int = 4) -> list[dict[str, Any]]:
    """``count`` quiet nodes spread round-robin over ``ranks``: 2 messages sent and received
    each, and 0.5 s of waiting."""
    zero = {key: 0 for _, key, _ in COLUMNS} | {"expired": 0, "queue_depth": 0}
    return [
        zero
        | {"node": f"node{k}", "node_index": k, "rank": k % ranks, "sent": 2, "received": 2}
        | {"sent_mb": 0.0, "received_mb": 0.0, "wait_seconds": 0.5, "credit_wait_seconds": 0.0}
        for k in range(count)
    ]


def _line(text: str, heading: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.startswith(heading + " ")]
    return line.split()


def test_up_to_32_nodes_every_node_has_its_row() -> None:
    text = stats_text(_rows(FULL_TABLE_NODES), HOW)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["node", "rank", "sent"]
    assert [line.split()[0] for line in lines[2:-2]] == [f"node{k}" for k in range(32)]
    assert lines[-1].split()[:3] == ["total", str(2 * 32), "0.00"]


def test_beyond_32_nodes_a_summary_of_2000_nodes_in_a_screenful() -> None:
    rows = _rows(2000, ranks=64)
    rows[1234] |= {"sent": 90, "wait_seconds": 7.25}  # a busy sender, a starved node
    rows[17] |= {"sent": 0}
    rows[40] |= {"dead_letters": 2, "retries": 1}
    rows[1999] |= {"queue_depth": 3}
    rows[1998] |= {"unacked": 1, "expired": 1, "dropped": 4}
    text = stats_text(rows, HOW)
    lines = text.splitlines()
    assert len(lines) < 30
    assert lines[0] == (
        "2000 nodes: a summary (a row per node is printed up to 32 nodes); for every node's "
        "row, run with --stats-json FILE (GEODE_STATS_JSON=FILE)"
    )
    assert lines[1].split() == ["column", "total", "min", "at", "median", "max", "at"]
    sent = 2 * 1998 + 90 + 0  # the 1998 others, node1234, node17
    assert _line(text, "sent") == [
        "sent", str(sent), "0", "node17", "(rank", "17)", "2", "90", "node1234", "(rank", "18)",
    ]  # fmt: skip
    assert _line(text, "wait s")[-4:] == ["7.25", "node1234", "(rank", "18)"]
    # The same on every node: no node named.
    assert _line(text, "recv") == ["recv", "4000", "2", "every", "node", "2", "2"]
    assert lines[-4:] == [
        "nodes to look at (3 of 2000):",
        "  node40 (rank 40): 1 retry (its handler failed), 2 dead letters",
        "  node1998 (rank 14): 4 messages dropped (full queue), 1 message expired (ttl), "
        "1 message sent, never acknowledged",
        "  node1999 (rank 15): 3 messages never received (left in its queue)",
    ]


def test_a_summary_names_the_stats_json_file_and_says_when_nothing_is_wrong() -> None:
    text = stats_text(_rows(33), every_row("/runs/stats.json"))
    assert text.splitlines()[0].endswith("; every node's row is in /runs/stats.json (--stats-json)")
    assert text.splitlines()[-1] == (
        "no node has retries, dead letters, drops, expiries, or messages left unreceived or "
        "unacknowledged"
    )


def test_a_summary_lists_at_most_32_nodes_to_look_at() -> None:
    rows = [row | {"dead_letters": 1} for row in _rows(100)]
    lines = stats_text(rows, HOW).splitlines()
    assert "nodes to look at (100 of 100):" in lines
    assert lines[-2] == "  node31 (rank 3): 1 dead letter"
    assert lines[-1] == "  ... and 68 more (every node's row has them)"
