"""Run a job script or module on every rank as ``__main__``; one failing rank ends the job."""

from __future__ import annotations

import builtins
import faulthandler
import io
import os
import runpy
import signal
import sys
from types import TracebackType
from typing import Literal

from geode_mpi.base.failure import (
    TERMINATED_STATUS,
    last_words,
    rank_label,
    report_exception,
    report_terminated,
)
from geode_mpi.base.launch import (
    WrongPMIError,
    check_launch,
    library_line,
    prepare_mpi_environment,
    reports_launch_error,
    under_launcher,
)
from geode_mpi.core import close_all
from geode_mpi.core.observe import serve_notices
from geode_mpi.core.registry import first_node
from geode_mpi.errors import Terminated
from geode_mpi.runner.logs import configure_logging
from geode_mpi.transport.abort import abort_world, give_back_thread_hook, install_abort_hook
from geode_mpi.transport.watchdog import in_asyncio, job_file


def world() -> tuple[int, int]:
    """(rank, size) of this process; (0, 1) without a launcher (MPI is not started then).

    Raises:
        SystemExit: srun started several tasks with the wrong PMI, or a launcher of another
            MPI than mpi4py's started several ranks (status 2, after the error is printed
            once, by task 0 and the launcher's rank 0).
    """
    launched = dict(os.environ)  # before MPI starts and may add variables of its own
    library = ""
    if not under_launcher():
        rank, size = 0, 1
    else:
        prepare_mpi_environment()
        from mpi4py import MPI

        rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
        library = library_line(MPI.Get_library_version())
    try:
        check_launch(launched, size, library)
    except WrongPMIError as exc:
        if reports_launch_error(launched):  # one copy, not one per task
            print(f"geode_mpi: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return rank, size


def exit_status(code: object) -> int:
    """The process exit status that ``sys.exit(code)`` stands for.

    An integer is taken modulo 256, as the operating system does (``sys.exit(-1)``: 255),
    except that a non-zero one never becomes 0: ``sys.exit(256)`` gives 1, so a failing rank
    still ends the job and the job still fails.
    """
    if code is None:
        return 0
    if isinstance(code, int):
        status = code & 0xFF
        return 1 if code and not status else status
    print(code, file=sys.stderr)
    return 1


def _job_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop the runner's and runpy's own frames from the top of a traceback."""
    while tb is not None and (
        tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__)
        or "runpy" in tb.tb_frame.f_code.co_filename
    ):
        tb = tb.tb_next
    return tb


def _label(rank: int, size: int) -> str:
    return rank_label(rank, size, first_node())


INTERRUPT_GRACE = 1.0  # seconds a rank other than 0 leaves rank 0 to end an interrupted job
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a job ended by Ctrl-C


def _where(exc: BaseException) -> str:
    """`` in job.py:12``: the job's own innermost frame where ``exc`` met it ("" if none).

    An interrupt that ends ``asyncio.run`` comes out of asyncio's runner, raised anew after
    it cancelled the main task: the job's line is then the ``await`` the cancellation met,
    in the traceback of the `asyncio.CancelledError` it carries as its context.
    """
    found, innermost = _job_frame(exc.__traceback__)
    context = exc.__context__
    for _ in range(3):  # (the runner's CancelledError, the task's, the one the await met)
        if not in_asyncio(innermost) or type(context).__name__ != "CancelledError":
            break
        assert context is not None
        inner, innermost = _job_frame(context.__traceback__)
        found = inner or found
        context = context.__context__
    return found


def _job_frame(tb: TracebackType | None) -> tuple[str, str]:
    """The job's own innermost frame of a traceback (`` in job.py:12``, "" if none), and the
    file of its innermost frame of all."""
    found = innermost = ""
    while tb is not None:
        innermost = tb.tb_frame.f_code.co_filename
        if job_file(innermost):
            found = f" in {innermost}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found, innermost


def interrupted(rank: int, size: int, exc: KeyboardInterrupt) -> int:
    """Ctrl-C: one line for the whole job, not a traceback per rank; status 130.

    A launcher forwards Ctrl-C to every rank: rank 0 says so and ends the job (after --stats
    and --trace left what they have); the others wait a moment to be ended by it, and speak
    only if it does not come (when the interrupt reached this rank alone).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt this
    line = (
        f"{_label(rank, size)} geode_mpi: interrupted (Ctrl-C){_where(exc)}, "
        f"ending the job with status {INTERRUPTED}"
    )
    if size == 1:
        last_words(INTERRUPTED)
        sys.stdout.flush()
        print(line, file=sys.stderr, flush=True)
        return INTERRUPTED
    if rank != 0:
        serve_notices(INTERRUPT_GRACE)
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    abort_world(INTERRUPTED, quiet=True)
    return INTERRUPTED  # not reached


def _run_code(code: str) -> None:
    """``-c CODE``: run CODE as ``__main__``, as ``python -c`` does."""
    compiled = compile(code, "<string>", "exec")
    exec(compiled, {"__name__": "__main__", "__builtins__": builtins})


def whole_lines() -> None:
    """Write this rank's stdout and stderr a whole line at a time.

    mpiexec merges every rank's output into one stream. With ``PYTHONUNBUFFERED`` (or ``-u``),
    ``print("rank", 0)`` writes each piece separately, so two ranks' lines came out spliced
    ("rankrank 1 of 2" and " 0 of 2"); one write per line keeps lines whole.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=False)


def _enable_faulthandler() -> None:
    """A fatal signal (SIGSEGV; SIGBUS: a page of shared memory that /dev/shm has no room for)
    prints where each thread was, not only the launcher's "Bus error (signal 7)": to
    sys.stderr, else (a notebook's or a capturing harness's, with no file descriptor) to the
    process's own stderr, else not at all."""
    if faulthandler.is_enabled():
        return
    for stream in (sys.stderr, sys.__stderr__):
        try:
            faulthandler.enable(stream, all_threads=True)  # type: ignore[arg-type]
            return
        except (AttributeError, ValueError, OSError, RuntimeError, io.UnsupportedOperation):
            continue


def run(
    target: str,
    args: list[str],
    *,
    kind: Literal["script", "module", "code"] = "script",
    module: bool = False,
    log_level: str | None = None,
) -> int:
    """Run ``target`` as ``__main__`` on this rank.

    Args:
        target: a script path (``kind="script"``), a module name (``kind="module"``, or
            ``module=True``) or Python source (``kind="code"``, as ``python -c``).
        args: the job's arguments (``sys.argv[1:]``).
        log_level: see `geode_mpi.runner.logs.configure_logging`.

    Returns:
        The exit status for this rank. With several ranks, a failure does not return: it
        aborts the whole job with that status after printing the traceback, labelled.
    """
    kind = "module" if module else kind
    rank, size = world()
    _enable_faulthandler()
    install_abort_hook(rank, size, lambda: _label(rank, size))  # (a thread's exception too)
    try:
        return _run_job(target, args, kind, log_level, rank, size)
    finally:
        give_back_thread_hook()  # (one process, which may go on: a notebook's run())


def _run_job(
    target: str,
    args: list[str],
    kind: Literal["script", "module", "code"],
    log_level: str | None,
    rank: int,
    size: int,
) -> int:
    """`run` from the moment the rank knows its place in the job."""
    if size > 1:
        whole_lines()
    try:
        configure_logging(log_level, rank, size)
    except ValueError as exc:
        if rank == 0:
            print(f"python -m geode_mpi: error: {exc}", file=sys.stderr)
        return 2
    sys.argv = ["-c" if kind == "code" else target, *args]
    try:
        if kind == "module":
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        elif kind == "code":
            _run_code(target)
        else:
            if not os.path.exists(target):
                if rank == 0:  # once for the job, not once per rank
                    print(f"geode_mpi: job script {target!r} does not exist", file=sys.stderr)
                return 2
            sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            runpy.run_path(target, run_name="__main__")
    except KeyboardInterrupt as exc:
        return interrupted(rank, size, exc)
    except SystemExit as exc:
        status = exit_status(exc.code)
        if status != 0:
            if size > 1:
                sys.stdout.flush()
                sys.stderr.write(
                    f"{_label(rank, size)} geode_mpi: sys.exit({exc.code!r}), ending the job "
                    f"with status {status}\n"
                )
                sys.stderr.flush()
                abort_world(status)
            return status
    except Terminated as exc:  # a SIGTERM ended a wait: one line, not a traceback per rank
        report_terminated(exc, _label(rank, size))
        if size > 1:
            abort_world(TERMINATED_STATUS)
        last_words(TERMINATED_STATUS)  # --stats / --trace leave what they have
        return TERMINATED_STATUS
    except BaseException as exc:
        report_exception(type(exc), exc, _job_frames(exc.__traceback__), _label(rank, size))
        if size > 1:
            abort_world(1)
        last_words(1)  # --stats / --trace leave what they have
        return 1
    try:
        close_all()
    except KeyboardInterrupt as exc:
        return interrupted(rank, size, exc)
    return 0
