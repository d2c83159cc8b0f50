"""The Geode's close(): serve until every rank closes, count what was sent, free."""

from __future__ import annotations

import threading
import time
from collections import Counter
from functools import partial
from typing import Any

from geode_mpi.base.backoff import CLOSING_YIELD
from geode_mpi.base.gate import any_sender_may_run, locked
from geode_mpi.base.listing import counted_nodes, some_names
from geode_mpi.base.logger import log
from geode_mpi.core.facade import Facade
from geode_mpi.core.observe import finish_job, stop_notice, stop_watchdog
from geode_mpi.core.registry import forget_closed, note_closed, unregister
from geode_mpi.core.runtime import NO_FAST_QUEUE
from geode_mpi.delivery.control import encode_sends_done
from geode_mpi.delivery.waiting import wait_for
from geode_mpi.errors import GeodeTimeoutError, check_timeout


class Lifecycle(Facade):
    """The Geode's close and its steps (`Geode` inherits them)."""

    # -- lifecycle -------------------------------------------------------------------------

    @locked
    def close(self, timeout: float | None = None) -> None:
        """Deliver everything in flight, then stop sending.

        Collective with several ranks: every rank calls it (leaving a ``with`` block does, and so
        does normal interpreter exit). Until every rank has called it, this rank keeps serving
        requests to its nodes and handing out its work queues' tasks (another rank may be
        waiting for them). It returns once every message sent anywhere in the job has reached
        its destination's queue; queued messages stay receivable afterwards. An executor whose
        client is on this rank and that was not shut down is shut down first, as leaving its
        ``with`` block does: its pending futures complete, then its workers are told.

        Messages still queued, never received, when the job ends are reported in a warning
        (logger ``geode_mpi``) naming each node, how many and of which types: at the end of a
        ``with`` block, at interpreter exit (and at the end of ``python -m geode_mpi``'s job),
        and, for a Geode closed by this method, at exit if they are still there then.

        Raises:
            GeodeTimeoutError: not finished within ``timeout`` seconds (says what is missing).
        """
        self._close(timeout)
        # Receivable still (or soon: a handler close() interrupts in another thread puts its
        # message back): said at exit if nobody takes them.
        if self._runtime.unreceived() or self._in_handlers():
            note_closed(self._report_unreceived)

    def _end(self, timeout: float | None = None) -> None:
        """Close as the job's end for this Geode: then say what its nodes never received."""
        self._close(timeout)
        forget_closed(self._report_unreceived)  # (said now: not again at exit)
        self._report_unreceived()
        if self._in_handlers():  # (what they put back is said at exit)
            note_closed(self._report_unreceived)

    def _in_handlers(self) -> bool:
        """Whether messages are inside handlers (of other threads) now."""
        return any(self._processor.handling.values())

    def _close(self, timeout: float | None) -> None:
        runtime = self._runtime
        if runtime.closed:
            return
        timeout = check_timeout(timeout)
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        for executor in self._channels.executors_made:  # (a worker rank's, not told)
            executor.leave_unserved()
        if self._channels.executors:
            self._end_executors(timeout, deadline)
        if timeout is not None and (self._channels.executors_made or self._channels.executors):
            # (what the executors took; without them a step's error names the timeout as given)
            timeout = max(timeout - (time.monotonic() - started), 0.0)
        runtime.sealed = True  # from here the job sends nothing (its handlers may, until ...)
        # ... and the other threads' waits end (`Wait`): the transport goes at the end
        runtime.engine.closer = threading.current_thread()
        runtime.engine.close_unfinished = False
        try:
            self._close_steps(timeout)
        except BaseException:
            # Timed out (or failed): the Geode stays closing (sealed, not sent from again), a
            # close() called again finishes it; until then what the other threads' waits
            # and sends raise says this close() ended unfinished (`ClosedError.unfinished`).
            runtime.engine.close_unfinished = True
            raise

    def _close_steps(self, timeout: float | None) -> None:
        """close() from the moment the Geode is sealed: serve, settle, count, free."""
        runtime = self._runtime
        if not runtime.all_closing and runtime.transport.delivers_later:
            started = time.monotonic()
            self._serve_until_all_close(timeout)
            if timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 0.0)
        # ... every rank is here: the counts of what was sent are exchanged next.
        if self._channels.forwarding:
            started = time.monotonic()
            self._settle(timeout)
            if timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 0.0)
        elif runtime.engine.forwards:
            self._forward_held()  # (a group's: its traffic is known to no other rank)
        runtime.engine.flush()  # acks and credits owed go out before the counts are taken
        if not runtime.finished:  # --stats / --trace, gathered while the transport still runs
            started = time.monotonic()
            gathered = finish_job(self._observed, timeout)
            runtime.finished = True
            if gathered and timeout is not None:
                timeout = max(timeout - (time.monotonic() - started), 0.0)
        runtime.transport.close(timeout)
        if runtime.engine.forwards:
            self._report_unforwarded()
        if self._sequencer.holding:
            self._report_held()
        if runtime.engine.in_hand:
            self._report_in_hand()
        stop_watchdog(self._watchdog, free=True)
        stop_notice(self._notice)
        runtime.engine.closed = True
        runtime.engine.path.cache.clear()  # its peers forget what they held from it alike
        runtime.closed = True
        runtime.plain_queue = NO_FAST_QUEUE
        if self._checkpointer is not None:
            self._checkpointer.close()
        unregister(self)

    def _settle(self, timeout: float | None) -> None:
        """Forward what is still on its way to a sequencer or dispatcher (the count below
        would let a message arrive there and stop, never sent on), serving meanwhile: it is
        sent on, as it would have been had it arrived before close()."""
        runtime = self._runtime
        deadline = None if timeout is None else time.monotonic() + timeout
        runtime.serving = True
        try:
            self._channels.settle(deadline)
        except GeodeTimeoutError as exc:
            raise GeodeTimeoutError(
                f"close() on rank {self.rank} timed out after {timeout:g} s forwarding to "
                f"topics' sequencers and work queues' dispatchers ({exc})"
            ) from None
        finally:
            runtime.serving = False

    def _forward_held(self) -> None:
        """Send on what reached this rank's sequencer nodes and waits here (no collective):
        the count below then carries it."""
        runtime = self._runtime
        runtime.serving = True
        try:
            while runtime.engine.forwards:
                runtime.engine.forward()
        finally:
            runtime.serving = False

    def _report_unforwarded(self) -> None:
        """Say what reached a sequencer node during the count, too late to be sent on: a
        group's (`Geode.group`), whose traffic no other rank knows of, so no rank settles it."""
        names = self._runtime.names
        held = Counter(names[index] for index, _ in self._runtime.engine.forwards)
        log.warning(
            "close() on rank %s: messages reached a group's sequencer while the job closed and "
            "were never sent on to the group: %s (close() does not wait for a group's messages "
            "to be sent on: receive them at a member first)",
            self.rank,
            counted_nodes(held, "messages"),
        )

    def _report_held(self) -> None:
        """Say what a total-order topic's sequencer still holds at the end (its publishers
        got no ack for it): for want of room at a subscriber that took nothing more, or (after
        a restart) because this rank never made its topic again."""
        made = self._channels.topics_by_wire

        def unmade(channel: tuple[str, Any]) -> bool:
            return channel[0] == "topic" and channel[1] not in made

        never = self._sequencer.held_for(unmade)
        if never:
            # (the engine knows a topic's name on the ranks where its messages were restored
            # into a queue; the checkpoint's topics, on every rank)
            checkpointer = self._checkpointer
            names = {} if checkpointer is None else checkpointer.unmade_topics()
            names.update(self._runtime.engine.topics.names)
            wires = sorted(
                {wire for kind, wire in self._sequencer.channels() if unmade((kind, wire))}
            )
            topics = ", ".join(
                repr(names[wire]) if wire in names else f"number {wire}" for wire in wires
            )
            log.warning(
                "close() on rank %s: a sequencer still holds messages restored from a "
                "checkpoint for a total-order topic this rank never made again (%s), never "
                "published: %s (call topic() for it again after a restart, as before it)",
                self.rank,
                topics,
                counted_nodes(never, "messages"),
            )
        full = self._sequencer.held_for(lambda channel: not unmade(channel))
        if full:
            log.warning(
                "close() on rank %s: a sequencer still holds messages that a full subscriber's "
                "queue had no room for, never published: %s (receive at the subscribers before "
                "close(), or give their queues more room)",
                self.rank,
                counted_nodes(full, "messages"),
            )

    def _end_executors(self, timeout: float | None, deadline: float | None) -> None:
        """Shut down the executors whose client is here, as leaving their ``with`` block
        does: their pending futures complete first, and their workers (on other ranks,
        serving until told) are told, so that every rank gets to close() (the lock let go
        meanwhile: the executors' threads need it), until ``deadline`` (close()'s, of its
        ``timeout`` as given)."""
        executors = self._channels.executors
        while executors:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            end = partial(executors[0].end_at_close, given=timeout)
            self._runtime.gate.unlocked(end, left)
            executors.pop(0)

    def _report_in_hand(self) -> None:
        """Say which nodes took messages with an explicit ack and neither acked nor nacked
        them: their senders keep them as unacknowledged (`stats().unacked`) for ever."""
        engine = self._runtime.engine
        names = self._runtime.names
        handling = self._processor.handling  # (in a handler of another thread: apart)
        held = {}
        for index, inbox in engine.inboxes.items():  # taken, not finished, not queued again
            stats = engine.stats[index]
            count = stats.received - stats.processed - len(inbox) - handling.get(index, 0)
            if count > 0:
                held[names[index]] = count
        in_handlers = sum(handling.values())
        total = engine.in_hand - in_handlers
        if in_handlers:
            log.warning(
                "close() on rank %s: messages were still in a handler in another thread: %s "
                "(a handler that close() interrupts, by a ClosedError, puts its message back "
                "in its queue: join the threads that run handlers before close())",
                self.rank,
                counted_nodes({names[i]: n for i, n in handling.items() if n}, "messages"),
            )
        if total <= 0:
            return
        if sum(held.values()) == total:
            where = counted_nodes(held, "messages")
        else:  # (counts restored from a checkpoint may not add up: the total is sure)
            where = f"{total} in all, at {some_names(held) or 'this rank'}"
        log.warning(
            "close() on rank %s: messages taken with an explicit ack were neither acked nor "
            "nacked: %s (their senders keep them as unacknowledged; call msg.ack() or "
            "msg.nack() on every message taken from a queue with ack='explicit')",
            self.rank,
            where,
        )

    def _serve_until_all_close(self, timeout: float | None) -> None:
        """Serve requests and hand out work-queue tasks until every rank is in close(): a rank
        still waiting for a reply or a task needs this one (a barrier posted once, so a close
        retried after a timeout waits on the same one). Meanwhile each sender to a node here
        is told that its queue takes nothing more: a send waiting for room in it stops
        waiting (`QueueFull`), instead of waiting for this rank's close() for ever."""
        runtime = self._runtime
        if runtime.arrived is None:
            runtime.arrived = runtime.transport.all_entered()
        deadline = None if timeout is None else time.monotonic() + timeout
        engine = runtime.engine
        entered = runtime.arrived
        told: set[tuple[int, int]] = set()

        def arrived() -> bool:
            engine.tell_closing(told)  # (the pairs whose first message arrived meanwhile too)
            if engine.awaited or engine.awaited_ranks:
                self._tell_done()
            return entered()

        runtime.serving = True
        # Waited-for messages that no handler here takes are told not processed, those
        # queued now and those arriving meanwhile (`Processor.refuse_closing`).
        self._processor.closing = True
        engine.waited.update(engine.inboxes)
        try:
            # every rank is meant to be on its way here: a collective wait, not a lone one
            runtime.all_closing = wait_for(
                engine, arrived, deadline, CLOSING_YIELD, what=_others_to_close
            )
        finally:
            runtime.serving = False
        if not runtime.all_closing:
            raise GeodeTimeoutError(
                f"close() on rank {self.rank} timed out after {timeout:g} s: waiting for the "
                "other ranks to call close()"
            )

    def _tell_done(self) -> None:
        """This rank is in close(): answer each receive of another rank that waits for a
        message of a node here (`Engine.awaited`) once that node can send nothing more (it
        has no handler, and no other thread runs, daemon or not, `any_sender_may_run`) with
        how many envelopes this rank sent the waiter's (a done record): once they have all
        arrived there, a receive that still finds nothing from it raises. A receive with no
        source is answered so for every node here at once (`Engine.awaited_ranks`), once no
        node here has a handler, saying whether this rank may yet send on what another rank
        sends it (`Engine.relays_here`: then that receive never concludes)."""
        if any_sender_may_run():  # (a user's daemon thread may send while close() serves)
            return
        runtime = self._runtime
        engine = runtime.engine
        transport = runtime.transport
        left = set()
        for waiter, source in engine.awaited:
            if self._processor.has_handlers(source) or source in engine.group_sequencers:
                left.add((waiter, source))  # (its handler may yet send, or it forwards a
                continue  # group's messages in close(): never answered)
            count = transport.sent_count(engine.rank_of(waiter))
            if count is not None:
                engine.path.control(source, waiter, encode_sends_done(count))
        engine.awaited = frozenset(left)
        if engine.awaited_ranks and not any(map(self._processor.has_handlers, runtime.local)):
            # (a receive with no source: no node here sends more of its own; never answered
            # if one has a handler; said with whether this rank may relay another's)
            relays = engine.relays_here()
            for waiter, asked in engine.awaited_ranks:
                count = transport.sent_count(engine.rank_of(waiter))
                if count is not None:
                    done = encode_sends_done(count, whole_rank=True, relays=relays)
                    engine.path.control(asked, waiter, done)
            engine.awaited_ranks = frozenset()

    def _report_unreceived(self) -> None:
        checkpointer = self._checkpointer
        if checkpointer is None:
            self._runtime.report_unreceived()
        else:
            self._runtime.report_unreceived(checkpointer.saved_last, checkpointer.epoch)

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._runtime.closed


def _others_to_close() -> str:
    """What close() waits for while it serves (the notice of a long wait, --hang-timeout)."""
    return (
        "the other ranks to call close() (every rank must: one that returned early from the "
        "job, or still works, has not)"
    )
