"""The --stats text: every node's row up to `FULL_TABLE_NODES` nodes, a summary beyond."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geode_mpi.core.observe_stats import COLUMNS, format_table, total

# Beyond this many nodes (2,000 nodes would be 2,000 rows) the text is a summary: totals, each
# column's spread and the nodes holding its extremes, and the nodes with something wrong.
FULL_TABLE_NODES = 32

# (key, what one of it is, what several are) of the counts that put a node on the list of
# nodes to look at, in the order they are said.
TROUBLE: tuple[tuple[str, str, str], ...] = (
    ("retries", "retry (its handler failed)", "retries (its handler failed)"),
    ("dead_letters", "dead letter", "dead letters"),
    ("dropped", "message dropped (full queue)", "messages dropped (full queue)"),
    ("expired", "message expired (ttl)", "messages expired (ttl)"),
    ("queue_depth", "message never received (left in its queue)",
     "messages never received (left in its queue)"),
    ("unacked", "message sent, never acknowledged", "messages sent, never acknowledged"),
)  # fmt: skip


def stats_text(rows: Sequence[dict[str, Any]], every_row: str) -> str:
    """The --stats text of ``rows``: the whole table up to `FULL_TABLE_NODES` rows, else the
    summary (`format_summary`), which says ``every_row``: where every node's row is."""
    if len(rows) <= FULL_TABLE_NODES:
        return format_table(rows)
    return format_summary(rows, every_row)


def every_row(where: str | None) -> str:
    """Where every node's row is: in ``where`` (--stats-json's file, or its parts), or how to
    get them when the job wrote none."""
    if where is None:
        return "for every node's row, run with --stats-json FILE (GEODE_STATS_JSON=FILE)"
    return f"every node's row is in {where} (--stats-json)"


def format_summary(rows: Sequence[dict[str, Any]], every_row: str) -> str:
    """The totals of ``rows``, each column's min, median and max with the nodes that hold the
    min and max (the first in node order on a tie), and every node with something wrong."""
    title = (
        f"{len(rows)} nodes: a summary (a row per node is printed up to {FULL_TABLE_NODES} "
        f"nodes); {every_row}"
    )
    lines = [["column", "total", "min", "at", "median", "max", "at"]]
    for heading, key, spec in COLUMNS[2:]:
        ordered = sorted(rows, key=lambda row: row[key])  # stable: node order on a tie
        low, high = ordered[0], max(rows, key=lambda row: row[key])
        middle = ordered[(len(ordered) - 1) // 2][key]  # a node's own value (median_low)
        least, most = format(low[key], spec), format(high[key], spec)
        low_cells = [least, "every node" if least == most else _where(low)]
        high_cells = [most, "" if least == most else _where(high)]
        median = format(middle, spec)
        lines.append([heading, format(total(rows, key), spec), *low_cells, median, *high_cells])
    text = [title, *_aligned(lines)]
    text.insert(2, "-" * len(text[1]))
    text += _trouble(rows)
    return "\n".join(text)


def _where(row: dict[str, Any]) -> str:
    return f"{row['node']} (rank {row['rank']})"


def _aligned(lines: list[list[str]]) -> list[str]:
    """``lines`` in columns: the first and the node names to the left, numbers to the right."""
    widths = [max(len(line[k]) for line in lines) for k in range(len(lines[0]))]
    return [
        "  ".join(
            cell.ljust(width) if k in (0, 3, 6) else cell.rjust(width)
            for k, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]


def _trouble(rows: Sequence[dict[str, Any]]) -> list[str]:
    """A line per node with retries, dead letters, drops, expiries, messages left in its queue
    or unacknowledged (at most `FULL_TABLE_NODES` lines), or a line saying there is none."""
    found = []
    for row in rows:
        said = [
            f"{row[key]} {one if row[key] == 1 else several}"
            for key, one, several in TROUBLE
            if row.get(key, 0) > 0
        ]
        if said:
            found.append(f"  {_where(row)}: {', '.join(said)}")
    if not found:
        return ["no node has retries, dead letters, drops, expiries, or messages left unreceived "
                "or unacknowledged"]  # fmt: skip
    shown = found[:FULL_TABLE_NODES]
    more = len(found) - len(shown)
    tail = [f"  ... and {more} more (every node's row has them)"] if more else []
    return [f"nodes to look at ({len(found)} of {len(rows)}):", *shown, *tail]
