"""The Geodes a process has open: held until closed, closed in creation order at exit."""

from __future__ import annotations

import atexit
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geode_mpi.core.geode import Geode

# Open Geodes are held here until closed, so that one the job dropped still delivers what it
# sent; at interpreter exit they are closed in creation order (the same on every rank).
_open: list[Geode] = []
_first_node: list[str] = []
# Geodes closed by close() with messages still queued: said at exit if nobody took them.
_closed_early: list[weakref.ref[Geode]] = []


def register(geode: Geode) -> None:
    """Hold ``geode`` until it is closed."""
    _open.append(geode)
    if not _first_node:
        _first_node.append(geode.node)


def unregister(geode: Geode) -> None:
    """Stop holding ``geode`` (it closed)."""
    _open[:] = [other for other in _open if other is not geode]


def first_geode() -> Geode | None:
    """The oldest Geode this process still has open (None when there is none)."""
    return _open[0] if _open else None


def first_node() -> str | None:
    """The node of the first Geode this process created (for labelling its output)."""
    return _first_node[0] if _first_node else None


def note_closed(geode: Geode) -> None:
    """``geode`` was closed with messages queued: check again at exit (if it still exists)."""
    _closed_early.append(weakref.ref(geode))


def close_all(timeout: float | None = None) -> None:
    """The job's end: close every Geode still open in this process, oldest first, and warn
    about the messages its nodes never received (and those of Geodes closed earlier)."""
    for geode in list(_open):
        geode._end(timeout)
    _open.clear()
    for ref in _closed_early:
        closed = ref()
        if closed is not None:
            closed._report_unreceived()
    _closed_early.clear()


atexit.register(close_all)
