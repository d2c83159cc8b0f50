"""The --stats table: the variables that ask for it and for --trace, a rank's and the job's rows."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from geode_mpi.tracing import TRACE_VARIABLE, TRACER
from geode_mpi.transport import Rooted

if TYPE_CHECKING:
    from geode_mpi.core.checkpointing import Checkpointer
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.transport import Transport

STATS_VARIABLE = "GEODE_STATS"  # "1": print the table on rank 0 when the job closes
STATS_JSON_VARIABLE = "GEODE_STATS_JSON"  # a file: rank 0 writes the table there as JSON

# (heading, key, format) of each column of the --stats table.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("node", "node", "s"),
    ("rank", "rank", "d"),
    ("sent", "sent", "d"),
    ("MB out", "sent_mb", ".2f"),
    ("recv", "received", "d"),
    ("MB in", "received_mb", ".2f"),
    ("peak q", "queue_peak", "d"),
    ("acked", "acked", "d"),
    ("unacked", "unacked", "d"),
    ("resent", "resent", "d"),
    ("retries", "retries", "d"),
    ("dups", "duplicates", "d"),
    ("dead", "dead_letters", "d"),
    ("dropped", "dropped", "d"),
    ("wait s", "wait_seconds", ".2f"),
    ("credit s", "credit_wait_seconds", ".2f"),
    ("ckpt", "checkpoints", "d"),
    ("ckpt s", "checkpoint_seconds", ".2f"),
)


class Observed(NamedTuple):
    """A Geode whose figures --stats gathers: its runtime, and its checkpoints if it takes any."""

    runtime: Runtime
    checkpointer: Checkpointer | None


def local_rows(observed: Observed) -> list[dict[str, Any]]:
    """This rank's nodes' counters, with the rank's checkpoint figures on each row."""
    runtime, checkpointer = observed
    rows = []
    for index in sorted(runtime.engine.stats):
        row = runtime.engine.snapshot(index).as_dict()
        row["node_index"] = index
        row["rank"] = runtime.rank
        row["sent_mb"] = row["sent_bytes"] / 1e6
        row["received_mb"] = row["received_bytes"] / 1e6
        row["checkpoints"] = 0 if checkpointer is None else checkpointer.taken
        row["checkpoint_seconds"] = 0.0 if checkpointer is None else checkpointer.seconds
        rows.append(row)
    return rows


def job_rows(observed: Observed, deadline: float | None = None) -> list[dict[str, Any]] | None:
    """Every node's row, in node order, on rank 0; None on the others (collective over the
    job's ranks; `GeodeTimeoutError` past ``deadline``, `time.monotonic`)."""
    parts = to_rank0(observed.runtime.transport, local_rows(observed), deadline)
    if parts is None:
        return None
    return sorted((row for part in parts for row in part), key=lambda row: row["node_index"])


def to_rank0(transport: Transport, value: Any, deadline: float | None) -> list[Any] | None:
    """Every rank's ``value`` by rank on rank 0, None elsewhere: a rooted gather where the
    transport has one (rank 0 alone holds the P values: an allgather would hand them to every
    rank, O(P^2) in all at thousands of ranks), else an allgather."""
    if isinstance(transport, Rooted):
        return transport.gather(value, 0, deadline)
    everyone = transport.allgather(value)
    return everyone if transport.rank == 0 else None


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table with a totals line."""
    header = [heading for heading, _, _ in COLUMNS]
    body = [[format(row[key], spec) for _, key, spec in COLUMNS] for row in rows]
    totals = ["total", "", *(format(total(rows, key), spec) for _, key, spec in COLUMNS[2:])]
    lines = [header, *body, totals]
    widths = [max(len(line[k]) for line in lines) for k in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(width) if k == 0 else cell.rjust(width)
            for k, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    text.insert(1, "-" * len(text[0]))
    text.insert(len(text) - 1, "-" * len(text[0]))
    return "\n".join(text)


def total(rows: Sequence[dict[str, Any]], key: str) -> Any:
    """Column ``key``'s total: the sum, but the largest queue peak, and a rank's checkpoint
    figures (on each of its nodes' rows) once: the most of any rank."""
    if key == "queue_peak":
        return max((row[key] for row in rows), default=0)
    if key.startswith("checkpoint"):
        once = {row["rank"]: row[key] for row in rows}
        return max(once.values(), default=0)
    return sum(row[key] for row in rows)


def output_problem(option: str, path: str) -> str | None:
    """What stops ``path`` from taking --stats-json's or --trace's file (``option`` names
    it), or None: its directory must exist and be writable, and it must not be a directory.

    Checked when the job starts, not found when it ends (after the whole job ran).
    """
    if not path:  # ('' would be taken for no file at all, and nothing written)
        return f"{option} needs a file name, got ''"
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{option}: {path!r} is a directory (give a file name)"
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        return f"{option}: the directory {directory!r} of {path!r} {what}"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{option}: the directory {directory!r} of {path!r} is not writable"
    return None


def check_outputs() -> None:
    """Refuse a --stats-json or --trace file (GEODE_STATS_JSON, GEODE_TRACE) that could not be
    written at the end.

    Raises:
        ValueError: naming the variable, the file and what is wrong.
    """
    for variable in (STATS_JSON_VARIABLE, TRACE_VARIABLE):
        path = os.environ.get(variable)
        problem = None if not path else output_problem(variable, path)
        if problem is not None:
            raise ValueError(problem)


def observing() -> bool:
    """Whether --stats, --stats-json or --trace asked for anything."""
    stats = os.environ.get(STATS_VARIABLE, "") not in ("", "0")
    return stats or bool(os.environ.get(STATS_JSON_VARIABLE)) or TRACER.on
