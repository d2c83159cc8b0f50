"""What the parts of `Engine` share: the header flags and kinds they read, and the state its
``__init__`` sets, declared for the mixins it inherits (arriving.py, taking.py, credits.py,
failures.py, acks.py, streams.py, polling.py), which reach one another through ``self``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from geode_mpi import codec
from geode_mpi.codec import header
from geode_mpi.message import Message
from geode_mpi.queues import Parcel

if TYPE_CHECKING:
    import threading
    from collections import deque
    from collections.abc import Sequence

    from geode_mpi.delivery.config import QueueConfig
    from geode_mpi.delivery.pairs import PairIn, PairOut
    from geode_mpi.delivery.sending import SendPath
    from geode_mpi.delivery.stats import DeadLetters, NodeStats
    from geode_mpi.delivery.topics import TopicTable
    from geode_mpi.errors import DecodeError
    from geode_mpi.queues import Inbox
    from geode_mpi.transport import Transport

Decoder = Callable[[Parcel], Message]
_tuple_new = tuple.__new__
_FLAG_RESENT = codec.FLAG_RESENT
_FLAG_TRACKED = codec.FLAG_TRACKED
_FLAG_WAITED = codec.FLAG_WAITED
_FLAG_SEQUENCE = codec.FLAG_SEQUENCE
_FLAG_TOPIC = codec.FLAG_TOPIC
_FLAG_QOS = codec.FLAG_QOS
# Arrivals that leave the in-order fast paths: a sequencer's, those whose sender waits for
# their processing (requests, sends with ack=True), which are noted in `waited`, and those
# with a priority or a ttl (`queued_as`).
_DIVERT = _FLAG_SEQUENCE | _FLAG_WAITED | _FLAG_QOS
_KIND_AT = header.KIND_AT  # meta[_KIND_AT]: a message's kind, read on every arrival
_KIND_CONTROL = header.KIND_CONTROL
_KIND_RUN = header.KIND_RUN
_NOT_ONE = frozenset((_KIND_CONTROL, _KIND_RUN))  # kinds that are not one message
# What `Engine.take_arrival` leaves to the sink: the diverted, a topic's (dest is the topic)
# and a work queue's task (source is its stream). Its route byte (`_FLAG_QOS`) is read apart.
_NOT_TAKEN = _DIVERT | _FLAG_TOPIC | codec.FLAG_WORK


class EngineState:
    """The state `Engine.__init__` sets (delivery/engine.py), declared for its parts, and the
    calls one part makes of another."""

    if TYPE_CHECKING:  # declared only: at run time the class has no annotations to resolve
        transport: Transport
        names: Sequence[str]
        topics: TopicTable
        configs: Sequence[QueueConfig]
        resend_after: float | None
        decode: Decoder
        inboxes: dict[int, Inbox]
        stats: dict[int, NodeStats]
        sender_stats: dict[int, NodeStats]
        dead: dict[int, DeadLetters]
        pairs_out: dict[tuple[int, int], PairOut]
        _in: dict[tuple[int, int], PairIn]
        _due: set[tuple[int, int]]
        _due_since: float
        _explicit: dict[int, bool]
        _window: dict[int, int | None]
        plain: set[int]
        _next_resend: float
        _asked: dict[tuple[int, int], list[float]]
        in_hand: int
        malformed: dict[int, int]
        closed: bool
        closer: threading.Thread | None
        close_unfinished: bool
        on_wave: Callable[[int, int, int, int, int], None] | None
        forwards: deque[tuple[int, Parcel]]
        on_forward: Callable[[int, Parcel], None] | None
        held_for_room: bool
        forwarders: frozenset[int]
        on_room: Callable[[], None] | None
        waited: set[int]
        on_waited: Callable[[], None] | None
        path: SendPath

        # set in delivery/credits.py (`tell_closing`'s records arriving, in acks.py)
        closing_nodes: frozenset[int]
        # (source, forwarder) -> the closing node the forwarder holds source's message for
        # (`tell_held`'s records arriving, in acks.py)
        closing_beyond: dict[tuple[int, int], int]
        # (waiter, source) asked of this rank, (waiter, source) this rank asked, and source ->
        # envelopes its rank sent here before it said it sends no more (class defaults, acks.py)
        awaited: frozenset[tuple[int, int]]
        asked: frozenset[tuple[int, int]]
        sends_done: dict[int, int]
        group_sequencers: frozenset[int]
        # the same for a receive with no source: asked of and by every rank, rank -> envelopes
        awaited_ranks: frozenset[tuple[int, int]]
        asked_ranks: bool
        ranks_done: dict[int, int]
        relaying_ranks: frozenset[int]
        # (source, dest, seq) of every message told "closing" (a class default in acks.py)
        closing_told: set[tuple[int, int, int]] | None
        # (source, dest, seq) of the messages sent with ack=True that dest dropped or let
        # expire unprocessed (set in acks.py as their records arrive; None: none yet)
        lost: dict[tuple[int, int, int], str] | None

        # set in delivery/taking.py (`take_arrival`), read in delivery/express.py
        refused: tuple[memoryview | bytearray, DecodeError] | None

        # defined in delivery/engine.py
        def name_of(self, index: int) -> str: ...

        def rank_of(self, index: int) -> int: ...

        # defined in delivery/arriving.py
        def _admit(
            self, key: tuple[int, int], pair: PairIn, parcel: Parcel, dest: int, inbox: Inbox
        ) -> None: ...

        def release_held(self, pair: PairIn, dest: int) -> None: ...

        # defined in delivery/taking.py
        def _done(self, index: int, parcel: Parcel) -> None: ...

        # defined in delivery/acks.py
        def mark_due(self, key: tuple[int, int]) -> None: ...

        def flush(self) -> None: ...

        def _flush_pair(self, key: tuple[int, int], pair: PairIn, again: bool = False) -> None: ...

        # defined in delivery/credits.py
        def _resend_due(self) -> None: ...

        def dropped(self, index: int, parcel: Parcel) -> None: ...

        # defined in delivery/polling.py
        def forward(self) -> None: ...

        def wait(
            self,
            done: Callable[[], bool],
            deadline: float | None,
            call: str | None = None,
            what: Callable[[], str] | None = None,
        ) -> bool: ...
