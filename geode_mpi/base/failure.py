"""How a failing rank says so: the label on its lines, its last words, its report.

Pure Python: ending the job itself (MPI_Abort) is the transport's `abort_world`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType

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


def ends_well(exc: BaseException | None) -> bool:
    """Whether ``exc`` is ``sys.exit()`` or ``sys.exit(0)``: the job's end, as its last line's."""
    if not isinstance(exc, SystemExit):
        return False
    return exc.code is None or (isinstance(exc.code, int) and exc.code == 0)


def report_exception(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    label: str,
    thread: str | None = None,
) -> None:
    """Print a traceback with every line prefixed by ``label``, then flush.

    Args:
        thread: the name of the thread it ended, when not the main thread.
    """
    import traceback  # here: 0.12 MB a rank that a job ending well never needs (issue 15)

    sys.stdout.flush()
    lines = "".join(traceback.format_exception(exc_type, exc, tb)).splitlines()
    text = "\n".join(f"{label} {line}" for line in lines)
    where = "" if thread is None else f" in thread {thread!r}"
    sys.stderr.write(f"{label} geode_mpi: uncaught exception{where}, aborting the job\n{text}\n")
    sys.stderr.flush()


def report_terminated(exc: BaseException, label: str) -> None:
    """Print the one line that says a SIGTERM ended this rank's wait (`Terminated`)."""
    sys.stdout.flush()
    sys.stderr.write(
        f"{label} geode_mpi: Terminated: {exc}; ending the job with status {TERMINATED_STATUS}\n"
    )
    sys.stderr.flush()
