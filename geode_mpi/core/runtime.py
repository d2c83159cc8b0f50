"""The runtime behind a Geode: its state, point-to-point send, receive and the waits.

`Geode` is the facade (public methods, argument checks, docstrings); this object holds what
the core's other modules share (the transport, the delivery engine, the node queues, the
placement) and does the work they call: send, take a message from a queue, wait. Those
modules import this one, never `geode_mpi.core.geode`. Its sends are in runtime_sending.py,
its receives and waits in runtime_receiving.py, over runtime_parts.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from geode_mpi import codec
from geode_mpi.base.backoff import TOGETHER_YIELD
from geode_mpi.base.listing import counted_nodes
from geode_mpi.base.logger import log
from geode_mpi.core.aio import POLL_EVERY_RECEIVES as POLL_EVERY_RECEIVES
from geode_mpi.core.placement import Placement
from geode_mpi.core.runtime_parts import _P, _R, Served, TaskSource
from geode_mpi.core.runtime_parts import FIRST_SPIN as FIRST_SPIN
from geode_mpi.core.runtime_parts import NO_FAST_QUEUE as NO_FAST_QUEUE
from geode_mpi.core.runtime_parts import POLL_EVERY_JOINS as POLL_EVERY_JOINS
from geode_mpi.core.runtime_parts import POLL_EVERY_SENDS as POLL_EVERY_SENDS
from geode_mpi.core.runtime_receiving import Receiving
from geode_mpi.core.runtime_sending import Sending
from geode_mpi.delivery import Engine, QueueConfig
from geode_mpi.delivery.pairs import PairOut
from geode_mpi.delivery.waiting import wait_for
from geode_mpi.errors import ClosedError, NodeNotLocalError
from geode_mpi.queues import Inbox, Parcel
from geode_mpi.transport import Transport


class _NotServed:
    """No handlers serve the nodes (until a `Processor` takes the runtime's ``served``)."""

    def pump(self, nodes: list[int], done: Callable[[], bool], deadline: float | None) -> bool:
        return done()

    def refuse_undecodable(self, index: int, parcel: Parcel, error: BaseException) -> None:
        return None

    def has_handlers(self, index: int) -> bool:
        return False


class Runtime(Sending, Receiving):
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
        # acks, no window, not closed, keeps all: `Receiving.take` admits what arrived before
        # taking from a queue that drops); an empty deque otherwise.
        fast = self.rank in self.engine.plain and not self.inboxes[self.rank].drop_oldest
        self.plain_queue = self.queued[self.rank] if fast else NO_FAST_QUEUE
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
        # handlers while a send waits for its ack, and answers a request a local node could
        # not decode (the Geode's `Processor`).
        self.task_sources: Mapping[int, TaskSource] = {}
        self.served: Served = _NotServed()

    def pump(self, nodes: list[int], done: Callable[[], bool], deadline: float | None) -> bool:
        """Process these local nodes' messages with their handlers until ``done()`` or none
        is left (`Served.pump`)."""
        return self.served.pump(nodes, done, deadline)

    @property
    def node(self) -> str:
        """This rank's own node."""
        return self.names[self.rank]

    # -- the gate and the checks of the public calls ---------------------------------------

    def serialised(self, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``call(*args, **kwargs)`` holding the gate: the hot paths' way in once other
        threads exist (the rest of the public calls always hold it, see `locked`)."""
        gate = self.gate
        level = gate.count()  # (see `Gate.leave`: an interrupt may come before enter takes it)
        try:
            gate.enter()
            return call(*args, **kwargs)
        finally:
            gate.leave(level)

    def check_open(self, operation: str) -> None:
        """Raise `ClosedError` for ``operation`` once closed."""
        if self.closed:
            raise ClosedError(operation)

    def check_sending(self, operation: str) -> None:
        """Raise `ClosedError` for ``operation`` once close() began (unless it serves)."""
        if self.sealed and not self.serving:
            raise self.closed_error(operation)

    def closed_error(self, operation: str) -> ClosedError:
        """The `ClosedError` of ``operation`` refused once close() began: naming the closing
        thread while its close() runs, or when it ended unfinished (the Geode stays closing)."""
        engine = self.engine
        closer = engine.closer
        if not self.closed and closer is not None:  # (still closing: says so)
            return ClosedError(operation, closer.name, engine.close_unfinished, late=True)
        return ClosedError(operation)

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

    def arrive(self, deadline: float | None = None, call: str | None = None) -> bool:
        """Before a collective step: wait, serving, until every rank has come to it; False at
        the deadline (`time.monotonic`). ``call``: the collective call, as the notice of a
        long wait and the --hang-timeout report name what this rank waits for.

        A rank may still wait in ``request()`` for a reply from one of this rank's nodes (or
        for a task this rank hands out): it joins the collective only once answered, and a
        blocking collective entered first would leave both waiting until a timeout.
        """
        if not self.transport.delivers_later:
            return True  # one process: every node is served by whoever waits
        what = None if call is None else lambda: collective_wait(call)
        entered = self.transport.all_entered()
        return wait_for(self.engine, entered, deadline, TOGETHER_YIELD, what=what)

    def agree(self, value: bytes, what: str, call: str) -> None:
        """`Transport.check_same` (every rank passes the same ``value``) once every rank is
        here (`arrive`, in ``call``)."""
        self.arrive(call=call)
        self.transport.check_same(value, what)

    def wait_until(
        self, done: Callable[[], bool], deadline: float | None, call: str | None = None
    ) -> bool:
        """Drive progress until ``done()`` or ``deadline`` (`time.monotonic`); False then.
        ``call``: the public call that waits, ended by a close() in another thread (`Wait`)."""
        return self.engine.wait(done, deadline, call)

    # -- the end ---------------------------------------------------------------------------

    def unreceived(self) -> dict[str, Counter[str]]:
        """The messages queued at this rank's nodes, by node and type (not an executor's
        own, `_receivable`)."""
        counted = {
            self.names[index]: Counter(
                codec.short_name(codec.peek(parcel.meta).class_name)
                for parcel in _receivable(inbox)
            )
            for index, inbox in self.inboxes.items()
            if len(inbox)
        }
        return {name: counts for name, counts in counted.items() if counts}

    def queued_now(self) -> dict[int, Parcel]:
        """The messages queued at this rank's nodes that a checkpoint saves (not those of an
        in-memory queue, `QueueConfig.persistent` False), by id (the parcels held: no id of
        theirs is reused by another while the mapping lives)."""
        configs = self.engine.configs
        return {
            id(parcel): parcel
            for index, inbox in self.inboxes.items()
            if configs[index].persistent
            for parcel in inbox
        }

    def report_unreceived(
        self, saved: tuple[int, dict[int, Parcel]] | None = None, last: int = 0
    ) -> None:
        """Warn about the messages this rank's nodes never received. ``saved``: a SIGTERM's
        last checkpoint and the messages queued when it was written (`queued_now`), which it
        holds: those are said (INFO) to be there for a restart, not warned about. ``last``:
        the job's last checkpoint otherwise (0: none), which the warning names: it holds
        what was queued when it was written."""
        epoch, held = saved or (0, {})
        lost: dict[str, Counter[str]] = {}
        kept: dict[str, Counter[str]] = {}
        for index, inbox in self.inboxes.items():
            for parcel in _receivable(inbox):
                where = kept if id(parcel) in held else lost
                kind = codec.short_name(codec.peek(parcel.meta).class_name)
                where.setdefault(self.names[index], Counter())[kind] += 1
        if kept:
            log.info(
                "the job ends with messages saved in checkpoint %d, which a restart delivers: %s",
                epoch,
                _counted(kept),
            )
        if lost:
            log.warning(
                "the job ends with messages never received: %s (receive() them, or run() their "
                "handlers, before the end%s)",
                _counted(lost),
                f"; checkpoint {last} holds those queued when it was written, for a restart"
                if last and not saved
                else "",
            )


def _receivable(inbox: Inbox) -> Iterator[Parcel]:
    """The parcels of ``inbox`` that a receive could take: not those private to an executor
    (tasks and its end at a worker node of a rank that never served it: close() told its
    client, `GeodeExecutor.leave_unserved`)."""
    private = inbox.private
    return (parcel for parcel in inbox if parcel.source not in private)


def _counted(queued: dict[str, Counter[str]]) -> str:
    """``node2: 3 message(s) (2 Task, 1 Message); ...``: each node's count, by type (the
    nodes with the most first, past `listing.SHOWN` of them, and how many more)."""

    def each(node: str, count: int) -> str:
        kinds = ", ".join(f"{n} {name}" for name, n in queued[node].most_common())
        return f"{node}: {count} message(s) ({kinds})"

    counts = {node: sum(types.values()) for node, types in queued.items()}
    return counted_nodes(counts, "messages", each)


def collective_wait(call: str) -> str:
    """What a rank waits for in a collective call (``topic('params')``) that some rank has not
    made: a porting slip, such as a topic made only on the rank that publishes, as a
    broadcast's root."""
    return (
        f"the other ranks to call {call} too: it is collective (every rank calls it, with the "
        "same arguments, in the same order)"
    )
