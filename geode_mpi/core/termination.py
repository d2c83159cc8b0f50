"""SIGTERM ends the job within a bound: a last checkpoint, a `Terminated` wait, or a timer.

A Geode with a checkpoint directory installs the handler (from the main thread). After the first
SIGTERM, at ``t0``:

- the next ``maybe_checkpoint()`` (collective) writes a last checkpoint and exits with status 0;
- a blocking call still waiting at ``t0 + grace * PATIENCE`` raises `Terminated` (checked where
  every wait loop pauses, `geode_mpi.base.backoff`); checkpoints are exempt;
- at ``t0 + grace`` a watcher thread ends the process (status 143) whatever it is doing;
- a second SIGTERM (more than `SAME_SIGNAL` seconds after the first) ends it at once.

The watcher thread learns of each SIGTERM from `signal.set_wakeup_fd`, which the interpreter's
C-level handler writes to even while the main thread is inside a long C call (a numpy kernel, a
blocking MPI collective), where the Python-level handler cannot run.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from geode_mpi.base.backoff import term_hook
from geode_mpi.base.failure import TERMINATED_STATUS, rank_label
from geode_mpi.base.gate import own_thread
from geode_mpi.base.logger import load_logging, log
from geode_mpi.errors import Terminated
from geode_mpi.transport import abort_world

GRACE_VARIABLE = "GEODE_TERM_GRACE"
DEFAULT_GRACE = 20.0  # seconds from a SIGTERM to the end: inside SLURM's default KillWait of 30
PATIENCE = 0.5  # the share of the grace a blocking call keeps waiting before Terminated
STATUS = TERMINATED_STATUS  # 143 = 128 + SIGTERM, what a shell reports for a SIGTERM's end
FLUSH_WAIT = 0.5  # seconds the timer gives stdout and stderr to drain before it ends the process
ABORT_WAIT = 3.0  # seconds MPI_Abort gets before the process simply exits
# Under SLURM the time limit's SIGTERM reaches a rank twice within moments: from SLURM itself,
# which signals every process of the job, and from the launcher (mpiexec, srun), which forwards
# the one it got. A SIGTERM this soon after the first is taken for the same one.
SAME_SIGNAL = 2.0
_WAKE = 0  # a byte that only wakes the watcher (no signal has number 0)


def term_grace(value: float | None) -> float:
    """The grace period: ``value``, else ``GEODE_TERM_GRACE``, else `DEFAULT_GRACE`.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: it (or the variable) is not a number of seconds > 0.
    """
    argument = "term_grace"
    if value is None:
        text = os.environ.get(GRACE_VARIABLE)
        if not text:
            return DEFAULT_GRACE
        argument = GRACE_VARIABLE
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{GRACE_VARIABLE} must be a number of seconds > 0, got {text!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"term_grace must be a number of seconds > 0 or None, got {value!r}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{argument} must be a number of seconds > 0, got {value!r}")
    return float(value)


class Termination:
    """The process's SIGTERM state: one per process, shared by its Geodes."""

    def __init__(self) -> None:
        # Reentrant: the Python-level handler runs in the main thread, maybe inside a block
        # that holds it.
        self._lock = threading.RLock()
        self.installs = 0  # Geodes that installed the handler and did not uninstall it yet
        self.grace = DEFAULT_GRACE
        self.label = ""
        self.received: float | None = None  # time.monotonic() of the first SIGTERM
        self.signals = 0  # SIGTERMs the watcher counted since the last `finished`
        self.shield = 0  # checkpoints in progress: their waits never raise Terminated
        self._previous: tuple[Any, int] | None = None  # the handler and wakeup fd replaced
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None

    # -- installing ------------------------------------------------------------------------

    def install(self, grace: float, rank: int, size: int, node: str) -> bool:
        """Catch SIGTERM in this process (main thread only; False elsewhere, nothing done)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        with self._lock:
            self.grace = grace if self.installs == 0 else min(self.grace, grace)
            self.label = f"{rank_label(rank, size, node)} " if size > 1 else ""
            self.installs += 1
            if self.installs > 1:
                return True
        if self._pipe is None:
            read, write = os.pipe()
            os.set_blocking(read, False)
            os.set_blocking(write, False)
            self._pipe = (read, write)
            self._thread = own_thread(
                threading.Thread(target=self._watch, name="geode-sigterm", daemon=True)
            )
            self._thread.start()
        load_logging()  # _note logs from the handler: no import to run in there
        handler = signal.signal(signal.SIGTERM, self._on_signal)
        fd = signal.set_wakeup_fd(self._pipe[1], warn_on_full_buffer=False)
        self._previous = (handler, fd)
        return True

    def uninstall(self) -> None:
        """Undo one `install`: the last one puts back the handler it replaced. A SIGTERM that
        arrived still ends the process at its deadline (unless `finished` said the job ended)."""
        with self._lock:
            self.installs -= 1
            if self.installs > 0 or self._previous is None:
                return
            handler, fd = self._previous
            self._previous = None
        signal.set_wakeup_fd(fd)
        signal.signal(signal.SIGTERM, handler)

    # -- what the job sees -----------------------------------------------------------------

    @property
    def requested(self) -> bool:
        """True once a SIGTERM arrived (and the job has not ended since)."""
        return self.received is not None

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """A checkpoint: its waits go on after a SIGTERM (the grace timer still bounds them)."""
        with self._lock:
            self.shield += 1
        try:
            yield
        finally:
            with self._lock:
                self.shield -= 1

    def finished(self) -> None:
        """The job wrote its last checkpoint and is exiting: stand the timer down, and start
        afresh should this process go on (a job that catches the SystemExit, a test)."""
        with self._lock:
            # Under the lock the watcher reads and counts with: a SIGTERM byte it has not read
            # yet belongs to the signal that just ended the job, and must not count as a new one.
            if self._pipe is not None:
                self._drain()
            self.received = None
            self.signals = 0
        term_hook.set(None)
        if self._pipe is not None:
            self._wake()

    def _drain(self) -> bytes:
        """Whatever the pipe holds now (the watcher's lock held)."""
        assert self._pipe is not None
        try:
            return os.read(self._pipe[0], 256)
        except BlockingIOError:
            return b""

    # -- the signal ------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        # The Python-level handler (main thread, between two bytecodes): the watcher counts
        # the signals; this makes the first one visible before the next line of the job runs.
        self._note()

    def _note(self) -> None:
        with self._lock:
            if self.received is not None:
                return
            self.received = time.monotonic()
        term_hook.set(self._check)
        log.warning(
            "SIGTERM: a last checkpoint at the next maybe_checkpoint(), then exit; a call still "
            "waiting in %g s raises Terminated; the process ends in %g s (term_grace)",
            self.grace * PATIENCE,
            self.grace,
        )
        self._wake()

    def _check(self) -> None:
        """The back-off's hook: raise Terminated in a wait that outlived its patience."""
        received = self.received
        if received is None or self.shield:
            return
        waited = time.monotonic() - received
        if waited >= self.grace * PATIENCE:
            raise Terminated(waited, self.grace)

    def _wake(self) -> None:
        """Make the watcher look at the deadline again."""
        assert self._pipe is not None
        with contextlib.suppress(OSError):  # a full pipe wakes it all the same
            os.write(self._pipe[1], bytes([_WAKE]))

    def _watch(self) -> None:
        assert self._pipe is not None
        read = self._pipe[0]
        while True:
            received = self.received
            timeout = None if received is None else received + self.grace - time.monotonic()
            if timeout is not None and timeout <= 0:
                self._end(f"the job did not end within term_grace={self.grace:g} s")
            ready, _, _ = select.select([read], [], [], timeout)
            if not ready:
                continue
            with self._lock:
                for number in self._drain():
                    if number != signal.SIGTERM:
                        continue  # a wake-up, or another signal with a Python handler
                    if self.signals == 0:
                        self.signals = 1
                        self._note()
                    elif time.monotonic() - (self.received or 0.0) >= SAME_SIGNAL:
                        self._end("a second SIGTERM")
                    # else: the same SIGTERM, delivered again (see SAME_SIGNAL)

    def _end(self, why: str) -> None:
        """End this process now (from the watcher thread), with one line on stderr."""
        # The main thread may hold stdout's lock (blocked writing): flush from a helper thread,
        # and give it FLUSH_WAIT seconds at most.
        flusher = threading.Thread(target=_flush, daemon=True)
        flusher.start()
        flusher.join(FLUSH_WAIT)
        message = f"{self.label}geode_mpi: SIGTERM: {why}; exiting with status {STATUS}\n"
        with contextlib.suppress(OSError):
            os.write(2, message.encode())
        if "mpi4py.MPI" in sys.modules:  # MPI runs (never imported in the embedded world)
            # MPI_Abort, so that the launcher reports this status (with a plain exit of one
            # rank, mpiexec kills the others and may report their SIGKILL instead). Should
            # the abort not return nor end the process, a plain exit follows.
            backstop = threading.Timer(ABORT_WAIT, os._exit, (STATUS,))
            backstop.daemon = True
            backstop.start()
            abort_world(STATUS)
        os._exit(STATUS)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


TERMINATION = Termination()
