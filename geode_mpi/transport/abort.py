"""Ending the whole job when one rank fails, so the others never wait for it forever."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from types import TracebackType

from geode_mpi.base.failure import (
    TERMINATED_STATUS,
    last_words,
    rank_label,
    report_exception,
    report_terminated,
)
from geode_mpi.errors import Terminated

_installed = False
OUTPUT_GRACE = 0.3  # seconds for the launcher to forward a failing rank's last words


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
    _unlink_segments()
    try:
        MPI.COMM_WORLD.Abort(code)
    finally:
        os._exit(code)


def _unlink_segments() -> None:
    """Remove the MPI library's shared-memory files of this job on this host: MPICH unlinks
    them at `MPI_Finalize`, and leaves them in /dev/shm after an abort (a few MiB of RAM each
    until the machine restarts). On MPICH's network path (``MPIR_CVAR_NOLOCAL=1``) each rank
    maps only its own ``mpich_shm_<job>_<rank>``: the others', which the abort kills before
    they can remove theirs, are found by the job's prefix (never another job's: another id).
    Their mappings stay valid."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[5] for line in maps if _SEGMENTS in line}  # (its path)
    except OSError:  # (not Linux)
        return
    for path in paths | _same_job(paths):  # (another rank may be first, or " (deleted)")
        with contextlib.suppress(OSError):
            os.unlink(path)


def _same_job(paths: set[str]) -> set[str]:
    """The files of /dev/shm named as the other ranks' of the job of ``paths``
    (``mpich_shm_<job>_<rank>``: the same ``<job>``, any ``<rank>``)."""
    folder = os.path.dirname(_SEGMENTS)
    jobs = {_job_prefix(os.path.basename(path)) for path in paths}
    jobs.discard(None)
    if not jobs:
        return set()
    try:
        names = os.listdir(folder)
    except OSError:
        return set()
    return {os.path.join(folder, name) for name in names if _job_prefix(name) in jobs}


def _job_prefix(name: str) -> str | None:
    """``mpich_shm_<job>_`` of a segment's file name ``mpich_shm_<job>_<rank>``; None for a
    name of another shape (whose other ranks' files cannot be told from another job's)."""
    base = os.path.basename(_SEGMENTS)
    job, _, rank = name[len(base) :].rpartition("_")
    if not name.startswith(base) or not job or not rank.isdigit():
        return None
    return f"{base}{job}_"


_SEGMENTS = "/dev/shm/mpich_shm_"


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
