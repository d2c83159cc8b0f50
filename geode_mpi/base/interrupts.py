"""Ctrl-C held back while it lands inside geode_mpi's own code, so that a caught
KeyboardInterrupt never cuts a message in half-way (taken from MPI, not yet queued; queued,
not yet returned; sent, not yet recorded).

While a Geode is open, SIGINT in the main thread goes to `_on_sigint` (installed only over
Python's own `signal.default_int_handler`, given back when the last Geode closes). It looks at
the frame the interrupt came in and outward, past the frames of the standard library, numpy,
mpi4py, h5py and numcodecs (code geode_mpi calls into), to the first other one:

- a wait's pause (`interruptible`: where a blocking call sleeps, yields or blocks for the
  gate, and the wait loops between their looks), code outside geode_mpi (the job's own, a
  handler run inside a wait), or the first instruction of a geode_mpi call made from there
  (nothing done yet): it raises KeyboardInterrupt there and then, as Python's own handler
  does;
- any other frame of geode_mpi: the interrupt is held back and sent again (to the main thread)
  `RETRY` seconds later, until it lands outside; after `HOLD_MAX` seconds it is raised
  wherever it lands (a call that blocked outside a registered wait must stay interruptible).

Nothing runs on the hot path: the code objects of the pauses are registered once at import.
Inside ``asyncio.run`` (whose own handler asyncio left out, ours being in place) the interrupt
does what asyncio's handler does: the first cancels the main task, a second raises.
"""

from __future__ import annotations

import _thread
import opcode
import os
import signal
import sys
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

RETRY = 1e-3  # seconds before an interrupt held back is sent again
HOLD_MAX = 2.0  # seconds an interrupt may be held back in all

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_STDLIB = os.path.dirname(os.path.abspath(os.__file__)) + os.sep
_PAUSES: set[CodeType] = set()
_LOCK = _thread.allocate_lock()  # (between `_resend` and the handler's raise)
_kinds: dict[CodeType, int] = {}  # (each code object's kind, found once)
_USER, _OURS, _PAUSE, _THROUGH = range(4)
# A function's first instruction (RESUME with argument 0), as two bytes of ``co_code``
_RESUME = bytes((opcode.opmap["RESUME"], 0)) if "RESUME" in opcode.opmap else b""


class _State:
    holders = 0  # open Geodes (of the main thread) that want the handler
    installed = False
    held_since = 0.0  # when the interrupt being held back first came (0: none held)
    resend_pending = False  # a `_resend` thread waits to send it again
    echo = False  # `_send_again` sent SIGINT, not handled yet
    main = 0  # the main thread's id


def interruptible(function: F) -> F:
    """Mark ``function`` as a wait's pause: an interrupt that lands in it is raised at once
    (returns ``function`` unchanged)."""
    _PAUSES.add(function.__code__)
    return function


def hold_interrupts() -> bool:
    """A Geode opened: install `_on_sigint` if this is the main thread and SIGINT has Python's
    default handler (not the job's own, nor asyncio's); whether it counts as a holder (then
    `release_interrupts` when it closes)."""
    if _thread.get_ident() != _main_ident():
        return False
    _State.holders += 1
    if not _State.installed and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        _State.main = _thread.get_ident()
        _State.held_since = 0.0
        _State.echo = False  # (a resend delivered to another handler left it set)
        signal.signal(signal.SIGINT, _on_sigint)
        _State.installed = True
    return True


def release_interrupts() -> None:
    """A Geode that `hold_interrupts` counted closed: once none is left, give SIGINT back to
    Python's default handler (if ours is still in place; from the main thread only: closed
    in another thread, the handler gives itself back at the next SIGINT)."""
    _State.holders = max(_State.holders - 1, 0)
    if _State.holders or not _State.installed or _thread.get_ident() != _main_ident():
        return
    _State.installed = False
    if signal.getsignal(signal.SIGINT) is _on_sigint:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _main_ident() -> int:
    main = sys.modules["threading"].main_thread()
    return int(main.ident or 0)


def _kind(code: CodeType) -> int:
    kind = _kinds.get(code)
    if kind is None:
        name = code.co_filename
        if code in _PAUSES:
            kind = _PAUSE
        elif name == __file__:  # (the handler's own: a SIGINT that comes while it runs)
            kind = _THROUGH
        elif name.startswith(_PACKAGE):
            kind = _OURS
        elif name.startswith("<frozen ") or _library(name):
            kind = _THROUGH
        else:
            kind = _USER
        _kinds[code] = kind
    return kind


def _library(name: str) -> bool:
    """Whether file ``name`` is the standard library's, numpy's, mpi4py's, h5py's or
    numcodecs' (code geode_mpi calls into: not where an interrupt lands for good)."""
    if name.startswith(_STDLIB):
        rest = name[len(_STDLIB) :]
        return not rest.startswith(("site-packages", "dist-packages"))
    for package in ("numpy", "mpi4py", "h5py", "numcodecs"):
        module = sys.modules.get(package)
        where = getattr(module, "__file__", None)
        if where and name.startswith(os.path.dirname(where) + os.sep):
            return True
    return False


def lands_inside(frame: FrameType | None) -> FrameType | None:
    """Where an interrupt that came in ``frame`` lands: inside geode_mpi's own code (held
    back), the outermost frame of that code (None: in a wait's pause, outside geode_mpi, or at
    the very start of a geode_mpi call made from outside, before it did anything)."""
    outermost = None
    while frame is not None:
        kind = _kind(frame.f_code)
        if kind == _OURS:
            if outermost is None and _entered(frame):
                return None
            outermost = frame
        elif kind != _THROUGH:
            break
        frame = frame.f_back
    return outermost


def _entered(frame: FrameType) -> bool:
    """Whether ``frame`` (geode_mpi's) has only just begun (at its first instruction,
    `_RESUME`: where the interpreter looks for signals as a call starts), called from
    outside geode_mpi."""
    code = frame.f_code.co_code
    at = frame.f_lasti
    if code[at : at + 2] != _RESUME:
        return False
    outer = frame.f_back
    while outer is not None:
        kind = _kind(outer.f_code)
        if kind != _THROUGH:
            return kind == _USER
        outer = outer.f_back
    return True


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """The SIGINT handler while a Geode is open (see the module's docstring)."""
    echo, _State.echo = _State.echo, False
    if echo and not _State.held_since:
        return  # sent again for an interrupt another SIGINT raised meanwhile: no second one
    if _asyncio_main_task(signum, frame):
        return
    if not _State.holders and signal.getsignal(signal.SIGINT) is _on_sigint:
        # the last Geode closed in another thread, which cannot give SIGINT back: given back
        # here (the main thread), and raised as Python's own handler would
        _State.installed = False
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with _LOCK:
            _State.held_since = 0.0
        raise KeyboardInterrupt
    # called by a handler the job installed over ours (which chains to it): raise, as Python's
    # own would; a resend would call the job's handler again
    chained = signal.getsignal(signal.SIGINT) is not _on_sigint
    outermost = None if chained else lands_inside(frame)
    if outermost is not None:
        now = time.monotonic()
        if not _State.held_since:
            _State.held_since = now
        if now - _State.held_since < HOLD_MAX:
            if not _State.resend_pending:
                _State.resend_pending = True
                _thread.start_new_thread(_resend, ())
            return
    with _LOCK:
        _State.held_since = 0.0
    raise KeyboardInterrupt


def _resend() -> None:
    """Send the interrupt again `RETRY` seconds from now, if it is still held back then (its
    own thread: for a call that does not return soon)."""
    time.sleep(RETRY)
    _State.resend_pending = False
    _send_again()


def _send_again() -> None:
    """SIGINT to the main thread, if an interrupt is held back (`_resend`'s thread)."""
    with _LOCK:
        if _State.held_since:
            _State.echo = True
            try:
                signal.pthread_kill(_State.main, signal.SIGINT)
            except (OSError, ValueError):  # the main thread has ended
                _State.echo = False


def _asyncio_main_task(signum: int, frame: FrameType | None) -> bool:
    """Inside ``asyncio.run`` (a `Runner` that left SIGINT to us): the first interrupt cancels
    its main task, as asyncio's own handler does (True: done); False: not there, or the
    runner's handler raises it (a second interrupt)."""
    runners = sys.modules.get("asyncio.runners")
    runner_class = getattr(runners, "Runner", None)
    code = getattr(getattr(runner_class, "run", None), "__code__", None)
    if code is None:
        return False
    outer = frame
    while outer is not None and outer.f_code is not code:
        outer = outer.f_back
    if outer is None:
        return False
    names = outer.f_locals
    runner, task = names.get("self"), names.get("task")
    on_sigint = getattr(runner, "_on_sigint", None)
    interrupted: int = getattr(runner, "_interrupt_count", 0)
    if task is None or on_sigint is None or interrupted:
        return False
    on_sigint(signum, frame, task)  # (cancels the main task and wakes the loop)
    return True
