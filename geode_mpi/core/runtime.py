"""The runtime behind a Geode: its state, point-to-point send, receive and the waits.

`Geode` is the facade (public methods, argument checks, docstrings); this object holds what
the core's other modules share (the transport, the delivery engine, the node queues, the
placement) and does the work they call: send, take a message from a queue, wait. Those
modules import this one, never `geode_mpi.core.geode`.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

from geode_mpi import codec
from geode_mpi.base.backoff import TOGETHER_YIELD
from geode_mpi.base.gate import other_threads, senders_may_run
from geode_mpi.base.logger import log
from geode_mpi.codec import header
from geode_mpi.codec.compression import Compression
from geode_mpi.core.aio import POLL_EVERY_RECEIVES as POLL_EVERY_RECEIVES
from geode_mpi.core.handles import RunHandle, SendHandle, sent_by_another_rank
from geode_mpi.core.placement import Placement
from geode_mpi.delivery import Engine, QueueConfig
from geode_mpi.delivery.pairs import PairOut
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.delivery.waiting import IDLE, Marker, Wait, wait_for
from geode_mpi.errors import ClosedError, DecodeError, NodeNotLocalError, check_timeout
from geode_mpi.message import Message
from geode_mpi.queues import Match, Parcel
from geode_mpi.tracing import TRACER, now_us
from geode_mpi.transport import Transport

_FROM_STREAM = codec.FLAG_TOPIC | codec.FLAG_WORK  # from a topic's or a work queue's stream
_TOPIC = codec.FLAG_TOPIC
POLL_EVERY_SENDS = 32  # isend runs the progress engine on every 32nd call (a power of two)
# ... but on every 128th while its messages join runs (a full run goes on its own; a poll
# costs as much as a few dozen joins): at the others it sends only the batches that are due.
POLL_EVERY_JOINS = 128
# A receive that must wait first spins this long, with nothing else set up: as long as the
# back-off's own first spin. At 20 us a Message ping-pong's reply (a 15 us round trip here)
# missed it often enough to cost 1% of its latency (A/B under real-time priority).
FIRST_SPIN = 50e-6
NO_FAST_QUEUE: deque[Any] = deque(maxlen=0)  # always empty: "no fast receive path"
_P = ParamSpec("_P")
_R = TypeVar("_R")
Pump = Callable[[list[int], Callable[[], bool]], bool]


class TaskSource(Protocol):
    """What a consumer's taken task asks of its work queue (`geode_mpi.core.workqueues`)."""

    @property
    def name(self) -> str: ...

    @property
    def dispatcher(self) -> str: ...

    def taken(self, index: int, message: Message) -> None: ...


def _no_pump(nodes: list[int], done: Callable[[], bool]) -> bool:
    return done()


class Runtime:
    """The state and mechanics of one Geode on this rank.

    Args:
        transport: this rank's transport.
        placement: the job's nodes and the ranks that host them.
        configs: every node's queue settings, by index.
        acks: track every sent message until it is acknowledged.
        resend_after: seconds after which an unacknowledged message is sent again (None: never).
    """

    def __init__(
        self,
        transport: Transport,
        placement: Placement,
        configs: Sequence[QueueConfig],
        acks: bool,
        resend_after: float | None,
    ) -> None:
        self.transport = transport
        # The fast receive's spin: `MPITransport.spin_meta` where there is one, else `spin`;
        # None where the transport delivers as it is sent (nothing to spin for)
        spin: Callable[[float], tuple[int, bytearray] | bool] = getattr(
            transport, "spin_meta", transport.spin
        )
        self.express_spin = spin if transport.delivers_later else None
        # Every public call holds the gate; send, isend and receive skip it while no other
        # thread exists (see `serialised` and docs/point-to-point.md, "Threads").
        self.gate = transport.gate
        self.owned = self.gate.owned
        self.rank: int = transport.rank
        self.size: int = transport.size
        self.placement = placement
        self.names = names = placement.names
        self.index_of = {name: k for k, name in enumerate(names)}
        # dest as given -> (node index, rank, pair) for sends from this rank's node on pairs
        # without credits: what `send` would otherwise look up on every message
        self.routes: dict[Any, tuple[int, int, PairOut]] = {}
        self.local = self.placement.hosted_by(self.rank)
        self.acks = bool(acks)
        self.engine = Engine(
            transport,
            names,
            self.placement.rank_of,
            self.local,
            configs,
            resend_after,
            self.decode,
            self.acks,
        )
        self.inboxes = self.engine.inboxes
        self.queued = {index: inbox.waiting for index, inbox in self.inboxes.items()}
        # This rank's node's queue while receiving from it may take the fast path (automatic
        # acks, no window, not closed); an empty deque otherwise.
        self.plain_queue = (
            self.queued[self.rank] if self.rank in self.engine.plain else NO_FAST_QUEUE
        )
        self.path = self.engine.path  # every message leaves through it
        self.counter = self.path.counter  # messages each local node authored (ids)
        self.closed = False
        self.sealed = False  # True once close() began: nothing may be sent from then on,
        self.serving = False  # except while close() still serves the other ranks (handlers)
        self.all_closing = False  # close() saw every rank call close()
        self.finished = False  # close() gathered --stats / --trace
        self.arrived: Callable[[], bool] | None = None  # close()'s barrier for them
        self.sends = 0
        self.receives = 0
        self.unfinished_checks = 0  # SendHandle.done() calls that found their send unfinished
        # The work queues, by stream number, whose tasks a consumer here may take (set by
        # `geode_mpi.core.channels`), and what processes a local node's messages with its
        # handlers while a send waits for its ack (set to `Processor.pump`).
        self.task_sources: Mapping[int, TaskSource] = {}
        self.pump: Pump = _no_pump

    @property
    def node(self) -> str:
        """This rank's own node."""
        return self.names[self.rank]

    # -- the gate and the checks of the public calls ---------------------------------------

    def serialised(self, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``call(*args, **kwargs)`` holding the gate: the hot paths' way in once other
        threads exist (the rest of the public calls always hold it, see `locked`)."""
        gate = self.gate
        gate.enter()
        try:
            return call(*args, **kwargs)
        finally:
            gate.release()

    def check_open(self, operation: str) -> None:
        """Raise `ClosedError` for ``operation`` once closed."""
        if self.closed:
            raise ClosedError(operation)

    def check_sending(self, operation: str) -> None:
        """Raise `ClosedError` for ``operation`` once close() began (unless it serves)."""
        if self.sealed and not self.serving:
            raise ClosedError(operation)

    def local_index(self, node: str | int | None, call: str) -> int:
        """The index of a node this rank hosts (None: this rank's own).

        Raises:
            NodeNotLocalError: another rank hosts it.
        """
        if node is None:
            return self.rank
        index = self.placement.index(node)
        if index not in self.inboxes:
            name = self.placement.names[index]
            raise NodeNotLocalError(call, name, self.rank, self.placement.rank_of(index))
        return index

    # -- sending ---------------------------------------------------------------------------

    def send(
        self,
        message: Any,
        source: str | int | None,
        dest: str | int | None,
        ack: bool,
        timeout: float | None,
        reply_to: int = codec.NO_REPLY,
        flags: int = 0,
        batch: bool = True,
        via: codec.Route | None = None,  # a sequencer's or dispatcher's: where it goes on
        compress: Compression | None = None,  # the message's own setting
    ) -> SendHandle:
        """Send point-to-point (every kind of message a node sends to a node goes here)."""
        if self.sealed and not self.serving:
            raise ClosedError("isend")
        route = None
        if source is None:
            try:
                route = self.routes.get(dest)
            except TypeError:  # unhashable: not a node name; the general path says so
                route = None
        if route is not None:  # this rank's node to a dest sent to before, without credits
            src = self.rank
            dst, rank, pair = route
        else:
            placement = self.placement
            src = self.rank if source is None else placement.index(source, "source")
            try:
                index = self.index_of.get(dest)  # type: ignore[arg-type]
            except TypeError:  # unhashable: not a node name; let index() say so
                index = None
            if index is None:
                if dest is None:
                    raise TypeError("send() needs a dest: send(message, dest='node1')")
                index = placement.index(dest, "dest")
            dst = index
            if src not in self.inboxes:  # its own rank sends it
                return sent_by_another_rank(self, src, dst)
            engine = self.engine
            found = engine.pairs_out.get((src, dst))
            if found is not None and (found.credits is None or found.credits > 0):
                pair = found
            else:
                if timeout is None:
                    pair = engine.reserve(src, dst, None, None)
                else:
                    timeout = check_timeout(timeout)
                    pair = engine.reserve(src, dst, time.monotonic() + (timeout or 0.0), timeout)
            rank = dst % self.size
            if source is None and pair.credits is None:
                self.routes[dest] = (dst, rank, pair)  # no credits now means none ever
                self.path.dests[dest] = self.path.lane(src, dst, rank, pair)
        msg = message if isinstance(message, Message) else Message(message)
        ticket, stamp = self.path.to_node(
            msg, src, src, dst, rank, pair, ack, flags, reply_to, batch, via, compress
        )
        self.sends += 1
        if not self.sends & POLL_EVERY_SENDS - 1:
            # A rank that only sends still drains what arrives; polling on every send would
            # add a probe to the latency of each small message.
            self.engine.poll()
        return SendHandle(self, ticket, stamp, pair if self.acks or ack else None, ack)

    def send_plain(self, message: Any, dest: Any, timeout: float | None, batch: bool) -> SendHandle:
        """`send` from this rank's node, without ack, reply, route or compression of its own:
        `SendPath.plain` once ``dest`` has a route (sent to before, no credits), else `send`."""
        try:
            route = self.routes.get(dest)
        except TypeError:  # unhashable: not a node name; the general path says so
            route = None
        if route is None or self.sealed or TRACER.on:
            return self.send(message, None, dest, False, timeout, batch=batch)
        dst, rank, pair = route
        run = pair.run
        if run is not None and batch and (at := run.join(message)) >= 0:
            # The commonest isend: it joins its pair's open run (delivery/runs.py), with no
            # Message built for a bare value and a handle that is only the run and the index.
            # A full run goes at once; between polls a look at the batches' age is enough.
            sends = self.sends = self.sends + 1
            if not sends & POLL_EVERY_SENDS - 1:
                self.joined_poll(sends)
            return RunHandle(self, run, at)
        msg = message if isinstance(message, Message) else Message(message)
        ticket, stamp = self.path.plain(msg, self.rank, dst, rank, pair, batch)
        self.sends += 1
        if not self.sends & POLL_EVERY_SENDS - 1:
            self.engine.poll()  # (see `send`)
        run = pair.run
        if run is not None and run.first_seq == stamp.seq:  # it opened a run
            return RunHandle.opener(self, run)
        return SendHandle(self, ticket, stamp, pair if self.acks else None, False)

    def joined_poll(self, sends: int) -> None:
        """What the ``sends``-th send (a multiple of `POLL_EVERY_SENDS`) does after joining a
        run: a full run goes at once, so between polls a look at the batches' age is enough."""
        if sends & POLL_EVERY_JOINS - 1:
            self.path.flush_due()
        else:
            self.engine.poll()

    def joined_many(self, before: int, after: int) -> None:
        """`joined_poll` for a bulk join that took ``sends`` from ``before`` to ``after``: a
        poll if it passed a multiple of `POLL_EVERY_JOINS`, else a look at the batches' age
        if it passed one of `POLL_EVERY_SENDS`."""
        if after // POLL_EVERY_JOINS != before // POLL_EVERY_JOINS:
            self.engine.poll()
        elif after // POLL_EVERY_SENDS != before // POLL_EVERY_SENDS:
            self.path.flush_due()

    def reply(self, request: Message, value: Any, timeout: float | None, batch: bool) -> None:
        """Send ``value`` back to the sender of ``request`` (the run loop's replies may be
        batched: the loop flushes them whenever it is idle)."""
        if request.id is None or request.source is None or request.dest is None:
            raise ValueError(f"reply() needs a received message, got {request!r}")
        self.send(value, request.dest, request.source, False, timeout, request.id, 0, batch)

    # -- receiving -------------------------------------------------------------------------

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
        if index is not None and not parcel.attempts:
            queue.taken(index, message)
        else:
            state.update(work_queue=queue.name, source=queue.dispatcher)

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
        self, index: int, match: Match | None, key: Any, timeout: float | None, spun: bool = False
    ) -> tuple[Parcel, Any] | None:
        """Take the next matching parcel of local node ``index``, waiting up to ``timeout``
        seconds (None: no limit; 0: do not wait) for one; None if none came. ``spun``: the
        caller has just spun (`Engine.take_express`): wait at once."""
        engine = self.engine
        if self.closed:
            return engine.take(index, match, key, False)
        self.receives += 1
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
            return self._wait_take(index, match, key, timeout, started)
        finally:
            self.waited(index, started, "wait: receive")

    def _take_retry(
        self, index: int, match: Match | None, key: Any, timeout: float | None
    ) -> tuple[Parcel, Any] | None:
        """One process, nothing else can arrive: wait out the back-off of a failed message
        put back for a retry, if it ends within ``timeout``, and take what is then ready."""
        inbox = self.inboxes[index]
        engine = self.engine
        deadline = None if timeout is None else time.monotonic() + timeout

        def look() -> tuple[Parcel, Any] | Marker | None:
            if self.closed:  # by another thread, while this one paused
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
        self, index: int, match: Match | None, key: Any, timeout: float | None, started: float
    ) -> tuple[Parcel, Any] | None:
        engine = self.engine
        transport = self.transport
        deadline = None if timeout is None else time.monotonic() + timeout

        def look() -> tuple[Parcel, Any] | Marker | None:
            if self.closed:  # by another thread, while this one paused
                return None
            found = engine.take(index, match, key, False)
            return IDLE if found is None else found

        def alone() -> bool:  # one process, and the threads that could send to it are gone
            return not (transport.delivers_later or senders_may_run())

        # (receive looked just now, before its first spin)
        wait = Wait(engine, deadline, started, looked=True)
        return wait.until(look, None if transport.delivers_later else alone)

    def waited(self, index: int, started: float, what: str) -> None:
        """Count the time node ``index`` spent waiting since ``started`` (perf_counter)."""
        seconds = time.perf_counter() - started
        self.engine.stats[index].wait_seconds += seconds
        if TRACER.on:
            TRACER.span(what, index, now_us() - seconds * 1e6)

    def arrive(self, deadline: float | None = None) -> bool:
        """Before a collective step: wait, serving, until every rank has come to it; False at
        the deadline (`time.monotonic`).

        A rank may still wait in ``request()`` for a reply from one of this rank's nodes (or
        for a task this rank hands out): it joins the collective only once answered, and a
        blocking collective entered first would leave both waiting until a timeout.
        """
        if not self.transport.delivers_later:
            return True  # one process: every node is served by whoever waits
        return wait_for(self.engine, self.transport.all_entered(), deadline, TOGETHER_YIELD)

    def agree(self, value: bytes, what: str) -> None:
        """`Transport.check_same` (every rank passes the same ``value``) once every rank is
        here (`arrive`)."""
        self.arrive()
        self.transport.check_same(value, what)

    def wait_until(self, done: Callable[[], bool], deadline: float | None) -> bool:
        """Drive progress until ``done()`` or ``deadline`` (`time.monotonic`); False then."""
        return self.engine.wait(done, deadline)

    # -- the end ---------------------------------------------------------------------------

    def unreceived(self) -> dict[str, Counter[str]]:
        """The messages queued at this rank's nodes, by node and type."""
        return {
            self.names[index]: Counter(
                codec.short_name(codec.peek(parcel.meta).class_name) for parcel in inbox
            )
            for index, inbox in self.inboxes.items()
            if len(inbox)
        }

    def report_unreceived(self) -> None:
        """Warn about the messages this rank's nodes never received."""
        left = self.unreceived()
        if not left:
            return
        parts = []
        for node, types in left.items():
            kinds = ", ".join(f"{count} {name}" for name, count in types.most_common())
            parts.append(f"{node}: {sum(types.values())} message(s) ({kinds})")
        log.warning(
            "the job ends with messages never received: %s (receive() them, or run() their "
            "handlers, before the end)",
            "; ".join(parts),
        )
