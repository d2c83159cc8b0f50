"""--hang-timeout: a rank that waits that long with nothing moving reports every rank, aborts.

Every wait loop in geode_mpi pauses through `Backoff`; once a wait has been idle for a while its
pauses call the hook installed here. When one wait has seen nothing arrive or leave for
``timeout`` seconds, this rank asks every other rank, over a communicator of its own, what it is
waiting for: a census down a tree of the ranks (`transport.census`), 2 (P - 1) messages. Ranks
inside a geode_mpi wait or call answer from there, whatever the hang check of their own is doing;
the ranks the tree did not hear from are asked once more directly, and a rank that still does
not answer is busy outside geode_mpi (computing, or in an MPI call of the job's own). This rank
prints all the answers as one report, then aborts the job. Rank 0 asks first; another rank asks
one grace period later (rank r, 0.05 r s more), and only if no lower rank asked meanwhile.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geode_mpi.base import backoff, collective
from geode_mpi.base.failure import last_words
from geode_mpi.base.listing import ranks_named
from geode_mpi.transport.abort import abort_world
from geode_mpi.transport.census import Census
from geode_mpi.transport.hang_report import RankPart, merged
from geode_mpi.transport.stillness import OpenGeodes, Stillness, sections

if TYPE_CHECKING:  # importing mpi4py.MPI at run time would initialise MPI
    from mpi4py import MPI

HANG_VARIABLE = "GEODE_HANG_TIMEOUT"
HANG_STATUS = 124  # the exit status of a job the watchdog ended (as timeout(1) uses)
SERVE_EVERY = 0.01  # seconds between two looks for the censuses' messages
STAGGER = 0.05  # seconds between the times two ranks would ask, after rank 0
# A pause this recent means the rank is inside a wait now. Generous: under load a waiting rank
# may not run for a while between its pause and its next poll, and a rank that left its wait
# and runs geode_mpi calls since moves messages, which resets its time stuck anyway.
IN_WAIT = 1.0


def hang_timeout(environ: Any = None) -> float | None:
    """The GEODE_HANG_TIMEOUT setting in seconds (None when unset or 0).

    Raises:
        ValueError: the setting is not a positive number.
    """
    raw = (os.environ if environ is None else environ).get(HANG_VARIABLE, "").strip()
    if raw in ("", "0"):
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{HANG_VARIABLE} must be a number of seconds > 0, got {raw!r}")
    return seconds


def waiting_in() -> list[str]:
    """Where this rank waits: the innermost frames of the job's own code (not geode_mpi's).

    In a thread that runs an asyncio event loop, the thread's stack ends in the loop's own
    code: there it is each waiting task's innermost ``await`` line of the job's code instead.
    """
    import traceback  # here: 0.12 MB a rank that a job without a hang never needs (issue 15)

    awaiting = _awaiting_in()
    if awaiting:
        return awaiting
    frames = [frame for frame in traceback.extract_stack() if job_file(frame.filename)]
    return [
        f"{frame.filename}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
        for frame in frames[-2:]
    ]


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MOST_TASKS = 4  # tasks named in a report; the others are counted


def job_file(filename: str) -> bool:
    """Whether a frame of ``filename`` is the job's own (not geode_mpi's, nor the standard
    library's: runpy, asyncio, threading...): what a hang report and the runner's Ctrl-C line
    name."""
    path = os.path.abspath(filename)
    return (
        not path.startswith(_PACKAGE)
        and "runpy" not in filename
        and not filename.startswith("<frozen ")
        and not (path.startswith(_standard_library()) and "-packages" + os.sep not in path)
    )


_STANDARD: tuple[str, ...] = ()


def _standard_library() -> tuple[str, ...]:
    """The directories of the standard library (their site-packages excepted by the caller)."""
    global _STANDARD
    if not _STANDARD:
        import sysconfig

        paths = sysconfig.get_paths()
        _STANDARD = tuple(
            {os.path.abspath(paths[key]) + os.sep for key in ("stdlib", "platstdlib")}
        )
    return _STANDARD


def in_asyncio(filename: str) -> bool:
    """Whether ``filename`` is asyncio's own."""
    return os.sep + "asyncio" + os.sep in os.path.abspath(filename)


def _awaiting_in() -> list[str]:
    """Each pending task's innermost ``await`` in the job's code, when this thread runs an
    asyncio event loop (empty otherwise)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:  # never loaded: no event loop (and no import just to look)
        return []
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return []
    import linecache

    lines = []
    for task in sorted(asyncio.all_tasks(loop), key=lambda task: task.get_name()):
        frames = [frame for frame in _await_chain(task.get_coro()) if job_file(frame[0])]
        if frames:
            filename, lineno, name = frames[-1]
            code = linecache.getline(filename, lineno).strip()
            lines.append(f"{filename}:{lineno} in {name}: {code} (task {task.get_name()})")
    if len(lines) > _MOST_TASKS:
        lines[_MOST_TASKS:] = [f"... and {len(lines) - _MOST_TASKS} more waiting task(s)"]
    return lines


def _await_chain(coro: Any) -> list[tuple[str, int, str]]:
    """(file, line, function) of a suspended coroutine and of each one it awaits, outermost
    first: the chain a task's own `get_stack` stops at the first of."""
    chain = []
    seen = 0
    while coro is not None and seen < 100:
        seen += 1
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        chain.append((code.co_filename, frame.f_lineno, code.co_name))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def waiting_for(what: Callable[[], str]) -> str:
    """The line of a hang report or a notice that says what a wait is for (`Backoff.what`)."""
    said = what()
    return said if said.startswith("waiting for ") else f"waiting for {said}"


def transport_state(transport: object) -> str:
    """What a transport has in flight: unfinished sends and half-received messages (MPI; a
    topic's fan-out is point-to-point sends too); nothing for a transport that delivers inside
    send()."""
    summary = getattr(transport, "pending_summary", None)
    return str(summary()) if summary is not None else "nothing in flight"


class Watchdog:
    """A Geode's part in this rank's hang check (`WATCHING`: every Geode open in the process).

    A rank is *stuck* as `Stillness` says, over every open Geode: a message of any of them
    that moves is progress. Only a waiting rank decides that the job hangs; a rank running
    geode_mpi calls without waiting answers that it is running.

    Args:
        timeout: seconds a rank may be stuck before it asks the others.
        describe: this Geode's state, as lines (what is queued, in flight, expected).
        activity: a number that changes whenever a message of this Geode moves.
        label: this rank's label for the report (``[rank 1/4 node1]``).
        comm: an MPI communicator for the watchdog alone (None: one process, nobody to ask).
        node: this rank's own node, which its lines of a report merged with the other ranks'
            call "its node" (`hang_report`).
    """

    def __init__(
        self,
        timeout: float,
        describe: Callable[[], list[str]],
        activity: Callable[[], int],
        label: str,
        comm: MPI.Intracomm | None = None,
        node: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.node = node
        self.describe = describe
        self.activity = activity
        self.label = label
        self.comm = comm
        self.census = None if comm is None else Census(comm)
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        # Rank 0 asks first; the others give it a grace period (it may be busy elsewhere), and
        # each a little more than the rank below it, whose question then reaches it first.
        grace = self._grace()
        self.ask_after = timeout + (grace + min(STAGGER * self.rank, grace) if self.rank else 0.0)
        self._next_serve = 0.0
        self._next_hang_check = 0.0

    @property
    def still(self) -> Stillness:
        """The process's measure of stillness (over every open Geode)."""
        return WATCHING.still

    def install(self) -> None:
        """Count this Geode in the hang check, which every sleeping pause of every wait and the
        progress engine call."""
        WATCHING.add(self)

    def uninstall(self) -> None:
        """Stop counting this Geode (the check goes on for the others still open; the requests
        still in flight are left to MPI)."""
        WATCHING.remove(self)

    def report(self, stuck: float | None) -> RankPart:
        """This rank's part of the report, unlabelled: how long it waits (in whole seconds:
        ranks alike merge), where, on what, and the state of every Geode open in it (a
        section each)."""
        if stuck is None:
            lines = ["running (in geode_mpi calls, not waiting)"]
        else:
            lines = [f"waiting {stuck:.0f} s with nothing arriving or leaving"]
        lines += [f"  in {where}" for where in waiting_in()]
        what = WATCHING.what
        if stuck is not None and what is not None:
            lines.append(f"  {waiting_for(what)}")
        seconds = 0.0 if stuck is None else stuck
        held = sections(WATCHING.members or (self,), "  ")
        return RankPart(seconds, self.label, lines, self.node, held)

    def check(self, now: float, stuck: float) -> None:
        """A wait's pause, ``stuck`` seconds into this rank's stillness: past the timeout, ask
        (`_hung`)."""
        if stuck >= self.ask_after and now >= self._next_hang_check:
            self._hung(stuck)

    def serve(self, now: float, stuck: float | None) -> None:
        """Every SERVE_EVERY: pass on and answer the censuses (never put off: a rank that
        does not answer in time is reported as busy outside geode_mpi)."""
        if self.census is None or now < self._next_serve:
            return
        self._next_serve = now + SERVE_EVERY
        self.census.serve(lambda: self.report(stuck))

    def _hung(self, stuck: float) -> None:
        """Ask every rank; if none has seen anything move within the timeout either, print
        every answer and abort the job (never returns); else look again later."""
        text = [
            f"{self.label} geode_mpi: no progress for {stuck:.1f} s (--hang-timeout "
            f"{self.timeout:g}): asked every rank what it waits for; aborting the job"
        ]
        if self.census is None or self.size == 1:
            text += [f"{self.label} {line}" for line in self.report(stuck).text()]
        else:
            collected = self._collect()
            if collected is None:  # a lower rank asks: it decides
                self._next_hang_check = time.monotonic() + 2 * self._grace() + 1.0
                return
            answers, silent, messages = collected
            moving = [part.stuck for part in answers.values() if part.stuck < self.timeout]
            if moving:  # some rank saw messages move recently, or runs: not a hang (yet)
                self._next_hang_check = time.monotonic() + self.timeout - min(moving)
                return
            text += merged({**answers, self.rank: self.report(stuck)}, self.size)
            text.append(
                f"{self.label} asked {self.size - 1} rank(s) down a tree of depth "
                f"{collective.depth(self.size)}: {messages} watchdog message(s) in all"
            )
            if silent:
                text.append(
                    f"{self.label} no answer within {2 * self._grace():g} s from "
                    f"{ranks_named(silent)}: busy outside geode_mpi (computing, or in an MPI "
                    "call of the job's own), or stuck there"
                )
        sys.stdout.flush()
        sys.stderr.write("\n".join(text) + "\n")
        sys.stderr.flush()
        if self.comm is None:
            last_words(HANG_STATUS)
            sys.stderr.flush()
            os._exit(HANG_STATUS)
        abort_world(HANG_STATUS)

    def _grace(self) -> float:
        """How long to wait for the other ranks' answers (down the tree; then again for the
        ranks it did not hear from, directly)."""
        return min(max(2.0, self.timeout / 10), 10.0)

    def _collect(self) -> tuple[dict[int, RankPart], list[int], int] | None:
        """Every other rank's (stuck seconds, report), the ranks that did not answer in time,
        and the messages it took; None when a lower rank asks too (it collects instead)."""
        census = self.census
        assert census is not None  # asked only when there are other ranks
        if census.outranked(2 * self._grace() + 1.0):
            return None
        key = census.start(self._grace())
        direct = False
        while True:
            if census.done(key):
                _, missing, _ = census.gathered(key)
                if not missing or direct:
                    break
                census.ask_directly(key, missing, self._grace())  # below a silent rank
                direct = True
            WATCHING.serve(time.monotonic(), self.still.stuck(time.monotonic()))
            if census.outranked(2 * self._grace() + 1.0):
                census.drop(key)
                return None
            backoff.look_for_notices()  # a rank ending the job meanwhile asks for --trace parts
            time.sleep(SERVE_EVERY)
        answers, silent, messages = census.gathered(key)
        census.drop(key)
        return answers, silent, messages


class Watching(OpenGeodes[Watchdog]):
    """The hang check of the process: every open Geode's `Watchdog`, called from every sleeping
    pause of every wait (`idle`) and from the progress engine (`tick`) while any is open.

    Each Geode's watchdog answers the censuses on its own communicator; the one whose
    communicator spans the most ranks (the first made, of equals) asks.
    """

    def __init__(self) -> None:
        super().__init__()
        self.what: Callable[[], str] | None = None  # what the last wait that paused is for

    def hook(self) -> None:
        backoff.idle_hook.set(self.idle)
        backoff.activity_hook.set(self.tick)

    def unhook(self) -> None:
        backoff.idle_hook.unset(self.idle)
        backoff.activity_hook.unset(self.tick)

    def idle(self, seconds: float, what: Callable[[], str] | None = None) -> None:
        """The hook of a sleeping pause (``seconds`` since the wait began or saw an event;
        ``what`` the wait is for, `Backoff.what`)."""
        self.what = what
        now = time.monotonic()
        stuck = self.still.paused(now)
        self.serve(now, stuck)
        members = self.members
        if members:
            max(members, key=lambda member: member.size).check(now, stuck)

    def tick(self) -> None:
        """The progress engine's hook: answer questions while the rank runs without waiting."""
        now = time.monotonic()
        still = self.still
        still.look(now)
        self.serve(now, still.stuck(now) if now - still.last_pause < IN_WAIT else None)

    def serve(self, now: float, stuck: float | None) -> None:
        """Answer the censuses of every open Geode's watchdog (`Watchdog.serve`)."""
        for member in self.members:
            member.serve(now, stuck)


WATCHING = Watching()
