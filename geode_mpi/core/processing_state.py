"""What the parts of `Processor` share: its handlers' types, the flags they read, the answer
to a failed request, what a run did, and the state `Processor.__init__` sets (declared)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.base.record import Record
from geode_mpi.errors import HandlerError
from geode_mpi.message import Message

if TYPE_CHECKING:
    from geode_mpi.core.quiescence import Quiescence
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.delivery import Acknowledger
    from geode_mpi.queues import Match, Parcel

Handler = Callable[[Message], Any]
_WAITED = codec.FLAG_WAITED
_REQUEST = codec.REQUEST
HandlerKey = type[Message] | str
# A message class travels by its wire name, ``module:qualname`` (`geode_mpi.codec.classes`):
# RequestFailed keeps the module that defined it before the split (it re-exports it), so that
# the answer sent still names it as before.
_HOME = "geode_mpi.core.processing"


class RequestFailed(Message):
    """The answer to a request that went to the dead letters where it was handled: its data
    is what `HandlerError` says (a dict of its arguments); `request()` raises that error."""

    __module__ = _HOME

    def error(self) -> HandlerError:
        return HandlerError(**self.data)


class RunSummary(Record):
    """What one `Geode.run` call did.

    Attributes:
        processed: messages handled successfully.
        failed: handler calls that raised (each is retried or dead-lettered).
        replies: handler results sent back as replies.
        dead_letters: messages that went to the dead letters during this run.
        reason: why it ended: "quiescent", "stopped", "count", "until" or "timeout".
        seconds: how long it ran.
    """

    __match_args__ = ("processed", "failed", "replies", "dead_letters", "reason", "seconds")

    def __init__(
        self,
        processed: int = 0,
        failed: int = 0,
        replies: int = 0,
        dead_letters: int = 0,
        reason: str = "",
        seconds: float = 0.0,
    ) -> None:
        self.processed = processed
        self.failed = failed
        self.replies = replies
        self.dead_letters = dead_letters
        self.reason = reason
        self.seconds = seconds


class ProcessorState:
    """The state `Processor.__init__` sets (core/processing.py), declared for the parts it
    inherits (`Answers`, processing_answers.py: replies and refusals; `Serving`,
    processing_serving.py: the steps, the waited-for messages and the waits), which reach it
    and each other through ``self``."""

    if TYPE_CHECKING:  # declared only: at run time the class has no annotations to resolve
        geode: Runtime
        handlers: dict[int | None, dict[HandlerKey, Handler]]
        stopped: set[int]
        quiescence: Quiescence | None
        served: RunSummary
        runner: threading.Thread | None
        awaited: set[int]
        _not_awaited: Match
        answering: set[int]
        replied_to: dict[tuple[str, int], None]
        given_up: dict[tuple[int, int], None]
        closing: bool
        _told_closing: set[tuple[int, int, int]]
        handling: dict[int, int]

        # one part's (or processing.py's), called by another
        def handles(self, index: int, parcel: Parcel) -> bool: ...

        def has_handlers(self, index: int) -> bool: ...

        def process(
            self, index: int, parcel: Parcel, receipt: Acknowledger, summary: RunSummary
        ) -> None: ...

        def refuse_closing(self, index: int) -> None: ...

        def gave_up(self, src: int, request_id: int) -> None: ...
