"""What every send handle shares: the runtime it asks (`Sender`), and the held batch last seen."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from geode_mpi.base.gate import Gate
from geode_mpi.core.placement import Placement
from geode_mpi.core.poller import flush_on_yield
from geode_mpi.delivery import Engine
from geode_mpi.delivery.sending import SendTicket
from geode_mpi.transport import Transport


class Sender(Protocol):
    """What a handle asks of the runtime that sent it (`geode_mpi.core.runtime.Runtime`)."""

    @property
    def names(self) -> Sequence[str]: ...

    @property
    def placement(self) -> Placement: ...

    @property
    def transport(self) -> Transport: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def inboxes(self) -> Mapping[int, Any]: ...

    @property
    def gate(self) -> Gate: ...

    @property
    def closed(self) -> bool: ...

    unfinished_checks: int
    owned: Callable[[], bool]

    def serialised(self, call: Callable[..., Any], *args: Any) -> Any: ...

    def poll(self) -> bool: ...

    def wait_until(
        self, done: Callable[[], bool], deadline: float | None, call: str | None = None
    ) -> bool: ...

    def pump(self, nodes: list[int], done: Callable[[], bool], deadline: float | None) -> bool: ...


ELSEWHERE = -1  # the id and seq of a handle for a send another rank makes
# The held batch whose ticket a handle last saw: a batch's first handle (any other is
# unlikely to be first) asks asyncio to flush it (`flush_on_yield`), not every message's.
_seen: list[SendTicket | None] = [None]


def _first_held(geode: Sender, ticket: SendTicket) -> None:
    """The first handle of a held batch: asyncio flushes it (see `_seen`)."""
    _seen[0] = ticket
    flush_on_yield(geode)
