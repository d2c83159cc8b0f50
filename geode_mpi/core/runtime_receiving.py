"""`Runtime`'s receives: decoding a queued parcel, taking the next matching one from a
node's queue, and the waits for one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from geode_mpi import codec
from geode_mpi.base.gate import any_sender_may_run, other_threads, senders_may_run
from geode_mpi.codec import header
from geode_mpi.core.aio import POLL_EVERY_RECEIVES
from geode_mpi.core.runtime_parts import FIRST_SPIN, RuntimeParts
from geode_mpi.delivery.control import encode_waiting
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.delivery.waiting import IDLE, Marker, Wait, ended_elsewhere
from geode_mpi.errors import DecodeError
from geode_mpi.message import Message
from geode_mpi.queues import Match, Parcel, first_take
from geode_mpi.tracing import TRACER, now_us

# The most polls a receive from a drop_oldest queue makes to take in what arrived (each
# takes up to 256 arrivals): a sender that never stops sending cannot hold the receive.
ADMIT_POLLS = 16
_FROM_STREAM = codec.FLAG_TOPIC | codec.FLAG_WORK  # from a topic's or a work queue's stream
_TOPIC = codec.FLAG_TOPIC
# A receive with no source asks every other rank to say when it can send nothing more (one
# small record each, once per Geode: `Receiving.others_gone`) only once it has waited this
# long: most waits end sooner, and a job of P ranks then sends no P - 1 records at all.
ASK_ALL_AFTER = 0.5
# A wait asks whether what it waits for can still come (`gone_test`: a waiting record to the
# source's rank, the test of every other rank's answers) only once it has lasted this long:
# a receive whose message comes sooner (nearly every one) pays nothing for it.
LOOK_AFTER = 0.01


class Receiving(RuntimeParts):
    """The runtime's decodes, takes and waits (`Runtime` inherits them)."""

    def decode(self, parcel: Parcel, index: int | None = None) -> Message:
        """Decode a queued parcel; ``index``: the node that takes it (None: only looking)."""
        message = codec.decode(parcel.meta, parcel.frames, self.names)
        if parcel.flags & _FROM_STREAM:
            self.stream_fields(message, parcel, index)
        return message

    def stream_fields(self, message: Message, parcel: Parcel, index: int | None) -> None:
        """A topic message as its subscriber sees it (its topic, itself as dest), or a work
        queue's task as its consumer does (its queue, the dispatcher as source; taking it for
        the first time asks for the next one)."""
        state = message.__dict__
        if parcel.flags & _TOPIC:
            state["topic"] = self.engine.topics.names.get(header.topic_number(parcel.meta))
            state["dest"] = None if index is None else self.names[index]
            return
        queue = self.task_sources.get(parcel.source)
        if queue is None:  # a damaged flag: not from a work queue's stream
            raise DecodeError(
                f"message {message.id} from node index {parcel.source} is flagged as a work "
                "queue's task, but no work queue has that stream"
            )
        if index is not None and first_take(parcel):
            queue.taken(index, message)
        else:
            state.update(work_queue=queue.name, source=queue.dispatcher)

    def undecodable(self, index: int, parcel: Parcel, error: DecodeError) -> None:
        """Node ``index`` took ``parcel`` and could not decode it (it goes to the dead
        letters, by its caller): if it is a work queue's task, the node asks for the next one
        all the same, as taking it would have (the dispatcher would hold every later task
        otherwise); if it is a request, its requester is answered with the failure (`refuse`),
        not left waiting for a reply that cannot come."""
        if parcel.flags & codec.FLAG_WORK and first_take(parcel):
            queue = self.task_sources.get(parcel.source)
            if queue is not None:
                queue.want_next(index)
        if parcel.reply_to == codec.REQUEST:
            self.served.refuse_undecodable(index, parcel, error)

    def deliver(self, index: int, found: tuple[Parcel, Any]) -> Message:
        """Decode a taken parcel; one that cannot be decoded goes to the dead letters."""
        parcel, receipt = found
        try:
            message = self.decode(parcel, index)
        except DecodeError as exc:
            if receipt is not None:
                self.engine.in_hand -= 1
            # Taken without a receipt it already counts as processed: record it all the same.
            self.engine.dead_letter(index, parcel, exc, parcel.attempts + 1, receipt is not None)
            self.undecodable(index, parcel, exc)
            raise
        if receipt is not None:
            message.__dict__["_receipt"] = receipt
        if TRACER.on:
            trace_receive(index, message, "receive")
        return message

    def poll(self) -> bool:
        """Run the progress engine once; True if anything happened."""
        return self.engine.poll()

    def take(
        self,
        index: int,
        match: Match | None,
        key: Any,
        timeout: float | None,
        spun: bool = False,
        source: str | int | None = None,
        what: Callable[[], str] | None = None,
    ) -> tuple[Parcel, Any] | None:
        """Take the next matching parcel of local node ``index``, waiting up to ``timeout``
        seconds (None: no limit; 0: do not wait) for one; None if none came. ``spun``: the
        caller has just spun (`Engine.take_express`): wait at once. ``source``: the node
        ``match`` takes messages of only (a wait ends once it can send none, `source_gone`).
        ``what``: what the wait is for, in words (`Wait`'s; None: a message at the node)."""
        engine = self.engine
        if self.closed:
            return engine.take(index, match, key, False)
        self.receives += 1
        if self.inboxes[index].drop_oldest:
            self._admit_arrived()
        found = engine.take(index, match, key, False) if self.queued[index] else None
        if found is not None:
            # Taken without polling MPI first; every POLL_EVERY_RECEIVES-th receive polls
            # anyway, to keep what arrives (and acks) moving while a backlog is drained.
            if not self.receives & POLL_EVERY_RECEIVES - 1:
                engine.poll_after_take()
            return found
        transport = self.transport
        if timeout == 0 or not (
            transport.delivers_later or (other_threads() and senders_may_run())
        ):
            engine.poll()
            found = engine.take(index, match, key, False)
            if found is None and timeout != 0 and self.inboxes[index].next_ready():
                return self._take_retry(index, match, key, timeout)
            return found
        # Nothing queued: wait, spinning on MPI's probe first (a poll here would only probe
        # the same empty queue once more). A reply in a ping-pong comes within this first
        # spin, before any of the waiting machinery below is set up.
        if (
            not spun
            and not engine.forwards
            and not transport.busy
            and transport.spin(FIRST_SPIN)
            and (found := engine.take(index, match, key, False)) is not None
        ):
            return found
        started = time.perf_counter()
        try:
            return self._wait_take(index, match, key, timeout, started, source, what)
        finally:
            self.waited(index, started, "wait: receive")

    def _admit_arrived(self) -> None:
        """Take in what has arrived (up to `ADMIT_POLLS` polls), for a receive from a queue
        that drops (``drop_oldest``): the newest arrivals displace the oldest queued, as the
        policy says, before one is taken. (Taking the queued one first, or the first arrival
        of a backlog, handed out every message oldest first and dropped none.)"""
        poll = self.engine.poll
        for _ in range(ADMIT_POLLS):
            if not poll():
                return

    def _take_retry(
        self, index: int, match: Match | None, key: Any, timeout: float | None
    ) -> tuple[Parcel, Any] | None:
        """One process, nothing else can arrive: wait out the back-off of a failed message
        put back for a retry, if it ends within ``timeout``, and take what is then ready."""
        inbox = self.inboxes[index]
        engine = self.engine
        deadline = None if timeout is None else time.monotonic() + timeout

        def look() -> tuple[Parcel, Any] | Marker | None:
            # (closed by another thread while this one paused, or its close() ended unfinished)
            if self.closed or ended_elsewhere(engine):
                return None
            delay = inbox.next_ready()  # before the take: one due after it is taken next look
            found = engine.take(index, match, key, False)
            if found is not None:
                return found
            if not delay or (deadline is not None and time.monotonic() + delay > deadline):
                return None  # none held back (or due, but not for this call), or due too late
            return IDLE

        started = time.perf_counter()
        try:
            return Wait(engine, deadline, started).until(look)
        finally:
            self.waited(index, started, "wait: receive")

    def _wait_take(
        self,
        index: int,
        match: Match | None,
        key: Any,
        timeout: float | None,
        started: float,
        source: str | int | None,
        said: Callable[[], str] | None,
    ) -> tuple[Parcel, Any] | None:
        engine = self.engine
        transport = self.transport
        deadline = None if timeout is None else time.monotonic() + timeout
        asking: float | None = started + LOOK_AFTER  # (None: no answer could end this wait)
        gone: Callable[[float], bool] | None = None

        def look() -> tuple[Parcel, Any] | Marker | None:
            nonlocal asking, gone
            # (closed by another thread while this one paused, or its close() ended unfinished)
            if self.closed or ended_elsewhere(engine):
                return None
            found = engine.take(index, match, key, False)
            if found is None and asking is not None and time.perf_counter() >= asking:
                if gone is None:
                    gone = self.gone_test(index, source)
                    asking = None if gone is None else asking
                if gone is not None and gone(started):
                    engine.poll()  # (what the last count covers is here: taken, or none is)
                    return engine.take(index, match, key, False)
            return IDLE if found is None else found

        def alone() -> bool:  # one process, and the threads that could send to it are gone
            return not (transport.delivers_later or senders_may_run())

        def what() -> str:  # (the notice of a long wait, the --hang-timeout report)
            queued = len(self.inboxes[index])
            return f"a message at {self.names[index]} ({queued} other message(s) queued there)"

        # (receive looked just now, before its first spin)
        wait = Wait(engine, deadline, started, looked=True, what=said or what)
        return wait.until(look, None if transport.delivers_later else alone)

    def gone_test(self, index: int, source: str | int | None) -> Callable[[float], bool] | None:
        """For a receive at ``index`` that waits for a message of node ``source`` (None: of
        any node, a blocking receive's only), a test of whether none can come any more,
        given when the wait started (`time.perf_counter`): `source_gone`, or with no source
        `others_gone`; None if no answer could end the wait (a node of this rank, a Geode
        closing, one rank; with no source, a group, topic or work queue known here, or a
        handler here: not worth asking). Asked only once a wait has lasted (`LOOK_AFTER`;
        an awaited one, once its poller's looks are past their first spin)."""
        if source is not None:
            src = self.ask_when_done(index, source)
            return None if src < 0 else lambda started: self.source_gone(index, src)
        if (
            self.sealed
            or min(self.size, len(self.names)) < 2
            or self.engine.relays_here()
            or any(map(self.served.has_handlers, self.local))
        ):
            return None
        return lambda started: self.others_gone(index, started)

    def others_gone(self, index: int, started: float) -> bool:
        """Whether no message can reach node ``index`` any more, for a receive with no source
        that started waiting at ``started``: once it has waited `ASK_ALL_AFTER`, every other
        rank is asked (once per Geode) to say when no node of it can send more (its rank in
        close(), no handler there); then every one said so, and none may relay another's
        messages (each said whether it knows a group, topic or work queue or holds messages
        to forward; this rank knows none either), everything each sent this rank before
        that has arrived, no other thread of this rank runs (`any_sender_may_run`: a daemon
        one may send too) and no handler here can send, and none of its messages is held for
        a retry. Never asked for an awaited receive: a callback of its event loop (a timer, a
        future's) may send, and nothing tells whether one will."""
        engine = self.engine
        if not engine.asked_ranks:
            if time.perf_counter() - started >= ASK_ALL_AFTER:
                engine.asked_ranks = True
                for rank in range(min(self.size, len(self.names))):
                    if rank != self.rank:  # (to the rank's first node: any would do)
                        first = self.placement.hosted_by(rank)[0]
                        self.path.control(index, first, encode_waiting(whole_rank=True))
            return False
        done = engine.ranks_done
        arrived = self.transport.arrived_count
        return (
            len(done) == min(self.size, len(self.names)) - 1
            and not engine.relaying_ranks
            and not engine.relays_here()
            and self.inboxes[index].next_ready() is None
            and not any_sender_may_run()
            and not any(map(self.served.has_handlers, self.local))
            and all(arrived(rank, count) for rank, count in done.items())
        )

    def ask_when_done(self, index: int, source: str | int) -> int:
        """A receive at ``index`` waits for a message of node ``source``: if that node is on
        another rank, ask it (once) to say when it can send nothing more (a waiting record,
        answered once its rank is in close(): `Engine.sends_done`). Its node index, or -1 if
        the answer could not end this wait (a node of this rank, a Geode closing)."""
        src = self.placement.index(source, "source")
        engine = self.engine
        if engine.rank_of(src) == self.rank or self.sealed or src in engine.group_sequencers:
            return -1  # (a group's sequencer forwards other nodes' messages in close())
        if (index, src) not in engine.asked:
            engine.asked = engine.asked | {(index, src)}
            self.path.control(index, src, encode_waiting())
        return src

    def source_gone(self, index: int, src: int) -> bool:
        """Whether no message of node ``src`` can reach node ``index`` any more: its rank is
        in close() and said it sends nothing more, every envelope it sent this rank before
        that has arrived, no topic or work queue's stream could bring one of its messages
        from another rank, and none of its messages is held back here for a retry."""
        count = self.engine.sends_done.get(src)
        return (
            count is not None
            and not self.engine.topics.streams
            and src not in self.engine.group_sequencers
            and self.transport.arrived_count(self.engine.rank_of(src), count)
            and self.inboxes[index].next_ready() is None
        )

    def waited(self, index: int, started: float, what: str) -> None:
        """Count the time node ``index`` spent waiting since ``started`` (perf_counter)."""
        seconds = time.perf_counter() - started
        self.engine.stats[index].wait_seconds += seconds
        if TRACER.on:
            TRACER.span(what, index, now_us() - seconds * 1e6)
