"""A long wait is never silent: one warning when a wait has seen nothing move for a while.

Local only (no message to another rank, nothing aborted): when a wait of geode_mpi has seen
nothing arrive or leave on this rank for the notice time (``GEODE_WAIT_NOTICE``, 60 s unless
set; 0 turns it off), it logs one warning on the ``geode_mpi`` logger saying which call waits,
where in the job, for what, and what this rank holds. The threshold then doubles for the
process (60, 120, 240 s...), so that a master that rightly waits minutes for each task says
so a handful of times, not once a task. Stuck means as for --hang-timeout (`Stillness`:
nothing of this rank's sent, received, acknowledged or processed, while it waits). The pauses
call it only from their sleeps (`Backoff.pause`), never from the hot path.
"""

from __future__ import annotations

import os
import reprlib
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from geode_mpi.base import backoff
from geode_mpi.base.failure import rank_label
from geode_mpi.base.gate import locked, own_thread
from geode_mpi.base.launch import launcher_rank
from geode_mpi.base.logger import log
from geode_mpi.transport.abort import abort_world
from geode_mpi.transport.stillness import OpenGeodes, Stillness, states
from geode_mpi.transport.watchdog import HANG_STATUS, in_asyncio, job_file, waiting_for, waiting_in

NOTICE_VARIABLE = "GEODE_WAIT_NOTICE"
DEFAULT_NOTICE = 60.0
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LOCKED = locked(lambda self: None).__code__  # the wrapper of a locked call: not the call made
_PLAIN = {"priority": 0}  # arguments not named when they have this value
_LONGEST_ARGUMENT = 40  # characters of an argument's repr in the call named


def wait_notice(environ: Any = None) -> float | None:
    """The GEODE_WAIT_NOTICE setting in seconds (60 when unset; None when 0: off).

    Raises:
        ValueError: the setting is not a number of seconds >= 0.
    """
    raw = (os.environ if environ is None else environ).get(NOTICE_VARIABLE, "").strip()
    return DEFAULT_NOTICE if raw == "" else notice_seconds(raw, NOTICE_VARIABLE)


def notice_seconds(raw: str, name: str) -> float | None:
    """A notice time as ``name`` (the variable, or the runner's option) gives it: seconds,
    finite and >= 0; None for 0 (off). The one parser of both.

    Raises:
        ValueError: not such a number.
    """
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a number of seconds >= 0 (0: off), got {raw!r}")
    return seconds or None


class Threshold:
    """The idle time that makes a wait speak, for the whole process: it doubles each time a
    wait spoke, and starts over only when the setting changes."""

    def __init__(self) -> None:
        self.setting: float | None = None
        self.seconds = float("inf")

    def start(self, setting: float) -> float:
        """The threshold now, for a notice time of ``setting`` seconds."""
        if setting != self.setting:
            self.setting = setting
            self.seconds = setting
        return self.seconds

    def spoke(self) -> float:
        """Double the threshold (a wait just spoke); the new one."""
        self.seconds *= 2
        return self.seconds


THRESHOLD = Threshold()


class WaitNotice:
    """One open Geode's part in the notice of a long wait (`LISTENING`, `Backoff`'s hook).

    Args:
        after: the notice time (seconds).
        describe: this Geode's state, as lines (what is queued, in flight, expected).
        activity: a number that changes whenever a message of this Geode moves.
        rank: this rank, as the text names it.
        hang: the --hang-timeout in force (None: not set).
        owners: the objects of this Geode that its calls run in (the Geode, its runtime):
            a wait in a frame of one of them is this Geode's.
    """

    def __init__(
        self,
        after: float,
        describe: Callable[[], list[str]],
        activity: Callable[[], int],
        rank: int,
        hang: float | None = None,
        owners: tuple[object, ...] = (),
    ) -> None:
        self.after = after
        self.describe = describe
        self.activity = activity
        self.rank = rank
        self.hang = hang
        self.owners = owners

    @property
    def still(self) -> Stillness:
        """The process's measure of stillness (over every open Geode)."""
        return LISTENING.still

    def install(self) -> None:
        """Count this Geode in the notice, which every sleeping pause of every wait calls."""
        THRESHOLD.start(self.after)
        LISTENING.add(self)

    def uninstall(self) -> None:
        """Stop counting this Geode (the notice goes on for the others still open)."""
        LISTENING.remove(self)

    def paused(self, what: Callable[[], str] | None) -> None:
        """The hook of a sleeping pause (`Listening.paused`)."""
        LISTENING.paused(what)


class Listening(OpenGeodes[WaitNotice]):
    """The notice of a long wait for the process: every open Geode counts (a message of any
    of them that moves is progress), and the notice names the waiting Geode's state."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()  # two threads' waits: one speaks, the other waits longer

    def hook(self) -> None:
        backoff.long_wait_hook.set(self.paused)

    def unhook(self) -> None:
        backoff.long_wait_hook.unset(self.paused)

    def paused(self, what: Callable[[], str] | None) -> None:
        """The hook of a sleeping pause: once this rank has been stuck for the threshold, log
        the notice and double the threshold. Never for geode_mpi's own threads (`internal`):
        their waits are not the job's, which may compute meanwhile."""
        if threading.current_thread() in _INTERNAL:
            return
        members = self.members
        stuck = self.still.paused(time.monotonic())
        if not members or stuck < THRESHOLD.seconds or not self.lock.acquire(blocking=False):
            return
        try:
            if stuck >= THRESHOLD.seconds:  # (not if another thread spoke meanwhile)
                following = THRESHOLD.spoke()
                log.warning("%s", text(stuck, what, following, members))
        finally:
            self.lock.release()


LISTENING = Listening()
_INTERNAL: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def internal(thread: threading.Thread) -> None:
    """Mark ``thread`` as geode_mpi's own (an executor's): its waits give no notice."""
    _INTERNAL.add(thread)


def text(
    idle: float, what: Callable[[], str] | None, following: float, members: tuple[WaitNotice, ...]
) -> str:
    """The notice: how long, the call and where, for what, the waiting Geode's state (every
    open Geode's when the wait is none of theirs), what to do."""
    call, selves = call_waiting()
    waiting = [  # the Geode whose object the wait runs in, innermost first
        member
        for inner in selves
        for member in members
        if any(own is inner for own in member.owners)
    ]
    first = (waiting or members)[0]
    where = waiting_in()
    lines = [
        f"nothing has arrived or left on rank {first.rank} for {idle:.0f} s; it waits in {call}"
    ]
    lines += [f"  at {line}" for line in where]
    if what is not None:
        lines.append(f"  {waiting_for(what)}")
    lines += states(waiting[:1] or members, "  ")
    if first.hang is None:
        ending = "if the job is stuck, --hang-timeout SECONDS reports every rank's wait and ends it"
    else:
        ending = (
            f"if nothing moves for {first.hang:g} s, --hang-timeout reports every rank's "
            "wait and ends the job"
        )
    lines.append(
        f"  {ending} (next notice after a wait of {following:g} s; "
        f"{NOTICE_VARIABLE}=0 turns these off)"
    )
    return "\n".join(lines)


def call_waiting() -> tuple[str, list[object]]:
    """The geode_mpi call that the job's code made and that waits now, with the arguments it
    was given (``receive(source='node1')``; ``a geode_mpi call`` when no job frame made it:
    close() at the end of the job, say), and the ``self`` of every frame, innermost first."""
    import inspect  # here: only a notice needs it

    frame: FrameType | None = inspect.currentframe()
    selves = []
    while frame is not None:
        if "self" in frame.f_locals:
            selves.append(frame.f_locals["self"])
        frame = frame.f_back
    frame = inspect.currentframe()
    call = None
    while frame is not None:
        code = frame.f_code
        if in_asyncio(code.co_filename):
            return "an await of a geode_mpi call", selves  # (the tasks' own lines say which)
        if job_file(code.co_filename):
            break
        if code is not _LOCKED and code.co_filename.startswith(_PACKAGE):
            call = frame
        frame = frame.f_back
    if call is None or frame is None:
        return "a geode_mpi call", selves
    if call.f_code.co_name == "__exit__":
        return "close() (at the end of the with block)", selves
    return f"{call.f_code.co_name}({', '.join(_arguments(call))})", selves


def _arguments(frame: FrameType) -> list[str]:
    """The arguments given to the function of ``frame`` (not self, nor the None, False and
    ``priority=0`` that a call is given unless told otherwise), each shown by `shown`."""
    code = frame.f_code
    count = code.co_argcount + code.co_kwonlyargcount
    given = frame.f_locals
    listed = []
    for name in code.co_varnames[:count]:
        value = given.get(name)
        if (
            name != "self"
            and value is not None
            and value is not False
            and value != _PLAIN.get(name)
        ):
            listed.append(f"{name}={shown(value)}")
    return listed


def shown(value: object) -> str:
    """``value`` in a few dozen characters, never building more of its text than that: bytes,
    arrays and containers by their type and size past a few items (a 200 MiB bytes's repr
    would take 800 MiB)."""
    return _Short().repr(value)


class _Short(reprlib.Repr):
    """reprlib's shortening, with bytes-like values, arrays and long containers told by type
    and size (reprlib's own would build their whole repr, or sort them, first)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = _LONGEST_ARGUMENT

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, (bytes, bytearray)) and len(x) > _LONGEST_ARGUMENT // 4:
            return f"<{type(x).__name__} of {len(x):,} bytes>"
        if isinstance(x, memoryview):
            return f"<memoryview of {x.nbytes:,} bytes>"
        shape = getattr(x, "shape", None)
        if isinstance(shape, tuple) and hasattr(x, "dtype") and hasattr(x, "nbytes"):
            return f"<{type(x).__name__} {x.dtype} {shape}: {x.nbytes:,} bytes>"
        if isinstance(x, (list, tuple, dict, set, frozenset)) and len(x) > self.maxlist:
            return f"<{type(x).__name__} of {len(x):,} items>"
        return super().repr1(x, level)


class StartupNotice:
    """Geode()'s start-up collectives, watched from a thread of their own: they block in MPI
    (which lets other threads run meanwhile) until every rank has made its Geode, so no pause
    of a wait would speak. Past the notice time it logs that Geode() waits for the other
    ranks; past the hang timeout (when set) it says so and aborts the job, as the watchdog
    does. `begin` once MPI is initialised (mpi4py holds the GIL in MPI_Init, which waits for
    the other ranks' starts too: a timer started before could not run, then counted that
    time); `cancel` once the collectives return.

    Args:
        after: the notice time (None: no notice).
        hang: the --hang-timeout (None: not set).
    """

    def __init__(self, after: float | None, hang: float | None) -> None:
        self.after = after
        self.hang = hang
        self.done = threading.Event()
        self.started = time.monotonic()
        self.thread: threading.Thread | None = None

    def begin(self) -> None:
        """MPI is initialised: start the clock and the thread."""
        if self.after is not None:
            THRESHOLD.start(self.after)
        self.started = time.monotonic()
        self.thread = own_thread(
            threading.Thread(target=self._watch, name="geode-startup", daemon=True)
        )
        self.thread.start()

    def cancel(self) -> None:
        """The collectives returned (or failed): stop watching (the thread ends before this
        returns: while it runs, the Geode's calls would take their paths for several threads)."""
        self.done.set()
        if self.thread is not None:
            self.thread.join()

    def _watch(self) -> None:
        while True:
            due = [THRESHOLD.seconds] if self.after is not None else []
            if self.hang is not None:
                due.append(self.hang)
            if self.done.wait(max(0.0, self.started + min(due) - time.monotonic())):
                return
            waited = time.monotonic() - self.started
            if self.hang is not None and waited >= self.hang:
                self._abort(waited)
                return
            following = THRESHOLD.spoke()
            log.warning(
                "%s (next notice after %g s; %s=0 turns these off)",
                self.text(waited),
                following,
                NOTICE_VARIABLE,
            )

    def text(self, waited: float) -> str:
        """What Geode() waits for, and the rule it waits on."""
        launched = launcher_rank()
        rank = "this rank" if launched is None else f"rank {launched[0]}"
        return (
            f"Geode() on {rank} has waited {waited:.0f} s for the other ranks to make their "
            "Geode: every rank must create its Geode (the same number of times, in the same "
            "order)"
        )

    def _abort(self, waited: float) -> None:
        """--hang-timeout: say what Geode() waits for, and end the job (never returns)."""
        launched = launcher_rank()
        label = "" if launched is None else rank_label(*launched) + " "
        sys.stdout.flush()
        sys.stderr.write(
            f"{label}geode_mpi: no progress for {waited:.1f} s (--hang-timeout "
            f"{self.hang:g}): {self.text(waited)}; aborting the job\n"
        )
        sys.stderr.flush()
        abort_world(HANG_STATUS)
