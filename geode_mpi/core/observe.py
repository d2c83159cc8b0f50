"""What a job did: per-node statistics gathered at the end (--stats), and trace events (--trace)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.errors import GeodeTimeoutError
from geode_mpi.tracing import TRACER, flow_id, merge_parts, now_us, write_part
from geode_mpi.transport.abort import rank_label
from geode_mpi.transport.watchdog import Watchdog, transport_state

if TYPE_CHECKING:
    from geode_mpi.core.geode import Geode
    from geode_mpi.message import Message

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


# -- tracing (called only when TRACER.on) ---------------------------------------------------


def trace_send(
    geode: Geode, stamp: Any, message: Message, meta: bytes, frames: Sequence[Any], begun: float
) -> None:
    """A send slice on the source node, with an arrow towards the destination's receive."""
    message_id, seq, _, src, dst = stamp
    nbytes = len(meta) + sum(frame.nbytes for frame in frames)
    TRACER.span(
        f"send {type(message).__name__}",
        src,
        begun,
        {"id": message_id, "dest": geode._names[dst], "seq": seq, "bytes": nbytes},
        (flow_id(message_id, dst),),
    )


def trace_publish(
    topic: str, message_id: int, source: int, subscribers: Sequence[int], begun: float, nbytes: int
) -> None:
    """A publish slice on the publisher, with an arrow towards each subscriber's receive."""
    TRACER.span(
        f"publish {topic}",
        source,
        begun,
        {"id": message_id, "subscribers": len(subscribers), "bytes": nbytes},
        tuple(flow_id(message_id, sub) for sub in subscribers),
    )


def trace_receive(index: int, message: Message, what: str, begun: float | None = None) -> None:
    """A receive (or handler) slice on node ``index``, where the message's arrow ends."""
    if message.id is None:
        return
    TRACER.span(
        what,
        index,
        now_us() if begun is None else begun,
        {"id": message.id, "source": message.source, "seq": message.seq},
        flow_in=flow_id(message.id, index),
    )


# -- statistics -----------------------------------------------------------------------------


def local_rows(geode: Geode) -> list[dict[str, Any]]:
    """This rank's nodes' counters, with the rank's checkpoint figures on each row."""
    checkpointer = geode._checkpointer
    rows = []
    for index in sorted(geode._engine.stats):
        row = geode._engine.snapshot(index).as_dict()
        row["node_index"] = index
        row["rank"] = geode.rank
        row["sent_mb"] = row["sent_bytes"] / 1e6
        row["received_mb"] = row["received_bytes"] / 1e6
        row["checkpoints"] = 0 if checkpointer is None else checkpointer.taken
        row["checkpoint_seconds"] = 0.0 if checkpointer is None else checkpointer.seconds
        rows.append(row)
    return rows


def job_rows(geode: Geode) -> list[dict[str, Any]]:
    """Every node's row, in node order (collective over the job's ranks)."""
    parts = geode._transport.allgather(local_rows(geode))
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


def finish_job(geode: Geode, timeout: float | None) -> bool:
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
    transport = geode._transport
    # Every rank first arrives (a barrier posted once: a close() retried after a timeout
    # waits on the same one); then the drain and gathers below find every rank there.
    if geode._arrived is None:
        geode._arrived = transport.all_entered()
    deadline = None if timeout is None else time.monotonic() + timeout
    if not transport.wait(geode._arrived, deadline):
        raise GeodeTimeoutError(
            f"close() on rank {geode.rank} timed out after {timeout:g} s: waiting for the "
            "other ranks to call close()"
        )
    transport.drain()
    if stats or stats_json:
        rows = job_rows(geode)
        if geode.rank == 0:
            if stats:
                sys.stdout.flush()
                print(f"geode_mpi statistics ({geode.size} rank(s)):", file=sys.stderr)
                print(format_table(rows), file=sys.stderr, flush=True)
            if stats_json:
                with open(stats_json, "w", encoding="utf-8") as out:
                    json.dump({"ranks": geode.size, "nodes": rows}, out, indent=1)
    if TRACER.on and TRACER.path is not None:
        # Each rank writes its own part; rank 0 then merges them one by one, so no rank
        # ever holds the whole job's events.
        part = write_part(TRACER.path, TRACER.rank, TRACER.take())
        parts = transport.allgather(part)
        if geode.rank == 0:
            merge_parts(TRACER.path, parts)
    return True


# -- the hang watchdog ----------------------------------------------------------------------


def rank_state(geode: Geode) -> list[str]:
    """What this rank holds and waits for: its nodes' queues and outboxes, its transfers.

    Only reads: it runs inside waits (close() among them), where a poll or flush could send.
    """
    engine = geode._engine
    names = geode._names
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
    lines.append(f"transport: {transport_state(geode._transport)}")
    return lines


def activity(geode: Geode) -> int:
    """A number that changes whenever a message of this rank moves (sent, received,
    acknowledged, processed)."""
    return sum(
        stats.sent + stats.received + stats.acked + stats.acks_sent + stats.processed
        for stats in geode._engine.stats.values()
    )


def start_watchdog(geode: Geode, timeout: float | None) -> Watchdog | None:
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
        geode._transport.private_comm(),
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
