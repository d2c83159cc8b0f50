"""What a job did, gathered at close: the --stats table and the --trace file of every rank.

The table's rows are in `observe_stats`, the parts a failing job leaves in `observe_partial`,
the hang watchdog in `observe_hang`; this module re-exports their names (their home before).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from geode_mpi.base.shards import FILES_PER_DIR
from geode_mpi.core.observe_hang import (
    activity,
    rank_state,
    start_notice,
    start_watchdog,
    stop_notice,
    stop_watchdog,
)
from geode_mpi.core.observe_partial import (
    NOTICE_GRACE,
    _partial,
    leave_part,
    part_files,
    serve_notices,
    start_observing,
)
from geode_mpi.core.observe_stats import (
    COLUMNS,
    STATS_JSON_VARIABLE,
    STATS_VARIABLE,
    Observed,
    check_outputs,
    format_table,
    job_rows,
    local_rows,
    observing,
    output_problem,
    to_rank0,
)
from geode_mpi.core.observe_summary import every_row, stats_text
from geode_mpi.errors import GeodeTimeoutError
from geode_mpi.tracing import (
    TRACER,
    merge_parts,
    part_path,
    parts_dir,
    remove_empty_parts_dir,
    write_part,
)

# (re-exported: their home before the split)
__all__ = [
    "COLUMNS",
    "NOTICE_GRACE",
    "STATS_JSON_VARIABLE",
    "STATS_VARIABLE",
    "Observed",
    "activity",
    "check_outputs",
    "finish_job",
    "format_table",
    "job_rows",
    "leave_part",
    "local_rows",
    "observing",
    "output_problem",
    "part_files",
    "parts_beyond",
    "rank_state",
    "serve_notices",
    "start_observing",
    "start_notice",
    "start_watchdog",
    "stop_notice",
    "stop_watchdog",
]


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
    outputs = [path for path in (stats_json, TRACER.path if TRACER.on else None) if path]
    if _partial.left is None:  # the parts an earlier failed run left (not one this run left)
        for path in outputs:
            _remove_stale_parts(path, geode.rank, geode.size)
    if stats or stats_json:
        # (no deadline, as the barrier above has: every rank is here, and a rank that gave up
        # in a gather could not retry close(): its drain would wait for ranks that are gone)
        rows = job_rows(observed)
        if rows is not None:  # (rank 0)
            if stats:
                sys.stdout.flush()
                print(f"geode_mpi statistics ({geode.size} rank(s)):", file=sys.stderr)
                print(stats_text(rows, every_row(stats_json)), file=sys.stderr, flush=True)
            if stats_json:
                with open(stats_json, "w", encoding="utf-8") as out:
                    json.dump({"ranks": geode.size, "nodes": rows}, out, indent=1)
    if TRACER.on and TRACER.path is not None:
        # Each rank writes its own part; rank 0 then merges them one by one, so no rank
        # ever holds the whole job's events.
        part = write_part(TRACER.path, TRACER.rank, TRACER.take(), geode.size)
        parts = to_rank0(transport, part, None)  # (no deadline: as the rows')
        if parts is not None:  # (rank 0)
            merge_parts(TRACER.path, parts)
    if geode.rank == 0:  # after a gather: every rank removed its stale part (if any)
        for path in outputs:
            remove_empty_parts_dir(path)
    if observed in _partial.unfinished:  # gathered: nothing partial to leave for it any more
        _partial.unfinished.remove(observed)
    return True


def _remove_stale_parts(path: str, rank: int, size: int) -> None:
    """Remove the parts of ``path`` an earlier failed run left: each rank its own (beside
    ``path``, or in its directory of parts: that run may have had more ranks, or fewer), rank
    0 also those of the ranks this job does not have."""
    stale = {part_path(path, rank), part_path(path, rank, FILES_PER_DIR + 1)}
    if rank == 0:
        stale.update(parts_beyond(path, size))
    for name in stale:
        with contextlib.suppress(OSError):
            os.remove(name)


def parts_beyond(path: str, size: int) -> list[str]:
    """The parts of ``path`` (`part_path`) of ranks ``size`` and above that are on disk,
    beside ``path`` or in its directory of parts (`tracing.parts_dir`)."""
    name = os.path.basename(part_path(path, 0))
    prefix, ext = name[: name.rindex(".rank0") + len(".rank")], os.path.splitext(name)[1]
    top = parts_dir(path)
    folders = [os.path.dirname(path) or "."]
    with contextlib.suppress(OSError):
        folders += [os.path.join(top, group) for group in sorted(os.listdir(top))]
    found = []
    for folder in folders:
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                number = name[len(prefix) : len(name) - len(ext)]
                ours = name.startswith(prefix) and name.endswith(ext) and number.isdigit()
                if ours and int(number) >= size:
                    found.append(os.path.join(folder, name) if folder != "." else name)
    return sorted(found)
