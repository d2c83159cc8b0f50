"""A caught Ctrl-C loses and repeats nothing: every rank streams messages around a ring while
one rank's main thread gets SIGINT at random moments (a thread doing ``os.kill``), catches
the KeyboardInterrupt and carries on; every message arrives exactly once, in order."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from geode_mpi import Geode

# Python 3.10 looks for signals right after a call returns, in the caller, before its
# assignment: a held interrupt lands there (docs/point-to-point.md promises 3.11 and newer)
pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="the promise is 3.11+")

MESSAGES = 5000  # each rank sends this many to the next rank in a round
INTERRUPTS = 5  # rounds go on until the interrupted rank caught this many
MAX_ROUNDS = 40
BURST = 16  # sent before the same number is received
GAP = 0.002  # seconds between two interrupts, at most (drawn at random)
TIMEOUT = 20.0


class Ringer:
    """Sends SIGINT to this process within `GAP` seconds of an `arm`, one at a time: the next
    only once the main thread caught the last (`caught`), so that two never meet (the second
    would land in the first's ``except`` block).

    Plain flags, no `threading.Event`: an interrupt that lands in the main thread inside an
    Event's own lock would leave that lock held (the ringer then hangs on it)."""

    def __init__(self, seed: int) -> None:
        self.armed = False
        self.stopped = False
        self.sent = 0
        self.caught = 0
        self.rng = random.Random(seed)
        self.thread = threading.Thread(target=self._ring, daemon=True)

    def arm(self) -> None:
        self.armed = True

    def _ring(self) -> None:
        while not self.stopped:
            if not self.armed:
                time.sleep(GAP / 10)
                continue
            self.armed = False
            time.sleep(self.rng.uniform(0.0, GAP))
            self.sent += 1
            os.kill(os.getpid(), signal.SIGINT)
            while self.caught < self.sent and not self.stopped:
                time.sleep(GAP / 10)


@contextlib.contextmanager
def interrupting(on: bool, seed: int) -> Iterator[Ringer]:
    """A `Ringer` while the block runs (if ``on``; else one never started); at its end, the
    last interrupt (perhaps held back, then sent again) caught too."""
    ringer = Ringer(seed)
    switching = sys.getswitchinterval()
    if on:
        sys.setswitchinterval(1e-4)  # (the main thread never sleeps: let the ringer in)
        ringer.thread.start()
    try:
        yield ringer
    finally:
        sys.setswitchinterval(switching)
        ringer.stopped = True
        deadline = time.monotonic() + TIMEOUT
        while ringer.thread.is_alive() or ringer.caught < ringer.sent:
            assert time.monotonic() < deadline, "the last interrupt never landed"
            try:
                time.sleep(0.001)
            except KeyboardInterrupt:
                ringer.caught += 1


def ring(geode: Geode, first: int, count: int, ringer: Ringer) -> list[int]:
    """Sends ``first .. first + count - 1`` to the next rank, `BURST` at a time, and returns what
    came from the previous rank; every KeyboardInterrupt is caught and counted."""
    peer_out = geode.nodes[(geode.rank + 1) % geode.size]
    got: list[int] = []
    sent = 0
    while True:
        try:  # (an interrupt may also land on the inner loop's jump back, outside its try)
            while True:
                try:  # (all of the loop inside: an interrupt may come anywhere in it)
                    ringer.arm()
                    if len(got) == count:
                        # The last interrupt lands here, inside the try, not in the caller's code
                        ringer.stopped = True
                        deadline = time.monotonic() + TIMEOUT
                        while ringer.thread.is_alive() or ringer.caught < ringer.sent:
                            assert time.monotonic() < deadline, "the last interrupt never landed"
                            time.sleep(0.001)
                        return got
                    while sent < count and sent < len(got) + BURST:
                        if sent % 2:
                            geode.send(first + sent, dest=peer_out)
                        else:
                            geode.isend(first + sent, dest=peer_out)
                        sent += 1  # (one that raised sent nothing, unless in_flight)
                    while len(got) < sent:
                        got.append(geode.receive(timeout=TIMEOUT).data)
                except KeyboardInterrupt as exc:
                    ringer.caught += 1
                    if getattr(exc, "in_flight", False):  # send() waited for it to go out
                        sent += 1
        except KeyboardInterrupt:
            ringer.caught += 1  # (between two steps: nothing was sent or taken)


def test_a_caught_ctrl_c_loses_and_repeats_no_message(geode: Geode) -> None:
    rank, size = geode.rank, geode.size
    interrupted = rank == 1 % size
    got: list[int] = []
    caught = sent = 0
    # Rounds until the interrupted rank caught `INTERRUPTS`: a held interrupt may take long to
    # land outside geode's code in this loop (up to 2 s), so one round may see only a few
    for rounds in range(MAX_ROUNDS):
        with interrupting(interrupted, seed=rank * MAX_ROUNDS + rounds) as ringer:
            got += ring(geode, rounds * MESSAGES, MESSAGES, ringer)
        # Each interrupt raised once (none lost, none twice: a held one is raised later)
        assert ringer.caught == ringer.sent
        caught, sent = caught + ringer.caught, sent + ringer.sent
        if not agree(size, interrupted and caught < INTERRUPTS):
            break
    if interrupted:
        assert caught >= INTERRUPTS, f"only {caught} interrupts in {MAX_ROUNDS} rounds"
    total = (rounds + 1) * MESSAGES
    missing = sorted(set(range(total)) - set(got))
    twice = len(got) - len(set(got))
    assert got == list(range(total)), (
        f"rank {rank} (interrupted {caught} times): {len(missing)} messages missing "
        f"(first {missing[:5]}), {twice} twice"
    )


def agree(size: int, more: bool) -> bool:
    """True on every rank if `more` is on any (no interrupt comes while this runs)."""
    if size == 1:
        return more
    from mpi4py import MPI

    return bool(MPI.COMM_WORLD.allreduce(int(more), op=MPI.MAX))
