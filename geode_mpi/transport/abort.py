"""Ending the whole job when one rank fails, so the others never wait for it forever."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from types import TracebackType

from geode_mpi.errors import Terminated

_installed = False
OUTPUT_GRACE = 0.3  # seconds for the launcher to forward a failing rank's last words
TERMINATED_STATUS = 143  # 128 + SIGTERM: a job that a SIGTERM ended without its last checkpoint
# Called with the exit status before this rank ends the job (--stats and --trace leave what
# they have there); registered by the layers above.
_last_words: list[Callable[[int], None]] = []


def at_abort(hook: Callable[[int], None]) -> None:
    """Call ``hook(status)`` before this rank ends the job on a failure (once per hook)."""
    if hook not in _last_words:
        _last_words.append(hook)


def last_words(code: int) -> None:
    """Run the `at_abort` hooks once; a hook that fails is reported, not raised."""
    hooks = list(_last_words)
    _last_words.clear()
    for hook in hooks:
        try:
            hook(code)
        except Exception as exc:
            sys.stderr.write(f"geode_mpi: while ending the job: {type(exc).__name__}: {exc}\n")


def rank_label(rank: int, size: int, node: str | None = None) -> str:
    """The prefix put on every line a rank prints about a failure."""
    where = f"rank {rank}/{size}"
    return f"[{where} {node}]" if node else f"[{where}]"


def report_exception(
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
    label: str,
) -> None:
    """Print a traceback with every line prefixed by ``label``, then flush."""
    sys.stdout.flush()
    lines = "".join(traceback.format_exception(exc_type, exc, tb)).splitlines()
    text = "\n".join(f"{label} {line}" for line in lines)
    sys.stderr.write(f"{label} geode_mpi: uncaught exception, aborting the job\n{text}\n")
    sys.stderr.flush()


def report_terminated(exc: BaseException, label: str) -> None:
    """Print the one line that says a SIGTERM ended this rank's wait (`Terminated`)."""
    sys.stdout.flush()
    sys.stderr.write(
        f"{label} geode_mpi: Terminated: {exc}; ending the job with status {TERMINATED_STATUS}\n"
    )
    sys.stderr.flush()


def abort_world(code: int, quiet: bool = False) -> None:
    """Abort every rank of the job with exit status ``code`` (never returns).

    Args:
        quiet: the job's ending was already said: MPI's own abort message is not printed.
    """
    from mpi4py import MPI

    last_words(code)
    sys.stdout.flush()
    sys.stderr.flush()
    # The launcher forwards output through pipes; an abort can kill them before they drain.
    time.sleep(OUTPUT_GRACE)
    if quiet:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())
    try:
        MPI.COMM_WORLD.Abort(code)
    finally:
        os._exit(code)


def install_abort_hook(rank: int, size: int) -> None:
    """Make an uncaught exception on this rank abort the job instead of deadlocking it.

    Installed by Geode() when the job has more than one rank; the runner does the same for
    every job it starts.
    """
    global _installed
    if _installed or size <= 1:
        return
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, SystemExit):
            previous(exc_type, exc, tb)
            return
        if issubclass(exc_type, Terminated):
            report_terminated(exc, rank_label(rank, size))
            abort_world(TERMINATED_STATUS)
        report_exception(exc_type, exc, tb, rank_label(rank, size))
        abort_world(1)

    sys.excepthook = hook
    _installed = True
