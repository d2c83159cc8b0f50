"""Run a job script or module on every rank as ``__main__``; one failing rank ends the job."""

from __future__ import annotations

import os
import runpy
import sys
from types import TracebackType

from geode_mpi.core import close_all
from geode_mpi.core.registry import first_node
from geode_mpi.errors import Terminated
from geode_mpi.runner.logs import configure_logging
from geode_mpi.transport.abort import (
    TERMINATED_STATUS,
    abort_world,
    rank_label,
    report_exception,
    report_terminated,
)
from geode_mpi.transport.launch import (
    WrongPMIError,
    check_slurm_pmi,
    prepare_mpi_environment,
    under_launcher,
)


def world() -> tuple[int, int]:
    """(rank, size) of this process; (0, 1) without a launcher (MPI is not started then).

    Raises:
        SystemExit: srun started several tasks with the wrong PMI (status 2, after the
            error is printed once, by task 0).
    """
    launched = dict(os.environ)  # before MPI starts and may add variables of its own
    if not under_launcher():
        rank, size = 0, 1
    else:
        prepare_mpi_environment()
        from mpi4py import MPI

        rank, size = MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    try:
        check_slurm_pmi(launched, size)
    except WrongPMIError as exc:
        if launched.get("SLURM_PROCID", "0") == "0":  # one copy, not one per task
            print(f"geode_mpi: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return rank, size


def exit_status(code: object) -> int:
    """The process exit status that ``sys.exit(code)`` stands for."""
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code & 0xFF
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


def run(target: str, args: list[str], *, module: bool = False, log_level: str | None = None) -> int:
    """Run ``target`` (a script path, or a module name with ``module=True``) as ``__main__``.

    Returns:
        The exit status for this rank. With several ranks, a failure does not return: it
        aborts the whole job with that status after printing the traceback, labelled.
    """
    rank, size = world()
    try:
        configure_logging(log_level, rank, size)
    except ValueError as exc:
        print(f"python -m geode_mpi: error: {exc}", file=sys.stderr)
        return 2
    sys.argv = [target, *args]
    try:
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            if not os.path.exists(target):
                print(f"geode_mpi: job script {target!r} does not exist", file=sys.stderr)
                return 2
            sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            runpy.run_path(target, run_name="__main__")
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
        return TERMINATED_STATUS
    except BaseException as exc:
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
        report_exception(type(exc), exc, _job_frames(exc.__traceback__), _label(rank, size))
        if size > 1:
            abort_world(status)
        return status
    close_all()
    return 0
