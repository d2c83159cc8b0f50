"""A per-process record of sends, receives, broadcasts and checkpoints, as Chrome trace events.

Off unless ``GEODE_TRACE`` names a file (``python -m geode_mpi --trace FILE`` sets it): then
every Geode records into `TRACER`, and `Geode.close` gathers all ranks' events into FILE, which
Perfetto (https://ui.perfetto.dev) or chrome://tracing opens as a timeline: one process per
rank, one thread per node, an arrow from each send to its receive. Call sites test
``TRACER.on`` first, so tracing that is off costs one attribute read.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from geode_mpi.base.shards import sharded

TRACE_VARIABLE = "GEODE_TRACE"
MAX_EVENTS = 200_000  # per rank (about 60 MB of JSON); beyond it events are counted, not kept
_FLOW_MASK = (1 << 53) - 1  # flow ids stay exact in JavaScript numbers


def now_us() -> float:
    """Wall-clock microseconds: one clock for every rank of a job on one host (NTP-synced
    hosts agree to well under a millisecond)."""
    return time.time() * 1e6


def flow_id(message_id: int, dest: int) -> int:
    """The id joining a message's send to its receive at ``dest`` (a topic's message has one
    receive per subscriber, so the destination is part of it)."""
    return (message_id * 1_000_003 + dest) & _FLOW_MASK


class Tracer:
    """The events of this process; see the module docstring."""

    def __init__(self) -> None:
        self.on = False
        self.path: str | None = None
        self.rank = 0
        self.events: list[tuple[Any, ...]] = []
        self.lost = 0
        self._names: dict[int, str] = {}

    def start(self, rank: int, size: int, names: Sequence[str], path: str | None = None) -> None:
        """Record (for a new Geode) if ``path`` (default: the GEODE_TRACE variable) is set."""
        path = path if path is not None else os.environ.get(TRACE_VARIABLE) or None
        self.on = path is not None
        if path is None:
            return
        self.path = path
        self.rank = rank
        self._names = {index: name for index, name in enumerate(names) if index % size == rank}

    def span(
        self,
        name: str,
        tid: int,
        start: float,
        args: dict[str, Any] | None = None,
        flow_out: Sequence[int] = (),
        flow_in: int | None = None,
        cat: str = "geode",
    ) -> None:
        """A slice from ``start`` (`now_us`) to now on node ``tid``, with arrows leaving it
        (``flow_out`` ids) or arriving in it (``flow_in``)."""
        if len(self.events) >= MAX_EVENTS:
            self.lost += 1
            return
        end = now_us()
        self.events.append((name, cat, tid, start, max(end - start, 1.0), args, flow_out, flow_in))

    def take(self) -> list[dict[str, Any]]:
        """This process's events so far in the Chrome trace event format; forgets them."""
        events = self.chrome_events()
        self.events = []
        self.lost = 0
        return events

    def chrome_events(self) -> list[dict[str, Any]]:
        """This process's events in the Chrome trace event format."""
        pid = self.rank
        out: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"rank {pid}"}},
            {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}},
        ]
        for index, name in sorted(self._names.items()):
            out.append(
                {"ph": "M", "name": "thread_name", "pid": pid, "tid": index, "args": {"name": name}}
            )
        for name, cat, tid, ts, dur, args, flow_out, flow_in in self.events:
            event: dict[str, Any] = {
                "ph": "X", "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": ts, "dur": dur
            }  # fmt: skip
            if args:
                event["args"] = args
            out.append(event)
            for flow in flow_out:
                out.append(
                    {"ph": "s", "name": "message", "cat": "flow", "id": flow, "pid": pid,
                     "tid": tid, "ts": ts}
                )  # fmt: skip
            if flow_in is not None:
                out.append(
                    {"ph": "f", "bp": "e", "name": "message", "cat": "flow", "id": flow_in,
                     "pid": pid, "tid": tid, "ts": ts + dur / 2}
                )  # fmt: skip
        if self.lost:
            out.append(
                {"ph": "i", "s": "p", "name": f"{self.lost} events not recorded (limit)",
                 "pid": pid, "tid": 0, "ts": now_us()}
            )  # fmt: skip
        return out


def part_path(path: str | os.PathLike[str], rank: int, ranks: int = 1) -> str:
    """Where one rank of ``ranks`` leaves its partial part of ``path`` when the job fails:
    ``trace.json`` -> ``trace.rank3.json``, beside it (`in_parts`)."""
    root, ext = os.path.splitext(os.fspath(path))
    return in_parts(path, f"{os.path.basename(root)}.rank{rank}{ext or '.json'}", rank, ranks)


def parts_dir(path: str | os.PathLike[str]) -> str:
    """The directory of the parts of ``path`` past `FILES_PER_DIR` ranks: ``trace.parts``."""
    return os.path.splitext(os.fspath(path))[0] + ".parts"


def in_parts(path: str | os.PathLike[str], name: str, rank: int, ranks: int) -> str:
    """Where rank ``rank``'s file ``name`` about ``path`` goes: beside ``path`` up to
    `FILES_PER_DIR` ranks, else in ``trace.parts/ranks-NNNN/`` (`base.shards`: 2,000 parts
    in the directory of ``path`` made it slow to list, and on some file systems to write)."""
    where = sharded(name, rank, ranks)
    folder = os.path.dirname(os.fspath(path)) if where == name else parts_dir(path)
    return os.path.join(folder, where)


def write_json(path: str, value: object) -> str:
    """Write ``value`` as JSON to ``path`` (its directory made if needed); return ``path``."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        json.dump(value, out)
    return path


def write_part(
    path: str | os.PathLike[str], rank: int, events: list[dict[str, Any]], ranks: int = 1
) -> str:
    """Write one rank's events beside ``path`` (`in_parts`); return the part's file name."""
    name = f"{os.path.basename(os.fspath(path))}.rank{rank}"
    return write_json(in_parts(path, name, rank, ranks), events)


def merge_parts(path: str | os.PathLike[str], parts: Sequence[str]) -> None:
    """Join the ranks' parts into one Chrome trace file at ``path`` (written aside, then
    renamed), one part in memory at a time; the parts are removed."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write('{"displayTimeUnit": "ms", "traceEvents": [')
        first = True
        for part in parts:
            with open(part, encoding="utf-8") as inp:
                events = json.load(inp)
            for event in events:
                out.write(("" if first else ",\n") + json.dumps(event))
                first = False
            os.remove(part)
        out.write("]}\n")
    os.replace(tmp, path)
    remove_empty_parts_dir(path)


def remove_empty_parts_dir(path: str | os.PathLike[str]) -> None:
    """Remove ``trace.parts`` (`parts_dir`) and its ``ranks-NNNN`` sub-directories, those
    that are empty (parts left by a failed run stay)."""
    top = parts_dir(path)
    try:
        groups = os.listdir(top)
    except OSError:
        return
    for group in groups:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(top, group))
    with contextlib.suppress(OSError):
        os.rmdir(top)


TRACER = Tracer()
