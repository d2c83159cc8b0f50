"""The Geodes a process has open: held until closed, closed in creation order at exit."""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Callable
from typing import NamedTuple, Protocol

from geode_mpi.base.interrupts import hold_interrupts, release_interrupts


class Located(Protocol):
    """Where a Geode runs (what `first_geode` tells the progress printer)."""

    rank: int
    size: int

    @property
    def node(self) -> str: ...


class _Open(NamedTuple):
    geode: Located
    end: Callable[[float | None], None]  # close it as the job's end
    report: Callable[[], None]  # warn about what its nodes never received
    held: bool  # it holds back Ctrl-C in geode_mpi's own code (`hold_interrupts`)


# Open Geodes are held here until closed, so that one the job dropped still delivers what it
# sent; at interpreter exit they are closed in creation order (the same on every rank).
_open: list[_Open] = []
_first_node: list[str] = []
# Geodes closed by close() with messages still queued: said at exit if nobody took them.
_closed_early: list[weakref.WeakMethod[Callable[[], None]]] = []


def register(
    geode: Located, end: Callable[[float | None], None], report: Callable[[], None]
) -> None:
    """Hold ``geode`` until it is closed; at exit, ``end(timeout)`` closes it as the job's
    end, and ``report()`` warns about what its nodes never received."""
    # (a caught Ctrl-C must not cut a message in half: base/interrupts.py)
    _open.append(_Open(geode, end, report, hold_interrupts()))
    if not _first_node:
        _first_node.append(geode.node)


def unregister(geode: Located) -> None:
    """Stop holding ``geode`` (it closed)."""
    if any(entry.geode is geode and entry.held for entry in _open):
        release_interrupts()
    _open[:] = [entry for entry in _open if entry.geode is not geode]


def first_geode() -> Located | None:
    """The oldest Geode this process still has open (None when there is none)."""
    return _open[0].geode if _open else None


def first_node() -> str | None:
    """The node of the first Geode this process created (for labelling its output)."""
    return _first_node[0] if _first_node else None


def note_closed(report: Callable[[], None]) -> None:
    """A Geode was closed with messages queued: ``report()`` (a method of it) warns about them
    at exit if they are still there then (if the Geode still exists); once, however often it
    is noted."""
    if all(ref() != report for ref in _closed_early):
        _closed_early.append(weakref.WeakMethod(report))


def forget_closed(report: Callable[[], None]) -> None:
    """Drop the note of ``report`` (`note_closed`): its Geode said what it holds already."""
    _closed_early[:] = [ref for ref in _closed_early if ref() != report]


def close_all(timeout: float | None = None) -> None:
    """The job's end: close every Geode still open in this process, oldest first, and warn
    about the messages its nodes never received (and those of Geodes closed earlier)."""
    for entry in list(_open):
        entry.end(timeout)
    _open.clear()
    for ref in _closed_early:
        report = ref()
        if report is not None:
            report()
    _closed_early.clear()


atexit.register(close_all)
