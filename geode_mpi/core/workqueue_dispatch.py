"""A work queue's dispatcher: its messages, its state, what reaches it and what it hands out."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from geode_mpi import codec
from geode_mpi.base.gate import locked
from geode_mpi.base.logger import log
from geode_mpi.base.record import Record
from geode_mpi.delivery.authoring import unwatched
from geode_mpi.errors import GeodeTimeoutError, check_timeout
from geode_mpi.message import Message

if TYPE_CHECKING:
    from geode_mpi.base.gate import Gate
    from geode_mpi.core.runtime import Runtime


FLAG_WORK = codec.FLAG_WORK
# A message class travels by its wire name, ``module:qualname`` (`geode_mpi.codec.classes`):
# the three below keep the module that defined them before the split (it re-exports them), so
# that what is sent, and a checkpoint of a consumer's queue holding a WorkDone, name them as
# before.
_HOME = "geode_mpi.core.workqueues"


class WorkDone(Message):
    """What a consumer's request gets once the queue is finished and empty: `WorkQueue.get`
    returns None for it, and ``run()`` handles it by doing nothing."""

    __module__ = _HOME


class _Want(Message):
    """A consumer's request for one task (to the dispatcher)."""

    __module__ = _HOME


class _Finished(Message):
    """A producer will put no more tasks (to the dispatcher)."""

    __module__ = _HOME


class Dispatch(Record):
    """A work queue's dispatcher state (on the dispatcher's rank only; what a checkpoint
    saves of the queue)."""

    __match_args__ = (
        "producers_left",
        "node",
        "tasks",
        "wanting",
        "finished",
        "told",
        "dispatched",
        "finished_by",
    )

    def __init__(self, producers_left: int, node: int) -> None:
        self.producers_left = producers_left  # how many producers have not called finish()
        # the dispatcher (on another number of ranks, its new rank restores the queue)
        self.node = node
        self.tasks: deque[Message] = deque()
        self.wanting: deque[int] = deque()  # one entry per open request, oldest first
        self.finished = False
        self.told: set[int] = set()  # consumers that got WorkDone (each gets one, once)
        self.dispatched = 0
        self.finished_by: set[int] = set()  # the producers that called finish()


class Dispatching:
    """`WorkQueue`'s dispatcher side (core/workqueues.py), a part of it through ``self``: what
    reaches the dispatcher, and the tasks and `WorkDone` it hands out."""

    if TYPE_CHECKING:  # declared only: at run time the class has no annotations to resolve
        _geode: Runtime
        _gate: Gate
        name: str
        number: int
        _consumers: tuple[int, ...]
        _dispatcher: int
        _producers: frozenset[int]
        dispatch: Dispatch
        admit: Callable[[Message], bool] | None
        intercept: Callable[[Message], bool] | None

        # core/workqueues.py's
        @property
        def dispatcher(self) -> str: ...

    def arrived(self, message: Message, source: int) -> None:
        """A task, a request or a producer's finish reached the dispatcher."""
        if self.intercept is not None and self.intercept(message):
            return
        state = self.dispatch
        if isinstance(message, _Want):
            if source in state.told:
                return  # (asked as it took its last task: it has its WorkDone)
            state.wanting.append(source)
        elif isinstance(message, _Finished):
            if source in state.finished_by or source not in self._producers:
                return  # (a producer's second finish; `finish` refuses the others)
            state.finished_by.add(source)
            state.producers_left -= 1
            state.finished = state.producers_left <= 0
        elif state.finished or source in state.finished_by:
            # (put from another rank than its source's, or by a node that is no producer)
            log.error(
                "work queue %r: a task from %s reached its dispatcher %s after %s; it is "
                "dropped: no consumer would get it",
                self.name,
                self._geode.names[source],
                self.dispatcher,
                "the queue ended" if state.finished else "that producer called finish()",
            )
            return
        else:
            state.tasks.append(message)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand the tasks held out to the consumers that asked and have room for one now; a
        consumer without room keeps its turn and gets one once room comes (`send_held`):
        never a wait here, inside whatever call polled."""
        state = self.dispatch
        admit = self.admit
        wanting = state.wanting
        has_room = self._geode.engine.has_room
        number = self.number
        full = 0  # the oldest requests, of consumers found without room
        while len(wanting) > full and state.tasks:
            consumer = wanting[full]
            if not has_room(number, consumer):
                full += 1
                continue
            task = state.tasks.popleft()
            if admit is not None and not admit(task):
                continue
            del wanting[full]
            self._hand_out(task, consumer)
            state.dispatched += 1
        if state.finished and not state.tasks:
            # One WorkDone per consumer, whatever its number of open requests (``prefetch``):
            # a second would stay in its queue, for a receive of the user's to take.
            kept: deque[int] = deque()
            while wanting:
                consumer = wanting.popleft()
                if consumer in state.told:
                    continue
                if not has_room(number, consumer):
                    kept.append(consumer)
                    continue
                self._hand_out(WorkDone(), consumer)
                state.told.add(consumer)
            wanting.extend(kept)
        if wanting and (state.tasks or state.finished):
            self._geode.engine.held_for_room = True

    @locked
    def serve(self, timeout: float | None = None) -> None:
        """On the dispatcher's rank: hand tasks out until the queue is finished (every producer
        called `finish`), empty, and every consumer has been told so; elsewhere return at once.
        Not needed for the consumers to finish (`Geode.close` hands tasks out too): for a
        dispatcher that must not go on before the queue is done.

        Raises:
            GeodeTimeoutError: not finished within ``timeout`` seconds.
        """
        geode = self._geode
        if self._dispatcher not in geode.inboxes:
            return
        timeout = check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout

        state = self.dispatch

        def over() -> bool:
            return state.finished and not state.tasks and len(state.told) == len(self._consumers)

        if not geode.wait_until(over, deadline):
            raise GeodeTimeoutError(
                f"work queue {self.name!r}: serve() timed out after {timeout:g} s with "
                f"{len(state.tasks)} task(s) held, {state.producers_left} producer(s) not "
                f"finished, {len(self._consumers) - len(state.told)} consumer(s) not told"
            )

    def _hand_out(self, task: Message, consumer: int) -> None:
        """Send a task to a consumer on this queue's stream (its own numbering and acks)."""
        geode = self._geode
        engine = geode.engine
        number = self.number
        pair = engine.pair_out(number, consumer)  # (with room: `_dispatch` checked)
        rank = geode.placement.rank_of(consumer)
        # On the queue's stream, untracked unless every message is (``ack`` is for senders).
        # Not a handler's own send, whichever thread hands it out (`Unwatched`).
        send = geode.path.to_node
        unwatched(send, task, self._dispatcher, number, consumer, rank, pair, False, FLAG_WORK)
