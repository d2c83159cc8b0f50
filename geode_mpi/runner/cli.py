"""The command line: ``python -m geode_mpi [--version | --info] job.py [args...]``."""

from __future__ import annotations

import argparse
import os
import sys

from geode_mpi._version import __version__

USAGE = """\
python -m geode_mpi [options] job.py [args...]
       python -m geode_mpi [options] -m module [args...]
       mpiexec -n 4 python -m geode_mpi job.py [args...]
       python -m geode_mpi --restart [CHECKPOINT_DIR] job.py [args...]
       python -m geode_mpi inspect CHECKPOINT_DIR"""


def parser() -> argparse.ArgumentParser:
    """The argument parser; the job's own arguments follow the script and are left alone."""
    p = argparse.ArgumentParser(
        prog="python -m geode_mpi",
        usage=USAGE,
        description="Run a geode_mpi job on every MPI rank as __main__. An uncaught "
        "exception on any rank prints its traceback labelled with the rank and ends the "
        "whole job.",
    )
    p.add_argument("--version", action="version", version=f"geode_mpi {__version__}")
    p.add_argument(
        "--info", action="store_true", help="print versions, MPI library, thread level, ranks"
    )
    p.add_argument(
        "--restart",
        nargs="?",
        const="",
        metavar="DIR",
        help="resume from the newest complete checkpoint in DIR (default: the job's own "
        "checkpoint_dir or GEODE_CHECKPOINT_DIR); without one, start afresh",
    )
    p.add_argument(
        "--stats",
        action="store_true",
        help="at the end, print a table per node on rank 0: messages and bytes in and out, "
        "queue peaks, acks, resends, retries, duplicates, dead letters, waiting and "
        "checkpoint time",
    )
    p.add_argument("--stats-json", metavar="FILE", help="write the same table as JSON to FILE")
    p.add_argument(
        "--trace",
        metavar="FILE",
        help="record sends, receives, handlers, broadcasts and checkpoints on every rank into "
        "FILE, in the Chrome trace event format (open it in https://ui.perfetto.dev)",
    )
    p.add_argument(
        "--hang-timeout",
        type=float,
        metavar="SECONDS",
        help="when a rank has waited that long with nothing arriving or leaving, print what "
        "every rank waits for and abort the job (exit status 124)",
    )
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="show log records from LEVEL on (DEBUG, INFO, ...), the job's own too, each "
        "labelled with its rank and node",
    )
    p.add_argument("-m", dest="module", metavar="MODULE", help="run a module as the job")
    p.add_argument("job", nargs="?", help="the job script; the job's arguments follow it")
    return p


# Options of ours that take a value; everything from the job script (or -m MODULE) on is the job's.
_VALUED = {"-m", "--stats-json", "--trace", "--hang-timeout", "--log-level"}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split argv into (geode_mpi's options and the job, the job's own arguments)."""
    k = 0
    while k < len(argv):
        token = argv[k]
        if token == "--":
            return argv[:k] + argv[k + 1 : k + 2], argv[k + 2 :]
        if token in _VALUED:
            k += 2
            if token == "-m":
                return argv[:k], argv[k:]
            continue
        if token == "--restart":
            if k + 1 < len(argv) and os.path.isdir(argv[k + 1]):
                k += 2  # --restart DIR: the directory is its value, not the job
                continue
            argv = [*argv[:k], "--restart=", *argv[k + 1 :]]  # no DIR: the job follows
        if not token.startswith("-"):
            return argv[: k + 1], argv[k + 1 :]
        k += 1
    return argv, []


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["inspect"]:
        return inspect(argv[1:])
    ours, job_args = split_argv(argv)
    options = parser().parse_args(ours)
    if options.hang_timeout is not None and not options.hang_timeout > 0:
        print(
            f"python -m geode_mpi: error: --hang-timeout must be > 0 seconds, got "
            f"{options.hang_timeout:g}",
            file=sys.stderr,
        )
        return 2
    if options.log_level is not None:
        from geode_mpi.runner.logs import level_number

        try:
            level_number(options.log_level)
        except ValueError as exc:
            print(f"python -m geode_mpi: error: {exc}", file=sys.stderr)
            return 2
    observe = {
        "GEODE_STATS": "1" if options.stats else None,
        "GEODE_STATS_JSON": options.stats_json and os.path.abspath(options.stats_json),
        "GEODE_TRACE": options.trace and os.path.abspath(options.trace),
        "GEODE_HANG_TIMEOUT": None if options.hang_timeout is None else str(options.hang_timeout),
    }
    for name, value in observe.items():
        if value:
            os.environ[name] = value  # read by every Geode the job creates
    if options.restart is not None:
        os.environ["GEODE_RESTART"] = "1"  # every Geode the job creates restores first
        if options.restart:
            os.environ["GEODE_CHECKPOINT_DIR"] = options.restart
    if options.info:
        from geode_mpi.runner.info import info_lines
        from geode_mpi.runner.run import world

        rank, _ = world()
        if rank == 0:
            print("\n".join(info_lines()))
        return 0
    from geode_mpi.runner.run import run

    if options.module:
        return run(options.module, job_args, module=True, log_level=options.log_level)
    if not options.job:
        parser().print_usage(sys.stderr)
        print("python -m geode_mpi: error: give a job script (or -m module)", file=sys.stderr)
        return 2
    return run(options.job, job_args, log_level=options.log_level)


def inspect(argv: list[str]) -> int:
    """``python -m geode_mpi inspect DIR``: print what a checkpoint directory holds."""
    p = argparse.ArgumentParser(
        prog="python -m geode_mpi inspect",
        description="Show a checkpoint directory: every checkpoint, whether it is complete and "
        "valid, and what a restart would resume from (epoch, ranks, queues, state keys).",
    )
    p.add_argument("directory", help="the checkpoint directory")
    p.add_argument("--depth", type=int, default=3, help="levels of each rank's tree to show (3)")
    options = p.parse_args(argv)
    from geode_mpi.runner.inspect import inspect_lines

    print("\n".join(inspect_lines(options.directory, options.depth)))
    return 0
