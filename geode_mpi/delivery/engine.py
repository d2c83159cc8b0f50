"""The delivery engine: sequence numbers, dedup and order, acks, outboxes, credits, retries.

One engine serves the nodes of one rank. It sits between the transport (whose sink it is)
and the node queues: every data message arriving is let through once and in order per
(source, dest) pair; every message a node finishes with is acknowledged to its sender, in
batches; senders keep what is not acknowledged in an outbox and, with flow control, spend a
credit per message that the receiver returns when it takes the message from its queue.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

from geode_mpi.delivery.acks import Acks
from geode_mpi.delivery.arriving import MALFORMED_WARNINGS as MALFORMED_WARNINGS
from geode_mpi.delivery.arriving import Arriving
from geode_mpi.delivery.arriving import queued_as as queued_as  # (tests import it here)
from geode_mpi.delivery.config import QueueConfig
from geode_mpi.delivery.credits import Credits
from geode_mpi.delivery.engine_state import Decoder
from geode_mpi.delivery.express import Express
from geode_mpi.delivery.pairs import PairIn, PairOut
from geode_mpi.delivery.polling import Polling
from geode_mpi.delivery.sending import SendPath
from geode_mpi.delivery.stats import DeadLetters, NodeStats
from geode_mpi.delivery.streams import Streams
from geode_mpi.delivery.taking import Acknowledger as Acknowledger
from geode_mpi.delivery.taking import Taking
from geode_mpi.delivery.topics import TopicTable
from geode_mpi.queues import Inbox, Parcel
from geode_mpi.transport import Transport


class Engine(Arriving, Taking, Credits, Acks, Streams, Polling, Express):
    """Delivery state of the nodes one rank hosts (its parts, one group each, in the mixins it
    inherits: the arrival path in arriving.py, over acks.py and streams.py; the takes in
    taking.py, over credits.py; the express receive in express.py; credits.py and polling.py
    over failures.py; all over engine_state.py).

    Args:
        transport: this rank's transport (the engine becomes its sink).
        names: every node's name, by index.
        rank_of: the rank hosting a node index.
        local: the node indices this rank hosts.
        configs: every node's queue settings, by index (the same on every rank).
        resend_after: seconds after which an unacknowledged message is sent again (None: never;
            MPI does not lose messages, so this matters only on a lossy transport).
        decode: turns a parcel into a Message (for dead letters).
        acks: track every message sent until it is acknowledged (see `SendPath`).
    """

    # (class defaults: set on an engine only once used, to keep its attributes inline)
    # True while a forwarder (a sequencer, a dispatcher, a consumer asking for its next task)
    # holds a message for want of room at its destination, and what sends on what was held
    # once room comes (called by each poll or wait while one holds: never waiting itself).
    held_for_room = False
    on_room: Callable[[], None] | None = None
    # The local nodes that messages reached to be forwarded: they forward, and return their
    # senders' credits, until every rank has closed (no closing notice for them).
    forwarders: frozenset[int] = frozenset()

    def __init__(
        self,
        transport: Transport,
        names: Sequence[str],
        rank_of: Callable[[int], int],
        local: Sequence[int],
        configs: Sequence[QueueConfig],
        resend_after: float | None,
        decode: Decoder,
        acks: bool = True,
    ) -> None:
        self.transport = transport
        self.names = names
        self._node_rank = rank_of
        self.topics = TopicTable()
        self.configs = configs
        self.resend_after = resend_after
        self.decode = decode
        self.inboxes = {
            index: Inbox(configs[index].capacity, configs[index].policy == "drop_oldest")
            for index in local
        }
        self.stats = {index: NodeStats(names[index]) for index in local}
        for index, inbox in self.inboxes.items():
            inbox.on_expired = self._expiry(index)
        # The counters a sender's traffic goes to: its node's, also for its topic streams.
        self.sender_stats = dict(self.stats)
        # The dead letters kept: the newest max_dead_letters of each node (all are counted);
        # only nodes that had one (an empty deque is 760 bytes: 3.5 MB for 5,000 nodes).
        self.dead: dict[int, DeadLetters] = {}
        self.pairs_out: dict[tuple[int, int], PairOut] = {}  # (source, dest) -> its send side
        self._in: dict[tuple[int, int], PairIn] = {}
        self._due: set[tuple[int, int]] = set()  # incoming pairs with acks or credits to send
        self._due_since = 0.0  # when the oldest of them became due (perf_counter)
        self._explicit = {index: configs[index].ack == "explicit" for index in local}
        self._window = {index: configs[index].credits(len(names)) for index in local}
        # Nodes whose queue has no window and automatic acks: taking is processing, at once.
        self.plain = {i for i in local if self._window[i] is None and not self._explicit[i]}
        self._next_resend = 0.0
        self._asked: dict[tuple[int, int], list[float]] = {}  # when each pair last asked
        self.in_hand = 0  # messages taken with an explicit ack, not yet acked or nacked
        # Arrivals dropped because their header could not be routed, by sending rank.
        self.malformed: dict[int, int] = {}
        self.closed = False  # set by the Geode once its transport is closed
        # Quiescence-wave records go to this: (from node, type, wave, sent, received).
        self.on_wave: Callable[[int, int, int, int, int], None] | None = None
        # Messages a local node must forward as a group's sequencer, in arrival order, and
        # what forwards them (outside the transport's sink, where sending may wait).
        self.forwards: deque[tuple[int, Parcel]] = deque()
        self.on_forward: Callable[[int, Parcel], None] | None = None
        # Local nodes where a message whose sender waits for its processing arrived, and what
        # serves them (the Geode's handlers) whenever this rank waits.
        self.waited: set[int] = set()
        self.on_waited: Callable[[], None] | None = None
        # Every message and control record this rank sends leaves through here.
        self.path = SendPath(
            transport, names, self.sender_stats, self.rank_of, local, acks, resend_after
        )
        transport.attach(self.sink, self.sink_run)

    # -- names and ranks, topic streams included -------------------------------------------

    def rank_of(self, index: int) -> int:
        """The rank hosting a node, or the publisher of a topic stream."""
        if index >= len(self.names):
            index = self.topics.publisher_of(index)
        return self._node_rank(index)

    @property
    def closer(self) -> threading.Thread | None:
        """The thread in close(), once it began: the waits of the other threads end (`Wait`)."""
        return self.path.closer

    @closer.setter
    def closer(self, thread: threading.Thread | None) -> None:
        self.path.closer = thread

    @property
    def close_unfinished(self) -> bool:
        """The closer's close() ended without finishing (timed out, or raised): the Geode
        stays closing (sealed, its transport open) until close() is called again."""
        return self.path.close_unfinished

    @close_unfinished.setter
    def close_unfinished(self, unfinished: bool) -> None:
        self.path.close_unfinished = unfinished

    def name_of(self, index: int) -> str:
        """A node's name, or ``"publisher on topic"`` for a topic stream."""
        if index < len(self.names):
            return self.names[index]
        stream = self.topics.streams[index]
        return f"{self.names[stream.publisher]} on topic {stream.topic!r}"
