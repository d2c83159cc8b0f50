"""How `Processor` serves the local nodes outside `Geode.run`: a step of one message a node,
the messages whose sender waits for their processing, a wait's processing, a request's reply."""

from __future__ import annotations

import time
from collections.abc import Callable

from geode_mpi.base.deadlines import past_deadline, running_one, within
from geode_mpi.base.gate import senders_may_run
from geode_mpi.core.processing_state import _WAITED, ProcessorState, RunSummary
from geode_mpi.delivery import Acknowledger
from geode_mpi.delivery.waiting import IDLE, WORKED, Marker, Wait
from geode_mpi.queues import Parcel


class Serving(ProcessorState):
    """`Processor`'s steps and waits (a part of it, through ``self``)."""

    # Where the next step starts in its served nodes: where the last one stopped at its
    # deadline (0 after a whole round), so a slow handler at the first node cannot starve
    # the others across short `run(timeout=)` calls.
    _resume = 0

    def step(
        self,
        served: list[int],
        summary: RunSummary,
        limit: int | None = None,
        handled_only: bool = False,
    ) -> int:
        """Process at most one message per served node (and at most ``limit``); the count.
        With ``handled_only``, only messages that have a handler (the others stay queued).
        It starts none once the deadline of the wait it runs in has passed (`past_deadline`)."""
        engine = self.geode.engine
        done = 0
        start = self._resume if self._resume < len(served) else 0
        self._resume = 0
        for turn in range(start, start + len(served)):
            index = served[turn % len(served)]
            if index in self.stopped or (limit is not None and done >= limit):
                continue
            if past_deadline():
                self._resume = turn % len(served)
                break
            match = self._not_awaited if self.awaited else None
            if handled_only:

                def match(parcel: Parcel, index: int = index) -> bool:
                    return self.handles(index, parcel) and (parcel.reply_to not in self.awaited)

            found = engine.take(index, match, None, True)
            if found is None:
                continue
            parcel, receipt = found
            assert receipt is not None
            running_one()
            self.process(index, parcel, receipt, summary)
            done += 1
        return done

    def serve_waited(self) -> None:
        """Process the queued messages whose sender waits for their processing (requests,
        sends with ``ack=True``) at the local nodes where they arrived, when those nodes have
        a handler for them, and before each the older messages of its source that a handler
        takes (per-source FIFO). Every wait of this rank calls it, so a request is answered
        wherever its node's rank waits; other messages wait for `run` or `receive`. A wait
        whose deadline has passed starts no handler run (`past_deadline`): what is left is
        served by the next wait."""
        engine = self.geode.engine
        waited = engine.waited
        later: set[int] = set()
        try:
            while waited and not past_deadline():
                self._serve_waited_at(waited.pop(), later)
        finally:  # (a handler's KeyboardInterrupt: what is left is served by the next wait)
            waited |= later

    def _serve_waited_at(self, index: int, later: set[int]) -> None:
        """`serve_waited` at local node ``index``, noted in ``later`` if it must look again
        (a failed waited-for message waits out its retry's back-off; a handler stopped by a
        `BaseException`, Ctrl-C, left what it owed to the next wait)."""
        engine = self.geode.engine
        if self.closing:
            self.refuse_closing(index)
        if not self.has_handlers(index):
            return
        inbox = self.geode.inboxes[index]

        def owes(parcel: Parcel) -> bool:
            """Its sender waits for its processing, and a handler here takes it."""
            return bool(parcel.flags & _WAITED) and self.handles(index, parcel)

        owed: dict[int, int] = {}  # source -> waited-for messages of it, with a handler
        for parcel in filter(owes, inbox):
            owed[parcel.source] = owed.get(parcel.source, 0) + 1

        def servable(parcel: Parcel) -> bool:
            return parcel.source in owed and self.handles(index, parcel)

        while owed:
            if past_deadline():
                later.add(index)
                return
            found = engine.take(index, servable, None, True)
            if found is None:
                break
            parcel, receipt = found
            assert receipt is not None
            if parcel.flags & _WAITED:
                left = owed.pop(parcel.source) - 1
                if left:
                    owed[parcel.source] = left
            running_one()
            try:
                self.process(index, parcel, receipt, self.served)
            except BaseException:
                later.add(index)
                raise
        if inbox.next_ready() is not None and any(map(owes, inbox)):
            later.add(index)

    def pump(self, nodes: list[int], done: Callable[[], bool], deadline: float | None) -> bool:
        """Process messages of these local nodes, where they have handlers, until ``done()``
        or none is left (a wait in one process that only local processing can end), starting
        none once ``deadline`` has passed (`time.monotonic`; None: no limit)."""
        return within(deadline, lambda: self._pump(nodes, done))

    def _pump(self, nodes: list[int], done: Callable[[], bool]) -> bool:
        geode = self.geode
        served = [index for index in nodes if self.has_handlers(index)]
        summary = RunSummary()
        while not done() and geode.engine.closer is None:  # (closing: the caller's wait ends)
            geode.engine.poll()
            if not served or not self.step(served, summary, handled_only=True):
                break
        return done()

    def await_reply(
        self,
        src: int,
        dst: int,
        wanted: int,
        deadline: float | None,
        refused: Callable[[], bool] = lambda: False,
    ) -> tuple[Parcel, Acknowledger | None] | None:
        """Take the reply from ``dst`` to message ``wanted`` out of local node ``src``'s queue,
        waiting for it until ``deadline`` (`time.monotonic`; None: no limit) while this rank's
        other nodes keep processing with their handlers; None if it did not come, or once
        ``refused()`` (dst said it will not process the request: no reply comes)."""
        geode = self.geode
        engine = geode.engine

        def is_reply(parcel: Parcel) -> bool:
            return parcel.reply_to == wanted and parcel.source == dst

        others = [index for index in geode.local if index != src]
        self.awaited.add(wanted)  # before anything lets another thread in
        summary = RunSummary()

        def look() -> tuple[Parcel, Acknowledger | None] | Marker | None:
            found = engine.take(src, is_reply, None, False)
            if found is not None:
                return found
            if engine.waited:  # requests to this rank's nodes, its own among them
                self.serve_waited()
                found = engine.take(src, is_reply, None, False)
                if found is not None:
                    return found
            if refused():
                return None
            worked = self.step(others, summary, handled_only=True) if others else 0
            return WORKED if worked else IDLE

        started = time.perf_counter()
        found: tuple[Parcel, Acknowledger | None] | None = None
        try:
            wait = Wait(engine, deadline, started, poll=True, call="request")
            found = wait.until(look, self.alone)
        finally:
            self.awaited.discard(wanted)
            if found is None:
                self.gave_up(src, wanted)
            geode.waited(src, started, "wait: request")
        return found

    def alone(self) -> bool:
        """Nothing can arrive any more: one process, no other thread that could send, and
        no request here waiting out its retry's back-off (in ``engine.waited``)."""
        engine = self.geode.engine
        return not (engine.transport.delivers_later or senders_may_run() or engine.waited)
