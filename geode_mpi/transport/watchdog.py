"""--hang-timeout: a rank that waits that long with nothing moving reports every rank, aborts.

Every wait loop in geode_mpi pauses through `Backoff`; once a wait has been idle for a while its
pauses call the hook installed here. When one wait has seen nothing arrive or leave for
``timeout`` seconds, this rank asks every other rank, over a communicator of its own, what it is
waiting for. Ranks that are themselves inside a geode_mpi wait answer within a fraction of a
second; a rank that does not answer is busy outside geode_mpi (computing, or in an MPI call of
the job's own). This rank prints all the answers as one report, then aborts the job.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geode_mpi.transport import backoff
from geode_mpi.transport.abort import abort_world, last_words

if TYPE_CHECKING:  # importing mpi4py.MPI at run time would initialise MPI
    from mpi4py import MPI

HANG_VARIABLE = "GEODE_HANG_TIMEOUT"
HANG_STATUS = 124  # the exit status of a job the watchdog ended (as timeout(1) uses)
_TAG_ASK = 1
_TAG_ANSWER = 2
CHECK_EVERY = 0.05  # seconds between two looks at the clock and the watchdog's messages
# A rank whose waits paused last this long ago was outside geode_mpi meanwhile (computing):
# its time waiting starts over.
OUTSIDE_GAP = 1.5
IN_WAIT = 0.1  # a pause this recent means the rank is inside a wait now


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
    """Where this rank waits: the innermost frames of the job's own code (not geode_mpi's)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frames = [
        frame
        for frame in traceback.extract_stack()
        if not os.path.abspath(frame.filename).startswith(package) and "runpy" not in frame.filename
    ]
    return [
        f"{frame.filename}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
        for frame in frames[-2:]
    ]


def transport_state(transport: object) -> str:
    """What a transport has in flight: unfinished sends, half-received messages, busy
    broadcast streams (MPI); nothing for a transport that delivers inside send()."""
    summary = getattr(transport, "pending_summary", None)
    return str(summary()) if summary is not None else "nothing in flight"


class Watchdog:
    """This rank's part of the hang check.

    A rank is *stuck* for the time since the later of two instants: the last time anything
    it counts moved (``activity`` changed), and the time it entered geode_mpi's waits after
    being outside them (computing) for more than OUTSIDE_GAP seconds. Only a waiting rank
    decides that the job hangs; a rank running geode_mpi calls without waiting answers that
    it is running.

    Args:
        timeout: seconds a rank may be stuck before it asks the others.
        describe: this rank's state, as lines (what is queued, in flight, expected).
        activity: a number that changes whenever a message of this rank moves.
        label: this rank's label for the report (``[rank 1/4 node1]``).
        comm: an MPI communicator for the watchdog alone (None: one process, nobody to ask).
    """

    def __init__(
        self,
        timeout: float,
        describe: Callable[[], list[str]],
        activity: Callable[[], int],
        label: str,
        comm: MPI.Intracomm | None = None,
    ) -> None:
        self.timeout = timeout
        self.describe = describe
        self.activity = activity
        self.label = label
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()
        now = time.monotonic()
        self._next_check = 0.0
        self._last_pause = now  # the last sleeping pause of a wait
        self._waiting_since = now  # when this rank last came back into geode_mpi's waits
        self._last_activity = now
        self._fingerprint = activity()
        self._requests: list[MPI.Request] = []  # our questions and answers in flight
        self._round = 0  # questions asked so far: answers to earlier ones are ignored

    def install(self) -> None:
        """Be called from every sleeping pause of every wait, and from the progress engine."""
        backoff.set_idle_hook(self.idle)
        backoff.set_activity_hook(self.tick)

    def uninstall(self) -> None:
        """Stop being called (the requests still in flight are left to MPI)."""
        if backoff.idle_hook() == self.idle:
            backoff.set_idle_hook(None)
        if backoff.activity_hook() == self.tick:
            backoff.set_activity_hook(None)

    def report(self, stuck: float | None) -> str:
        """This rank's part of the report: how long it waits, where, and on what."""
        if stuck is None:
            lines = ["running (in geode_mpi calls, not waiting)"]
        else:
            lines = [f"waiting {stuck:.1f} s with nothing arriving or leaving"]
        lines += [f"  in {where}" for where in waiting_in()]
        lines += [f"  {line}" for line in self.describe()]
        return "\n".join(f"{self.label} {line}" for line in lines)

    def _look(self, now: float) -> bool:
        """Every CHECK_EVERY: note activity, prune requests. False when not yet due."""
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY
        fingerprint = self.activity()
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self._last_activity = now
        self._requests = [request for request in self._requests if not request.Test()]
        return True

    def _stuck(self, now: float) -> float:
        return now - max(self._last_activity, self._waiting_since)

    def idle(self, seconds: float) -> None:
        """The hook of a sleeping pause (``seconds`` since the wait began or saw an event)."""
        now = time.monotonic()
        if now - self._last_pause > OUTSIDE_GAP:
            self._waiting_since = now  # it was computing meanwhile: that is progress
        self._last_pause = now
        if not self._look(now):
            return
        stuck = self._stuck(now)
        self._answer_asks(stuck)
        if stuck >= self.timeout:
            self._hung(stuck)

    def tick(self) -> None:
        """The progress engine's hook: answer questions while the rank runs without waiting."""
        now = time.monotonic()
        if self._look(now):
            self._answer_asks(self._stuck(now) if now - self._last_pause < IN_WAIT else None)

    def _answer_asks(self, stuck: float | None) -> set[int]:
        """Answer every rank that asked (once each, its latest question); return who asked."""
        if self.comm is None:
            return set()
        from mpi4py import MPI

        latest: dict[int, int] = {}
        status = MPI.Status()
        while self.comm.Iprobe(MPI.ANY_SOURCE, _TAG_ASK, status):
            asker = status.Get_source()
            latest[asker] = self.comm.recv(source=asker, tag=_TAG_ASK)
        for asker, round_ in latest.items():
            answer = (round_, 0.0 if stuck is None else stuck, self.report(stuck))
            self._requests.append(self.comm.isend(answer, asker, _TAG_ANSWER))
        return set(latest)

    def _hung(self, stuck: float) -> None:
        """Ask every rank; if none has seen anything move within the timeout either, print
        every answer and abort the job (never returns); else look again later."""
        text = [
            f"{self.label} geode_mpi: no progress for {stuck:.1f} s (--hang-timeout "
            f"{self.timeout:g}): asked every rank what it waits for; aborting the job",
            self.report(stuck),
        ]
        if self.comm is not None and self.size > 1:
            collected = self._collect()
            if collected is None:  # a lower rank is asking too: it decides
                self._next_check = time.monotonic() + 2 * self._grace() + 1.0
                return
            answers, silent = collected
            moving = [seconds for seconds, _ in answers.values() if seconds < self.timeout]
            if moving:  # some rank saw messages move recently, or runs: not a hang (yet)
                self._next_check = time.monotonic() + self.timeout - min(moving) + CHECK_EVERY
                return
            text += [answers[rank][1] for rank in sorted(answers)]
            if silent:
                text.append(
                    f"{self.label} no answer within {self._grace():g} s from rank(s) {silent}: "
                    "busy outside geode_mpi (computing, or in an MPI call of the job's own), "
                    "or stuck there"
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
        """How long to wait for the other ranks' answers."""
        return min(max(2.0, self.timeout / 10), 10.0)

    def _collect(self) -> tuple[dict[int, tuple[float, str]], list[int]] | None:
        """Every rank's (stuck seconds, report), and the ranks that did not answer in time;
        None when a lower rank asked meanwhile (it collects instead)."""
        from mpi4py import MPI

        comm = self.comm
        assert comm is not None  # asked only when there are other ranks
        self._round += 1
        others = [rank for rank in range(self.size) if rank != self.rank]
        self._requests += [comm.isend(self._round, rank, _TAG_ASK) for rank in others]
        until = time.monotonic() + self._grace()
        answers: dict[int, tuple[float, str]] = {}
        status = MPI.Status()
        while len(answers) < len(others) and time.monotonic() < until:
            if comm.Iprobe(MPI.ANY_SOURCE, _TAG_ANSWER, status):
                source = status.Get_source()
                round_, seconds, report = comm.recv(source=source, tag=_TAG_ANSWER)
                if round_ == self._round:  # not a late answer to an earlier question
                    answers[source] = (seconds, report)
                continue
            if any(asker < self.rank for asker in self._answer_asks(self._stuck(time.monotonic()))):
                return None
            backoff.look_for_notices()  # a rank ending the job meanwhile asks for --trace parts
            time.sleep(0.01)
        return answers, [rank for rank in others if rank not in answers]
