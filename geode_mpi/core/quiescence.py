"""Quiescence: waves of counts down and up a tree of the ranks find when the whole job is idle.

Rank 0 asks, each rank answers for itself and the ranks below it with their counts of data
messages sent and received, only while it is idle in `run`. Two consecutive waves with equal
totals, sent equal to received, prove that no message was in flight and no rank worked in
between (the proof is at `Quiescence`); rank 0 then sends the verdict down the same tree.
A rank that answered takes nothing new until it knows the wave's outcome: what came after its
answer may have been sent after the verdict, by a rank whose run() returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from geode_mpi.base import collective
from geode_mpi.base.logger import log
from geode_mpi.delivery.control import (
    WAVE_ANSWER,
    WAVE_ASK,
    WAVE_QUIET,
    WAVE_VOID,
    WAVE_WITHDRAW,
    encode_wave,
)

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime

STUCK_WAVE = 10.0  # seconds a rank's part of a quiescence wave may wait before it says for whom
# Rank 0 starts the next wave at once after up to PACE_AFTER waves that were not quiet in a
# run(), then after a pause that doubles from PACE_FIRST up to PACE_MAX: while the job works,
# waves would only fail, and each answer makes its rank hold what comes until it is released.
PACE_AFTER = 2
PACE_FIRST = 50e-6
PACE_MAX = 1e-3


class Quiescence:
    """Finds, by waves of counts down and up a tree of the ranks, the moment no rank has work
    and no message is in flight.

    Rank 0 starts each wave: an ask goes down the tree (`base.collective`; every rank
    passes it on to its children as it arrives), and each rank, once its children have
    answered and it is itself idle in run(), answers its parent with the sums of the counts of
    data messages sent and received by itself and the ranks below it. No rank sends or takes in
    more than FANOUT + 1 records of a wave each way; a wave takes about 2 log_FANOUT(P) steps.

    Why two equal waves prove quiescence (Mattern's four counters). Counts only grow. Each rank
    reads its counts once per wave, when it answers, idle. Rank 0 reads its own after all of
    its children (hence the whole tree) answered, and starts the next wave only then: every
    read of wave k + 1 comes after every read of wave k. Let wave k - 1 give totals (S1, R1)
    and wave k (S2, R2) with S1 = R1 = S2 = R2, and t any instant between the two waves' reads.
    S(t) <= S2 and R(t) >= R1 (monotonic), and R(t) <= S(t) (nothing is received before it is
    sent), so S(t) = R(t): nothing was in flight at t. R2 = R1 and S2 = S1 mean no rank received
    or sent anything between its two reads, and each was idle (nothing queued, nothing in hand)
    at both, and only a message can give an idle rank work: so at t every rank was idle and
    nothing was in flight, which stays so. Rank 0 then sends "quiet" down the tree.

    The two waves may straddle two run() calls (a job quiet since the last verdict needs one
    wave), but a verdict ends a rank's run() only if that rank's read of the wave was made in
    this run() (``floor``): what it did between two runs is in no earlier read. (As before, a
    rank whose run() ends another way after it answered, by ``count`` or ``until``, may send
    again: quiescence speaks for the ranks that stay in run().)

    The hold. Every message a rank receives after its read of the quiet wave k was sent after
    its sender's read of k: sent before the sender's read of k - 1, it would have been in
    flight at t; sent between its sender's two reads, S2 > S1. So it is causally after the
    verdict (its chain starts at a rank whose run() returned, or a thread outside run()), and
    run() must leave it queued, though the verdict may reach this rank after it (a verdict comes
    down the tree; a message from a rank that returned, directly). So once a rank has answered
    a wave in this run(), its run() takes nothing until that wave's outcome is known here
    (`holds`): the verdict (it returns, what came stays queued), the next wave's ask, or a void
    (the wave will not be found quiet). A rank that holds with something queued withdraws its
    answer: rank 0 voids the wave unless it has found it quiet (then the verdict is on its
    way), to it at once and down the tree to the others. Rank 0 decides as it reads, so it
    holds nothing; it voids the wave it has out when work comes to it (a wave during which it
    receives cannot be quiet), so that no rank holds while it is busy in a handler, and it
    voids each failed wave of a run() that keeps failing and paces the next (`PACE_AFTER`).
    And as its run() returns unfound (`leave`), since it answers no withdrawal while away.

    Why voids keep the verdict sound. They change no count and no read, so Mattern's argument
    above stands for any two consecutive waves; a void only removes a wave from the candidates:
    rank 0 finds no wave quiet that it voided (``voided``), and it voids a wave only before it
    found it quiet (a withdrawal of a wave found quiet gets no void; a wave rank 0 leaves out
    is not complete). A void that a rank with children sends below it as it leaves run() with
    the wave unanswered (`leave`) is backed the same way: that rank answers the wave only once
    rank 0's void has come back, and rank 0 cannot complete the wave without its answer. So a
    rank released from a hold by a void answered a wave that is never the quiet one, and a
    rank that answered the quiet wave is released only by its verdict: the hold argument holds.
    """

    def __init__(self, geode: Runtime) -> None:
        self.geode = geode
        self.engine = geode.engine
        self.size = geode.size
        rank = geode.rank
        self.me = geode.placement.hosted_by(rank)[0]  # the node this rank's records come from
        self.parent = collective.parent(rank, self.size)
        self.children = collective.children(rank, self.size)
        self.asked = 0  # the wave this rank takes part in and has not answered (0: none)
        self.heard: set[int] = set()  # the children that answered it
        self.sums = [0, 0]  # their (sent, received)
        self.answered = 0  # the last wave this rank answered (rank 0: completed)
        self.floor = 0  # waves up to this one were answered before this run() began
        self.previous: tuple[int, int] | None = None  # rank 0: the last wave's totals
        self.quiet = 0  # the wave found quiet (0: none)
        self.voided = 0  # the last wave rank 0 will not find quiet (voided by it, or heard of)
        self.withdrawn = 0  # the last wave whose answer this rank withdrew
        self.spoiled = 0  # the last wave this rank left run() before answering (see `leave`)
        self.failed = 0  # rank 0: waves not found quiet in a row in this run()
        self.next_start = 0.0  # rank 0: no wave starts before this (time.monotonic())
        self.waves = 0  # waves rank 0 started
        self.wave_started = 0.0  # when this rank was asked (rank 0: started the wave)
        self.warned = 0.0  # when this rank last warned that a wave is stuck
        self.engine.on_wave = self._on_wave

    def reset(self) -> None:
        """At the start of a run(): a quiet verdict about a wave this rank answered in an
        earlier run() says nothing of what it did since."""
        self.floor = self.answered
        self.failed = 0
        self.next_start = 0.0

    def _send(
        self, ranks: list[int], kind: int, wave: int, sent: int = 0, received: int = 0
    ) -> None:
        payload = encode_wave(kind, wave, sent, received)
        for rank in ranks:  # node k lives on rank k: node index ``rank`` is on rank ``rank``
            self.engine.path.control(self.me, rank, payload)

    def _on_wave(self, sender: int, kind: int, wave: int, sent: int, received: int) -> None:
        # Asks and verdicts go on down at once (from the sink), so that a rank busy elsewhere,
        # or out of run(), never holds up the ranks below it; answers wait for idleness.
        if kind == WAVE_ASK:
            self._begin(wave)
            self._send(self.children, WAVE_ASK, wave)
        elif kind == WAVE_ANSWER:
            if wave == self.asked:
                self.heard.add(self._rank_of(sender))
                self.sums[0] += sent
                self.sums[1] += received
        elif kind == WAVE_QUIET:
            self.quiet = max(self.quiet, wave)
            self._send(self.children, WAVE_QUIET, wave)
        elif kind == WAVE_WITHDRAW:  # (rank 0; if it found the wave quiet, the verdict is sent)
            if wave > self.quiet:
                self._send([self._rank_of(sender)], WAVE_VOID, wave)
                if wave > self.voided:  # and to every rank, before they hold and withdraw too
                    self.voided = wave
                    self._send(self.children, WAVE_VOID, wave, 1)
        elif kind == WAVE_VOID:
            self.voided = max(self.voided, wave)
            if sent:  # (rank 0's own void goes down the tree; an answer to a withdrawal not)
                self._send(self.children, WAVE_VOID, wave, 1)

    def _rank_of(self, node: int) -> int:
        placement = self.geode.placement
        return placement.rank_of(placement.index(node))

    def _begin(self, wave: int) -> None:
        self.asked = wave
        self.heard = set()
        self.sums = [0, 0]
        self.wave_started = time.monotonic()

    def found(self) -> bool:
        """True once a wave this rank answered in this run() was found quiet."""
        return self.quiet > self.floor

    def holds(self, pending: Callable[[], bool]) -> bool:
        """True while run() must take nothing: this rank answered a wave in this run() whose
        outcome it does not know yet (the hold at `Quiescence`). ``pending()``: something is
        queued that run() would take; the answer is then withdrawn (once), so that rank 0
        voids the wave and says so. Rank 0, which holds nothing, voids the wave it has out
        when work comes to it (that wave cannot be found quiet) and tells every rank."""
        if self.parent is None:
            wave = self.asked
            if wave > self.voided and pending():
                self.voided = wave
                self._send(self.children, WAVE_VOID, wave, 1)
            return False
        wave = self.answered
        if self.asked or wave <= self.floor or wave <= self.voided:
            return False
        if wave > self.withdrawn and pending():
            self.withdrawn = wave
            self._send([0], WAVE_WITHDRAW, wave)
        return True

    def leave(self) -> None:
        """At the end of a run(), however it ended (timeout, count, until, an exception): no
        rank may be left holding for the outcome of a wave that stays out while this rank is
        away, perhaps outside geode_mpi, passing nothing on and answering no withdrawal.
        Rank 0 voids the wave it has out, down the tree (it finds no voided wave quiet). A rank
        with children that was asked and has not answered voids the wave for the ranks below
        it and withdraws it at rank 0, and answers it only once rank 0's void is back: so rank
        0 cannot find it quiet (it needs that answer) and has voided it before it completes."""
        wave = self.asked
        if not wave or self.found():
            return
        if self.parent is None:
            if wave > self.voided:
                self.voided = wave
                self._send(self.children, WAVE_VOID, wave, 1)
        elif self.children and wave > max(self.spoiled, self.voided):
            self.spoiled = wave
            self._send([0], WAVE_WITHDRAW, wave)
            self._send(self.children, WAVE_VOID, wave, 1)

    def check(self, idle: bool) -> bool:
        """Take part in the waves; True once the job is quiescent."""
        if self.found():
            return True
        engine = self.engine
        if self.size == 1:
            return idle and not engine.transport.busy
        if self.asked and len(self.heard) < len(self.children):
            self._warn_if_stuck()
        if not idle:
            return False
        if self.parent is None and not self.asked:  # rank 0, between waves
            if self.next_start and time.monotonic() < self.next_start:
                return False
            self._start()
        if not self.asked or len(self.heard) < len(self.children):
            return False
        if self.spoiled == self.asked > self.voided:
            return False  # (this rank voided it below: its answer waits for rank 0's void)
        sent = engine.data_sent + self.sums[0]
        received = engine.data_received + self.sums[1]
        wave, self.asked, self.answered = self.asked, 0, self.asked
        if self.parent is not None:
            self._send([self.parent], WAVE_ANSWER, wave, sent, received)
            return False
        done = sent == received and (sent, received) == self.previous and wave > self.voided
        # Kept after a verdict too: the first wave of the next run() is consecutive to this one,
        # so a job that did nothing in between is found quiet in one wave.
        self.previous = (sent, received)
        if done:
            self._send(self.children, WAVE_QUIET, wave)
            self.quiet = wave
            return True
        self.failed += 1
        if self.failed <= PACE_AFTER:
            self._start()  # at once: rank 0 is idle now, and the next look may be a pause away
        else:  # the job works: the next wave after a pause, and no rank holds meanwhile
            # (the exponent bounded: 2 ** 1040 failed waves on is past a float)
            pause = min(PACE_MAX, PACE_FIRST * 2 ** min(self.failed - PACE_AFTER - 1, 30))
            self.next_start = time.monotonic() + pause
            if wave > self.voided:  # (not if voided as work came)
                self.voided = wave
                self._send(self.children, WAVE_VOID, wave, 1)
        return False

    def _start(self) -> None:
        """Rank 0: start the next wave."""
        self.waves += 1
        self._begin(self.waves)
        self._send(self.children, WAVE_ASK, self.waves)

    def _warn_if_stuck(self) -> None:
        """Say which ranks keep a quiescence wave waiting (a rank not in run(), or busy)."""
        now = time.monotonic()
        if now - self.wave_started < STUCK_WAVE or now - self.warned < STUCK_WAVE:
            return
        self.warned = now
        missing = sorted(set(self.children) - self.heard)
        log.warning(
            "run() has waited %.0f s for rank(s) %s to report idle (wave %d; a rank reports "
            "for itself and the ranks below it: %s): every rank must call run() for it to end "
            "by quiescence; are they in run(), or still busy? (after a run(timeout=...) that "
            "timed out on some rank, runs can pair off by one: synchronise the ranks after "
            "each run(), docs/delivery.md)",
            now - self.wave_started,
            missing,
            self.asked,
            sorted(rank for child in missing for rank in collective.below(child, self.size)),
        )
