"""What every part of the Geode facade holds (its parts: the ``facade_*.py`` modules)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geode_mpi.errors import ReceiveTimeout

if TYPE_CHECKING:
    from geode_mpi.base.gate import Gate
    from geode_mpi.core.channels import Channels
    from geode_mpi.core.checkpointing import Checkpointer
    from geode_mpi.core.filters import TypeFilter
    from geode_mpi.core.groups import Sequencer
    from geode_mpi.core.handles import SendHandle
    from geode_mpi.core.observe import Observed
    from geode_mpi.core.processing import Processor
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.core.subscriptions import Subscription
    from geode_mpi.core.topics import Topic
    from geode_mpi.queues import Match
    from geode_mpi.transport import Transport, WaitNotice, Watchdog


class Facade:
    """The state `Geode.__init__` sets, declared for its parts (the mixins `Geode` inherits:
    each holds one group of its public calls, and they reach one another through ``self``)."""

    if TYPE_CHECKING:  # declared only: at run time the class has no annotations to resolve
        _runtime: Runtime
        _transport: Transport
        _gate: Gate
        _processor: Processor
        _channels: Channels
        _sequencer: Sequencer
        _checkpointer: Checkpointer | None
        _watchdog: Watchdog | None
        _notice: WaitNotice | None
        _observed: Observed
        rank: int
        size: int
        restored_state: dict[str, Any] | None
        _own: tuple[str, int]  # what a call may name this rank's own node by
        _matchers: dict[Any, Match | None]  # (source, type) -> its match (`_matcher`)

        @property
        def node(self) -> str: ...  # (facade_nodes.py)

        # defined in core/facade_receiving.py, beside the receive they serve
        def _nothing_came(
            self,
            call: str,
            index: int,
            timeout: float | None,
            source: str | int | None,
            type_filter: TypeFilter,
            waited: bool,
            was_open: bool = False,
            defaulted: bool = False,
            topic: Topic | Subscription | str | None = None,
        ) -> ReceiveTimeout: ...

        def _matcher(
            self,
            source: str | int | None,
            type_filter: TypeFilter,
            topic: Topic | Subscription | str | None = None,
        ) -> Match | None: ...

    def _no_reply(self, handle: SendHandle, timeout: float | None, waited: bool) -> ReceiveTimeout:
        """The error of a request (``handle``, sent by this rank) whose reply did not come."""
        src = self._runtime.placement.index(handle.source)
        return ReceiveTimeout(
            handle.source,
            timeout or 0.0,
            handle.dest,
            f"reply to message {handle.id}",
            len(self._runtime.inboxes[src]),
            waited=waited,
            reply_to=handle.id,
        )
