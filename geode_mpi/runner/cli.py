"""The command line: ``python -m geode_mpi [--version | --info] job.py [args...]``."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

from geode_mpi._version import __version__
from geode_mpi.base.launch import launcher_rank, reports_launch_error

if TYPE_CHECKING:
    import argparse

# What the runner tells every Geode the job creates (read in Geode.__init__).
RESTART_VARIABLE = "GEODE_RESTART"  # "1": restore from the newest complete checkpoint
CHECKPOINT_DIR_VARIABLE = "GEODE_CHECKPOINT_DIR"  # the directory of a job that names none
RESTART_DIR_VARIABLE = "GEODE_RESTART_DIR"  # --restart DIR: a job naming another is refused

USAGE = """\
python -m geode_mpi [options] job.py [args...]
       python -m geode_mpi [options] -m module [args...]
       python -m geode_mpi [options] -c code [args...]
       mpiexec -n 4 python -m geode_mpi job.py [args...]
       python -m geode_mpi --restart[=CHECKPOINT_DIR] job.py [args...]
       python -m geode_mpi inspect CHECKPOINT_DIR"""
PROG = "python -m geode_mpi"


def parser() -> argparse.ArgumentParser:
    """The argument parser; the job's own arguments follow the script and are left alone."""
    import argparse  # not for a plain ``job.py args``: with what it loads, 6 ms of each start

    p = argparse.ArgumentParser(
        prog="python -m geode_mpi",
        usage=USAGE,
        allow_abbrev=False,  # split_argv must know every option: --hang 30 is not --hang-timeout
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
        help="resume from the newest complete checkpoint in DIR, which must exist (alone: "
        "in the job's own checkpoint_dir or GEODE_CHECKPOINT_DIR); without one, start afresh. "
        "The word after --restart is DIR unless it is the job script (an existing file, or a "
        "name ending in .py)",
    )
    p.add_argument(
        "--stats",
        action="store_true",
        help="at the end, print a table per node on rank 0: messages and bytes in and out, "
        "queue peaks, acks, resends, retries, duplicates, dead letters, waiting and "
        "checkpoint time. Beyond 32 nodes, a summary instead: totals, each column's min, "
        "median and max with the nodes that hold them, and the nodes with dead letters, "
        "retries, drops or messages never received or acknowledged (every row: --stats-json)",
    )
    p.add_argument(
        "--stats-json",
        metavar="FILE",
        help="write every node's row as JSON to FILE, however many nodes",
    )
    p.add_argument(
        "--trace",
        metavar="FILE",
        help="record sends, receives, handlers, broadcasts and checkpoints on every rank into "
        "FILE, in the Chrome trace event format (open it in https://ui.perfetto.dev). A job "
        "that fails leaves each rank's part instead (FILE's name with .rankN), marked partial, "
        "as --stats-json does",
    )
    p.add_argument(
        "--hang-timeout",
        type=float,
        metavar="SECONDS",
        help="when a rank has waited that long with nothing arriving or leaving, print what "
        "every rank waits for and abort the job (exit status 124)",
    )
    p.add_argument(
        "--wait-notice",
        metavar="SECONDS",
        help="log a warning when a geode_mpi wait has seen nothing arrive or leave for that "
        "long (default 60; doubling after each; 0: never)",
    )
    p.add_argument(
        "--log-level",
        metavar="LEVEL",
        help="show log records from LEVEL on (DEBUG, INFO, ...), the job's own too, each "
        "labelled with its rank and node",
    )
    p.add_argument("-m", dest="module", metavar="MODULE", help="run a module as the job")
    p.add_argument(
        "-c", dest="code", metavar="CODE", help="run CODE (a string of Python) as the job"
    )
    p.add_argument("job", nargs="?", help="the job script; the job's arguments follow it")
    return p


# Options after which everything else belongs to the job, as with python itself.
_LAST = ("-m", "-c")


def is_job_script(token: str) -> bool:
    """Whether the word after a bare ``--restart`` is the job script rather than its DIR."""
    return token.endswith(".py") or os.path.isfile(token)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split argv into (geode_mpi's options and the job, the job's own arguments).

    Which options take a value comes from `parser`: everything from the job script (or
    ``-m MODULE``, ``-c CODE``) on is the job's, and ``--`` ends our options.
    """
    arity = {name: action.nargs for action in parser()._actions for name in action.option_strings}
    k = 0
    while k < len(argv):
        token = argv[k]
        if token == "--":
            return argv[:k] + argv[k + 1 : k + 2], argv[k + 2 :]
        if not token.startswith("-") or token == "-":
            return argv[: k + 1], argv[k + 1 :]
        name, inline, _ = token.partition("=")
        if token[:2] in _LAST:  # -m MODULE, -mMODULE, -c CODE
            end = k + 1 if len(token) > 2 else k + 2
            return argv[:end], argv[end:]
        nargs = arity.get(name, 0)
        if inline or name not in arity:
            k += 1  # --opt=VALUE, a flag, or unknown (argparse names it)
        elif nargs is None:
            k += 2  # --opt VALUE
        elif nargs == "?":
            following = argv[k + 1] if k + 1 < len(argv) else None
            if following is None or following.startswith("-") or is_job_script(following):
                argv = [*argv[:k], f"{name}=", *argv[k + 1 :]]  # no value: the job follows
                k += 1
            else:
                k += 2  # --restart DIR
        else:
            k += 1
    return argv, []


def first_rank() -> bool:
    """True on the rank that speaks for the job (rank 0, or no launcher), read without MPI."""
    where = launcher_rank()
    return where is None or where[0] == 0


def error(message: str, status: int = 2, prog: str = PROG) -> int:
    """Print a command-line error once per job (not once per rank); return ``status``."""
    if first_rank():
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return status


def parse_once(p: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``p.parse_args(argv)``, with what argparse prints (an error and the usage, ``--help``,
    ``--version``) printed by the first rank only, not once per rank; its exits stand."""
    if first_rank():
        return p.parse_args(argv)
    with (
        open(os.devnull, "w", encoding="utf-8") as quiet,
        contextlib.redirect_stdout(quiet),
        contextlib.redirect_stderr(quiet),
    ):
        return p.parse_args(argv)


def restart_directory(value: str) -> str | None:
    """Check ``--restart DIR``: None when DIR is a directory, else what is wrong with it."""
    if not os.path.exists(value):
        return (
            f"--restart: checkpoint directory {value!r} does not exist (give the directory "
            "the job checkpoints into, or --restart alone for the job's own checkpoint_dir)"
        )
    if not os.path.isdir(value):
        return f"--restart: {value!r} is not a directory (give a checkpoint directory)"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["inspect"]:
        return inspect(argv[1:])
    if argv and not argv[0].startswith("-"):  # a job script and its arguments, no options
        from geode_mpi.runner.run import run

        return run(argv[0], argv[1:])
    ours, job_args = split_argv(argv)
    options = parse_once(parser(), ours)
    if options.hang_timeout is not None and not options.hang_timeout > 0:
        return error(f"--hang-timeout must be > 0 seconds, got {options.hang_timeout:g}")
    if options.wait_notice is not None:
        from geode_mpi.transport.notice import notice_seconds  # (Geode()'s parser too)

        try:
            notice_seconds(options.wait_notice, "--wait-notice")
        except ValueError as exc:
            return error(str(exc))
    if options.log_level is not None:
        from geode_mpi.runner.logs import level_number

        try:
            level_number(options.log_level)
        except ValueError as exc:
            return error(str(exc))
    if options.restart:
        problem = restart_directory(options.restart)
        if problem is not None:
            return error(problem)
    from geode_mpi.core.observe import output_problem

    for option, path in (("--stats-json", options.stats_json), ("--trace", options.trace)):
        problem = None if path is None else output_problem(option, path)
        if problem is not None:
            return error(problem)
    observe = {
        "GEODE_STATS": "1" if options.stats else None,
        "GEODE_STATS_JSON": options.stats_json and os.path.abspath(options.stats_json),
        "GEODE_TRACE": options.trace and os.path.abspath(options.trace),
        "GEODE_HANG_TIMEOUT": None if options.hang_timeout is None else str(options.hang_timeout),
        "GEODE_WAIT_NOTICE": options.wait_notice and options.wait_notice.strip(),
    }
    for name, value in observe.items():
        if value:
            os.environ[name] = value  # read by every Geode the job creates
    if options.restart is not None:
        os.environ[RESTART_VARIABLE] = "1"  # every Geode the job creates restores first
        if options.restart:
            directory = os.path.abspath(options.restart)
            os.environ[CHECKPOINT_DIR_VARIABLE] = directory  # for a job that names none
            os.environ[RESTART_DIR_VARIABLE] = directory  # a job naming another one is refused
    if options.info:
        return info()
    from geode_mpi.runner.run import run

    if options.module:
        return run(options.module, job_args, kind="module", log_level=options.log_level)
    if options.code is not None:
        return run(options.code, job_args, kind="code", log_level=options.log_level)
    if not options.job:
        if first_rank():
            parser().print_usage(sys.stderr)
        return error("give a job script (or -m module, or -c code)")
    if options.job == "-":
        return error(
            "a job script read from standard input ('-') is not supported: under mpiexec only "
            "rank 0 gets standard input; save the script to a file, or give it with -c CODE"
        )
    return run(options.job, job_args, log_level=options.log_level)


def info() -> int:
    """``--info``: print on rank 0; exit status 1 when no MPI library can be loaded."""
    from geode_mpi.runner.info import MPIUnusable, info_lines, mpi_usable

    try:
        mpi_usable()
    except MPIUnusable as exc:
        if first_rank():
            print("\n".join(info_lines(mpi=False)), flush=True)
        return error(str(exc), status=1)
    from geode_mpi.runner.run import exit_status, world

    status = 0
    try:
        rank, _ = world()
    except SystemExit as exc:  # a wrong launch (printed): the facts follow, from one copy
        status, rank = exit_status(exc.code), 0 if reports_launch_error(os.environ) else 1
    lines = info_lines()  # on every rank: it asks MPI collectively how many hosts there are
    if rank == 0:
        print("\n".join(lines))
    return status


def inspect(argv: list[str]) -> int:
    """``python -m geode_mpi inspect DIR``: print what a checkpoint directory holds."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m geode_mpi inspect",
        allow_abbrev=False,
        description="Show a checkpoint directory: every checkpoint, whether it is complete and "
        "valid, and what a restart would resume from (epoch, ranks, queues, state keys).",
    )
    p.add_argument("directory", help="the checkpoint directory")
    p.add_argument("--depth", type=int, default=3, help="levels of each rank's tree to show (3)")
    options = parse_once(p, argv)
    if options.depth < 1:
        return error(f"--depth must be >= 1 (levels shown), got {options.depth}", prog=p.prog)
    if not os.path.isdir(options.directory):
        what = "is not a directory" if os.path.exists(options.directory) else "does not exist"
        # (once per job under mpiexec, as every command-line error)
        return error(f"checkpoint directory {options.directory!r} {what}", prog=p.prog)
    from geode_mpi.runner.inspect import inspect_lines

    try:
        for line in inspect_lines(options.directory, options.depth):
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left (``inspect DIR | head``): stop quietly, as cat does. Python's own
        # flush of stdout at exit would fail again, so stdout points at /dev/null from here.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what the shell reports for a writer killed by it
    return 0
