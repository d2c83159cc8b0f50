"""Partial --stats and --trace parts, left by each rank it can reach when the job fails.

When the job fails instead of closing (an uncaught exception, ``--hang-timeout``, Ctrl-C), each
rank that can leaves its own part before the job ends, marked partial: the failing rank itself,
and the ranks it asks over a communicator of their own, which answer from their waits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from geode_mpi.base import backoff
from geode_mpi.base.failure import at_abort
from geode_mpi.core.observe_stats import (
    STATS_JSON_VARIABLE,
    STATS_VARIABLE,
    Observed,
    local_rows,
    observing,
)
from geode_mpi.core.observe_summary import every_row, stats_text
from geode_mpi.tracing import TRACER, part_path
from geode_mpi.transport import Notices

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
            backoff.notice_hook.set(_look_for_notice)
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
        parts_below = "the parts listed below" if part_files()[0] is not None else None
        text.append(stats_text(every, every_row(parts_below)))
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
