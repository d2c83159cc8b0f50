"""What the parts of `Engine` share: the state its ``__init__`` sets, declared for the mixins
it inherits (credits.py, failures.py, acks.py, streams.py, polling.py), which reach one another
through ``self``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from geode_mpi.message import Message
from geode_mpi.queues import Parcel

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Sequence

    from geode_mpi.delivery.config import QueueConfig
    from geode_mpi.delivery.pairs import PairIn, PairOut
    from geode_mpi.delivery.sending import SendPath
    from geode_mpi.delivery.stats import DeadLetter, NodeStats
    from geode_mpi.delivery.topics import TopicTable
    from geode_mpi.queues import Inbox
    from geode_mpi.transport import Transport

Decoder = Callable[[Parcel], Message]


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
        dead: dict[int, list[DeadLetter]]
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
        on_wave: Callable[[int, int, int, int, int], None] | None
        forwards: deque[tuple[int, Parcel]]
        on_forward: Callable[[int, Parcel], None] | None
        waited: set[int]
        on_waited: Callable[[], None] | None
        path: SendPath

        # defined in delivery/engine.py
        def name_of(self, index: int) -> str: ...

        def _done(self, index: int, parcel: Parcel) -> None: ...

        def _admit(
            self, key: tuple[int, int], pair: PairIn, parcel: Parcel, dest: int, inbox: Inbox
        ) -> None: ...

        # defined in delivery/acks.py
        def mark_due(self, key: tuple[int, int]) -> None: ...

        def flush(self) -> None: ...

        def _flush_pair(self, key: tuple[int, int], pair: PairIn, again: bool = False) -> None: ...

        # defined in delivery/credits.py
        def _resend_due(self) -> None: ...

        # defined in delivery/polling.py
        def wait(self, done: Callable[[], bool], deadline: float | None) -> bool: ...
