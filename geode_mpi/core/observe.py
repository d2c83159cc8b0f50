"""What a job did: per-node statistics gathered at the end (--stats), and trace events (--trace).

When the job fails instead (an uncaught exception, ``--hang-timeout``, Ctrl-C), each rank that
can leaves its own part before the job ends, marked partial: the failing rank itself, and the
ranks it asks over a communicator of their own, which answer from their waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from geode_mpi.base import backoff
from geode_mpi.base.failure import at_abort, rank_label
from geode_mpi.errors import GeodeTimeoutError
from geode_mpi.tracing import TRACE_VARIABLE, TRACER, merge_parts, part_path, write_part
from geode_mpi.transport import Notices, Watchdog, transport_state

if TYPE_CHECKING:
    from geode_mpi.core.checkpointing import Checkpointer
    from geode_mpi.core.runtime import Runtime

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


# -- statistics -----------------------------------------------------------------------------


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


def job_rows(observed: Observed) -> list[dict[str, Any]]:
    """Every node's row, in node order (collective over the job's ranks)."""
    parts = observed.runtime.transport.allgather(local_rows(observed))
    return sorted((row for part in parts for row in part), key=lambda row: row["node_index"])


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table with a totals line."""
    header = [heading for heading, _, _ in COLUMNS]
    body = [[format(row[key], spec) for _, key, spec in COLUMNS] for row in rows]
    totals = ["total", ""]
    for _, key, spec in COLUMNS[2:]:
        if key == "queue_peak":
            totals.append(format(max((row[key] for row in rows), default=0), spec))
        elif key.startswith("checkpoint"):  # per rank, on each of its nodes' rows: the most
            once = {row["rank"]: row[key] for row in rows}
            totals.append(format(max(once.values(), default=0), spec))
        else:
            totals.append(format(sum(row[key] for row in rows), spec))
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


def finish_job(observed: Observed, timeout: float | None) -> bool:
    """At close, with ``--stats`` or ``--trace``: gather every rank's part, rank 0 writes it.

    Collective (every rank's environment says the same). Everything in flight is first
    drained (within ``timeout``), so the counts include it.

    Returns:
        True if there was anything to gather (and it took some of ``timeout``).

    Raises:
        GeodeTimeoutError: some rank did not reach close() within ``timeout``.
    """
    stats = os.environ.get(STATS_VARIABLE, "") not in ("", "0")
    stats_json = os.environ.get(STATS_JSON_VARIABLE) or None
    if not (stats or stats_json or TRACER.on):
        return False
    geode = observed.runtime
    transport = geode.transport
    # Every rank first arrives (a barrier posted once: a close() retried after a timeout
    # waits on the same one); then the drain and gathers below find every rank there.
    if geode.arrived is None:
        geode.arrived = transport.all_entered()
    deadline = None if timeout is None else time.monotonic() + timeout
    # The transport's own wait, not `Wait.until`, on purpose: the job is sealed and every
    # rank is in close (a multi-rank close served requests until then), so nothing is left
    # to serve or forward; and with no gate passed, close keeps the gate throughout, so no
    # other thread sends while the counts below are gathered.
    if not transport.wait(geode.arrived, deadline):
        raise GeodeTimeoutError(
            f"close() on rank {geode.rank} timed out after {timeout:g} s: waiting for the "
            "other ranks to call close()"
        )
    transport.drain()
    if stats or stats_json:
        rows = job_rows(observed)
        if geode.rank == 0:
            if stats:
                sys.stdout.flush()
                print(f"geode_mpi statistics ({geode.size} rank(s)):", file=sys.stderr)
                print(format_table(rows), file=sys.stderr, flush=True)
            if stats_json:
                with open(stats_json, "w", encoding="utf-8") as out:
                    json.dump({"ranks": geode.size, "nodes": rows}, out, indent=1)
    for path in (stats_json, TRACER.path if TRACER.on else None):
        if path is not None and _partial.left is None:  # one an earlier failed run left
            # Each rank its own; rank 0 also those of ranks this job does not have (an
            # earlier failed run at more ranks left them).
            stale = [part_path(path, geode.rank)]
            if geode.rank == 0:
                stale += parts_beyond(path, geode.size)
            for name in stale:
                with contextlib.suppress(OSError):
                    os.remove(name)
    if TRACER.on and TRACER.path is not None:
        # Each rank writes its own part; rank 0 then merges them one by one, so no rank
        # ever holds the whole job's events.
        part = write_part(TRACER.path, TRACER.rank, TRACER.take())
        parts = transport.allgather(part)
        if geode.rank == 0:
            merge_parts(TRACER.path, parts)
    if observed in _partial.unfinished:  # gathered: nothing partial to leave for it any more
        _partial.unfinished.remove(observed)
    return True


def parts_beyond(path: str, size: int) -> list[str]:
    """The parts of ``path`` (`part_path`) of ranks ``size`` and above that are on disk."""
    root, ext = os.path.splitext(part_path(path, 0))
    prefix = root[: -len("0")]  # ``stats.rank``
    found = []
    with contextlib.suppress(OSError):
        for name in os.listdir(os.path.dirname(prefix) or "."):
            full = os.path.join(os.path.dirname(prefix), name)
            number = full[len(prefix) : len(full) - len(ext)]
            ours = full.startswith(prefix) and full.endswith(ext) and number.isdigit()
            if ours and int(number) >= size:
                found.append(full)
    return sorted(found)


# -- partial results when the job fails ------------------------------------------------------

# A failing rank asks the others (reason,) to leave their parts; each answers (files, rows).
NOTICE_GRACE = 2.0  # seconds a failing rank waits for the others' parts
_LOOK_EVERY = 0.02  # seconds between two looks for a notice from a waiting rank's pauses


class _Partial:
    """This process's Geodes whose --stats/--trace were not gathered yet, and what it left."""

    def __init__(self) -> None:
        self.unfinished: list[Observed] = []
        self.notices: Notices | None = None  # over every rank, on a communicator of its own
        self.rank = 0
        self.size = 1
        self.left: tuple[list[str], list[dict[str, Any]]] | None = None
        self.next_look = 0.0


_partial = _Partial()


def start_observing(observed: Observed) -> None:
    """With --stats or --trace: be ready to leave this Geode's part if the job fails.

    Collective when the job's first observed Geode is created on several ranks (a duplicated
    communicator for the notices).
    """
    if not observing():
        return
    geode = observed.runtime
    _partial.unfinished.append(observed)
    if len(_partial.unfinished) == 1 and _partial.left is None:
        _partial.rank, _partial.size = geode.rank, geode.size
    if _partial.notices is None and geode.size > 1:
        comm = geode.transport.private_comm()
        if comm is not None:
            _partial.notices = Notices(comm)
            backoff.set_notice_hook(_look_for_notice)
    at_abort(_last_words)


def part_files() -> tuple[str | None, str | None]:
    """(the --stats-json file, the --trace file) this job asked for, or None each."""
    stats_json = os.environ.get(STATS_JSON_VARIABLE) or None
    return stats_json, TRACER.path if TRACER.on else None


def leave_part(reason: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Write this rank's part of --stats-json and --trace beside their files, marked partial
    (once: later calls return what the first wrote). Returns (files, this rank's stats rows)."""
    if _partial.left is not None:
        return _partial.left
    rows = [row for observed in _partial.unfinished for row in local_rows(observed)]
    rank, size = _partial.rank, _partial.size
    stats_json, trace = part_files()
    files = []
    header = {"partial": True, "reason": reason, "rank": rank, "ranks": size}
    if stats_json is not None and _partial.unfinished:
        files.append(_write_json(part_path(stats_json, rank), {**header, "nodes": rows}))
    if trace is not None:
        events = TRACER.take()
        files.append(
            _write_json(
                part_path(trace, rank), {**header, "displayTimeUnit": "ms", "traceEvents": events}
            )
        )
    _partial.left = (files, rows)
    _partial.unfinished.clear()
    return _partial.left


def _write_json(path: str, value: dict[str, Any]) -> str:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(value, out)
    return path


def _answer_notices() -> None:
    """Answer every rank that asked for this rank's part."""
    notices = _partial.notices
    if notices is None:
        return
    for asker, (reason,) in notices.questions():
        notices.answer(asker, leave_part(reason))


def _look_for_notice() -> None:
    """From a waiting rank's pauses: a failing rank asked for this rank's part?"""
    now = time.monotonic()
    if now < _partial.next_look:
        return
    _partial.next_look = now + _LOOK_EVERY
    _answer_notices()


def serve_notices(seconds: float) -> None:
    """Answer requests for this rank's part for ``seconds`` (while the job is ending)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        _answer_notices()
        time.sleep(0.01)


def _last_words(status: int) -> None:
    """Before this rank ends the job: leave its part, ask the others for theirs (waiting at
    most NOTICE_GRACE), and say what was left: the --stats table of every rank that answered,
    and the files."""
    if not _partial.unfinished and _partial.left is None:
        return
    notices = _partial.notices
    rank, size = _partial.rank, _partial.size
    reason = f"the job ended with status {status} (rank {rank} ended it)"
    parts = {rank: leave_part(reason)}
    if notices is not None:
        notices.ask_all((reason,))
        until = time.monotonic() + NOTICE_GRACE
        while len(parts) < size and time.monotonic() < until:
            _answer_notices()  # another rank failing at the same moment asks too
            arrived = notices.answers()
            parts.update(arrived)
            if not arrived:
                time.sleep(0.005)
    answered = sorted(parts)
    missing = [] if notices is None else [other for other in range(size) if other not in parts]
    sys.stdout.flush()
    text = []
    if os.environ.get(STATS_VARIABLE, "") not in ("", "0"):
        every = sorted((row for _, (_, r) in parts.items() for row in r), key=_node_order)
        text.append(f"geode_mpi statistics, partial ({reason}; from rank(s) {answered} of {size}):")
        text.append(format_table(every))
    written = [name for rank_ in answered for name in parts[rank_][0]]
    if written:
        text.append(f"geode_mpi: partial --stats-json/--trace parts left: {', '.join(written)}")
    if missing:
        text.append(
            f"geode_mpi: rank(s) {missing} did not answer within {NOTICE_GRACE:g} s (busy "
            "outside geode_mpi): their parts are lost"
        )
    if text:
        sys.stderr.write("\n".join(text) + "\n")
        sys.stderr.flush()


def _node_order(row: dict[str, Any]) -> int:
    return int(row["node_index"])


# -- the hang watchdog ----------------------------------------------------------------------


def rank_state(geode: Runtime) -> list[str]:
    """What this rank holds and waits for: its nodes' queues and outboxes, its transfers.

    Only reads: it runs inside waits (close() among them), where a poll or flush could send.
    """
    engine = geode.engine
    names = geode.names
    lines = []
    for index in sorted(engine.stats):
        stats = engine.stats[index]
        unacked = {names[dst]: count for dst, count in engine.unacked_by_dest(index).items()}
        line = (
            f"{names[index]}: {len(engine.inboxes[index])} message(s) queued, "
            f"{stats.received} received, {stats.sent} sent"
        )
        if unacked:
            line += f", not yet acknowledged by {unacked}"
        lines.append(line)
    lines.append(f"transport: {transport_state(geode.transport)}")
    return lines


def activity(geode: Runtime) -> int:
    """A number that changes whenever a message of this rank moves (sent, received,
    acknowledged, processed)."""
    return sum(
        stats.sent + stats.received + stats.acked + stats.acks_sent + stats.processed
        for stats in geode.engine.stats.values()
    )


def start_watchdog(geode: Runtime, timeout: float | None) -> Watchdog | None:
    """With a hang timeout (--hang-timeout), watch this Geode's waits.

    Collective: on MPI, every rank duplicates the communicator for the watchdog's messages.
    """
    if timeout is None:
        return None
    watchdog = Watchdog(
        timeout,
        lambda: rank_state(geode),
        lambda: activity(geode),
        rank_label(geode.rank, geode.size, geode.node),
        geode.transport.private_comm(),
    )
    watchdog.install()
    return watchdog


def stop_watchdog(watchdog: Watchdog | None, free: bool) -> None:
    """Stop watching: at close (``free``: collective, the communicator is freed too), or when
    the Geode is dropped on an error (the communicator is left to MPI_Finalize)."""
    if watchdog is None:
        return
    watchdog.uninstall()
    if free and watchdog.comm is not None:
        watchdog.comm.Free()
