"""Partial --stats and --trace parts, left by each rank it can reach when the job fails.

When the job fails instead of closing (an uncaught exception, ``--hang-timeout``, Ctrl-C), each
rank that can leaves its own part before the job ends, marked partial: the failing ranks
themselves, and the ranks one of them asks over a communicator of their own, which answer from
their waits. One failing rank asks, and prints what was left: when several fail together (an
exception that every rank raises), a rank first waits a moment (longer the higher its rank) for
another's question, answers it and says nothing more, and of two that ask at once the lower
collects; asking and printing its own table each, 2,000 failing ranks sent 8 million messages
and printed 2,000 tables.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

from geode_mpi.base import backoff
from geode_mpi.base.failure import at_abort
from geode_mpi.base.listing import ranks_named, some_names
from geode_mpi.core.observe_stats import (
    STATS_JSON_VARIABLE,
    STATS_VARIABLE,
    Observed,
    local_rows,
    observing,
)
from geode_mpi.core.observe_summary import every_row, stats_text
from geode_mpi.tracing import TRACER, part_path, write_json
from geode_mpi.transport import Notices

# A failing rank asks the others (reason,) to leave their parts; each answers (files, rows).
NOTICE_GRACE = 2.0  # seconds a failing rank waits for the others' parts
_LOOK_EVERY = 0.02  # seconds between two looks for a notice from a waiting rank's pauses
# A failing rank r waits STAGGER log2(1 + r) s for a lower failing rank's question before it
# asks (0.55 s at rank 1,999): the lowest asks first, and the others then leave it to it.
STAGGER = 0.05
SHOWN_FILES = 4  # part files named in the line that says where they are; the others counted


class _Partial:
    """This process's Geodes whose --stats/--trace were not gathered yet, and what it left."""

    def __init__(self) -> None:
        self.unfinished: list[Observed] = []
        self.notices: Notices | None = None  # over every rank, on a communicator of its own
        self.rank = 0
        self.size = 1
        self.left: tuple[list[str], list[dict[str, Any]]] | None = None
        self.next_look = 0.0
        self.asked_by: int | None = None  # the lowest rank that asked for this rank's part


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
        files.append(write_json(part_path(stats_json, rank, size), {**header, "nodes": rows}))
    if trace is not None:
        events = TRACER.take()
        body = {**header, "displayTimeUnit": "ms", "traceEvents": events}
        files.append(write_json(part_path(trace, rank, size), body))
    _partial.left = (files, rows)
    _partial.unfinished.clear()
    return _partial.left


def _answer_notices(below: int | None = None) -> None:
    """Answer every rank that asked for this rank's part (only those below rank ``below``, if
    given: a failing rank that asks itself leaves the higher ones to find out), noting the
    lowest that asked."""
    notices = _partial.notices
    if notices is None:
        return
    for asker, (reason,) in notices.questions():
        if below is None or asker < below:
            notices.answer(asker, leave_part(reason))
        if _partial.asked_by is None or asker < _partial.asked_by:
            _partial.asked_by = asker


def _lower_asker(rank: int) -> int | None:
    """The lowest rank that asked for this rank's part so far, if it is below ``rank``."""
    asker = _partial.asked_by
    return asker if asker is not None and asker < rank else None


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
    """Before this rank ends the job: leave its part; then, unless another rank asked for it
    (`_outranked`), ask the others for theirs (waiting at most NOTICE_GRACE; a lower rank that
    asks meanwhile collects instead), and say what was left: the --stats table of every rank
    that answered, and where the files are."""
    if not _partial.unfinished and _partial.left is None:
        return
    notices = _partial.notices
    rank, size = _partial.rank, _partial.size
    reason = f"the job ended with status {status} (rank {rank} ended it)"
    parts = {rank: leave_part(reason)}
    if notices is not None:
        if _outranked(rank):
            return
        notices.ask_all((reason,))
        until = time.monotonic() + NOTICE_GRACE
        while len(parts) < size and time.monotonic() < until:
            _answer_notices(below=rank)
            lower = _lower_asker(rank)
            if lower is not None:  # it collects: leave it to it
                _wait_to_be_ended(lower)
                return
            arrived = notices.answers()
            parts.update(arrived)
            if not arrived:
                time.sleep(0.005)
    _say_what_was_left(reason, parts, size, notices is not None)


def _outranked(rank: int) -> bool:
    """A failing rank before it asks: whether another rank asked for its part already, or
    does within this rank's stagger (then it answered, and waited to be ended by the lowest
    that asked: that one collects, as a higher rank asking at the same time as a lower one
    leaves it to the lower)."""
    until = time.monotonic() + STAGGER * math.log2(1 + rank)
    while True:
        _answer_notices()
        if _partial.asked_by is not None:
            _wait_to_be_ended(_partial.asked_by)
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(0.005)


def _wait_to_be_ended(collector: int) -> None:
    """A failing rank whose part went to a lower rank ``collector``: answer lower ranks still
    (one even lower may ask too) while ``collector`` gathers the parts and ends the job; back
    to end the job itself if that did not come (2 NOTICE_GRACE later)."""
    until = time.monotonic() + 2 * NOTICE_GRACE
    while time.monotonic() < until:
        _answer_notices(below=collector)
        lower = _lower_asker(collector)
        if lower is not None:
            collector, until = lower, time.monotonic() + 2 * NOTICE_GRACE
        time.sleep(0.01)


def _say_what_was_left(
    reason: str, parts: dict[int, tuple[list[str], list[dict[str, Any]]]], size: int, asked: bool
) -> None:
    """The collecting rank's words: the --stats table of the ``parts`` that came, where their
    files are, and the ranks that did not answer (when it ``asked``)."""
    answered = sorted(parts)
    missing = [other for other in range(size) if other not in parts] if asked else []
    sys.stdout.flush()
    text = []
    if os.environ.get(STATS_VARIABLE, "") not in ("", "0"):
        every = sorted((row for _, (_, r) in parts.items() for row in r), key=_node_order)
        text.append(
            f"geode_mpi statistics, partial ({reason}; from {ranks_named(answered)} of {size}):"
        )
        parts_below = "the parts listed below" if part_files()[0] is not None else None
        text.append(stats_text(every, every_row(parts_below)))
    written = [name for rank in answered for name in parts[rank][0]]
    if written:
        leaving = [rank for rank in answered if parts[rank][0]]
        text.append(
            f"geode_mpi: partial --stats-json/--trace parts left by {ranks_named(leaving)}: "
            f"{some_names(written, SHOWN_FILES)}"
        )
    if missing:
        text.append(
            f"geode_mpi: {ranks_named(missing)} did not answer within {NOTICE_GRACE:g} s (busy "
            "outside geode_mpi): their parts are lost"
        )
    if text:
        sys.stderr.write("\n".join(text) + "\n")
        sys.stderr.flush()


def _node_order(row: dict[str, Any]) -> int:
    return int(row["node_index"])
