"""What the parts of `Runtime` share: its polling constants, the shape of a work queue and of
what serves its nodes with handlers, and the state they use (declared)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from geode_mpi.message import Message

if TYPE_CHECKING:
    from geode_mpi.base.gate import Gate
    from geode_mpi.core.placement import Placement
    from geode_mpi.delivery import Engine
    from geode_mpi.delivery.pairs import PairOut
    from geode_mpi.delivery.sending import SendPath
    from geode_mpi.errors import ClosedError
    from geode_mpi.queues import Inbox, Parcel
    from geode_mpi.transport import Transport

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


class TaskSource(Protocol):
    """What a consumer's taken task asks of its work queue (`geode_mpi.core.workqueues`)."""

    @property
    def name(self) -> str: ...

    @property
    def dispatcher(self) -> str: ...

    def taken(self, index: int, message: Message) -> None: ...

    def want_next(self, index: int) -> None: ...


class Served(Protocol):
    """What serves the local nodes with their handlers, as the runtime's waits and takes call
    it (`geode_mpi.core.processing.Processor`)."""

    def pump(self, nodes: list[int], done: Callable[[], bool], deadline: float | None) -> bool:
        """Process these local nodes' messages with their handlers until ``done()`` or none
        is left (a wait in one process that only local processing can end), starting none
        once ``deadline`` has passed."""
        ...

    def refuse_undecodable(self, index: int, parcel: Parcel, error: BaseException) -> None:
        """Answer a request that node ``index`` took and could not decode with the failure."""
        ...

    def has_handlers(self, index: int) -> bool:
        """Whether local node ``index`` has a handler (that may send while a wait serves it)."""
        ...


class RuntimeParts:
    """The state `Runtime.__init__` sets, declared for the parts it inherits (`Sending`,
    runtime_sending.py: send, reply; `Receiving`, runtime_receiving.py: decode, take, wait),
    which reach it and each other through ``self``."""

    if TYPE_CHECKING:  # declared only: at run time the class has no annotations to resolve
        transport: Transport
        express_spin: Callable[[float], tuple[int, bytearray] | bool] | None
        gate: Gate
        owned: Callable[[], bool]
        rank: int
        size: int
        placement: Placement
        names: tuple[str, ...]
        index_of: dict[str, int]
        routes: dict[Any, tuple[int, int, PairOut]]
        local: tuple[int, ...]
        acks: bool
        engine: Engine
        inboxes: dict[int, Inbox]
        queued: dict[int, deque[Parcel]]
        plain_queue: deque[Any]
        path: SendPath
        counter: dict[int, int]
        closed: bool
        sealed: bool
        serving: bool
        all_closing: bool
        finished: bool
        arrived: Callable[[], bool] | None
        sends: int
        receives: int
        unfinished_checks: int
        task_sources: Mapping[int, TaskSource]
        served: Served

        # one part's (or runtime.py's), called by another
        def serialised(self, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R: ...

        def closed_error(self, operation: str) -> ClosedError: ...

        def wait_until(
            self, done: Callable[[], bool], deadline: float | None, call: str | None = None
        ) -> bool: ...

        def poll(self) -> bool: ...

        def pump(
            self, nodes: list[int], done: Callable[[], bool], deadline: float | None
        ) -> bool: ...
