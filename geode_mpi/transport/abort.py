"""Ending the whole job when one rank fails, so the others never wait for it forever."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

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


def install_abort_hook(rank: int, size: int, label: Callable[[], str] | None = None) -> None:
    """Make an uncaught exception on this rank, in any thread, abort the job instead of
    deadlocking it: its traceback, labelled (``label()``, default ``[rank 1/4]``), then the
    --stats/--trace parts, then the whole job ends with status 1.

    Installed by Geode() when the job has more than one rank; the runner installs it for every
    job it starts, with the node in the label, and in one process too: a thread's exception
    then ends the process as the main thread's does (the main thread's the runner ends itself).
    A thread's `SystemExit` stays silent, as in Python; a ``threading.excepthook`` the job set
    before decides alone (one it sets later replaces this one).
    """
    global _installed
    if _installed or (size <= 1 and label is None):  # (one process: the runner's alone)
        return
    labelled = label or (lambda: rank_label(rank, size))
    in_threads = _thread_hook(threading.excepthook, labelled, size)
    if size <= 1:
        _one_process.append((in_threads, threading.excepthook))
    threading.excepthook = in_threads
    _installed = True
    if size <= 1:
        return
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, SystemExit):
            previous(exc_type, exc, tb)
            return
        _fail(exc_type, exc, tb, labelled(), None, size)

    sys.excepthook = hook


def give_back_thread_hook() -> None:
    """Put back the ``threading.excepthook`` that `install_abort_hook` replaced in one process
    (if its own is still there): the runner's job ended, and the process goes on (``run()``
    called from a notebook), where a thread's error must not end it."""
    global _installed
    for ours, replaced in _one_process:
        if threading.excepthook is ours:
            threading.excepthook = replaced
        _installed = False
    _one_process.clear()


ThreadHook = Callable[[threading.ExceptHookArgs], Any]
# (the hook installed in one process, the one it replaced): `give_back_thread_hook`
_one_process: list[tuple[ThreadHook, ThreadHook]] = []


def _thread_hook(previous: ThreadHook, label: Callable[[], str], size: int) -> ThreadHook:
    """The ``threading.excepthook`` of `install_abort_hook`."""
    own = previous is not threading.__excepthook__  # (the job's: it decides)

    def hook(args: threading.ExceptHookArgs) -> None:
        if own or issubclass(args.exc_type, SystemExit):
            previous(args)
            return
        name = "?" if args.thread is None else args.thread.name
        tb = args.exc_traceback
        while tb is not None and tb.tb_frame.f_code.co_filename == threading.__file__:
            tb = tb.tb_next  # (the thread's start: Thread.run, _bootstrap_inner)
        with _ending:  # (a second failing thread waits here for the end the first makes)
            _fail(args.exc_type, args.exc_value, tb, label(), name, size)

    return hook


_ending = threading.Lock()


def _fail(
    exc_type: type[BaseException],
    exc: BaseException | None,
    tb: TracebackType | None,
    label: str,
    thread: str | None,
    size: int,
) -> None:
    """Say how this rank failed and end the job (never returns): `Terminated`, status 143;
    another exception, status 1. In one process (no launcher to abort), the process ends."""
    if issubclass(exc_type, Terminated):
        assert exc is not None
        report_terminated(exc, label)
        status = TERMINATED_STATUS
    else:
        report_exception(exc_type, exc, tb, label, thread)
        status = 1
    if size > 1:
        abort_world(status)
    last_words(status)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
