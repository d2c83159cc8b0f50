"""Work queues: each task is processed by exactly one consumer, handed out by load.

A work queue has a **dispatcher** node that holds its tasks and its consumers' requests. A
producer's `WorkQueue.put` sends the task to the dispatcher; each consumer asks for a task
(``prefetch`` of them at the start, then one more each time it takes one), and the dispatcher
hands the oldest task to the oldest request. A consumer busy with a long task asks for nothing,
so the others take the next tasks: the load balances itself, with at most ``prefetch`` tasks
waiting in any consumer's queue.

Tasks reach a consumer's queue from the queue's own *stream* (a number beyond every node index,
like a topic's), so the delivery layer numbers, orders, acknowledges and flow-controls them per
(queue, consumer), and a consumer can tell them apart from its other messages. They arrive with
``msg.work_queue`` set and ``msg.source`` the dispatcher. Creating a work queue is collective.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.base.gate import locked, senders_may_run
from geode_mpi.base.listing import some_names
from geode_mpi.codec.classes import class_name
from geode_mpi.codec.header import ROUTE_WORK
from geode_mpi.core.handles import SendHandle
from geode_mpi.core.workqueue_dispatch import FLAG_WORK as FLAG_WORK
from geode_mpi.core.workqueue_dispatch import Dispatch as Dispatch
from geode_mpi.core.workqueue_dispatch import Dispatching
from geode_mpi.core.workqueue_dispatch import WorkDone as WorkDone  # (its wire name's module)
from geode_mpi.core.workqueue_dispatch import _Finished as _Finished
from geode_mpi.core.workqueue_dispatch import _Want as _Want
from geode_mpi.delivery.topics import TopicStream
from geode_mpi.errors import ReceiveTimeout, check_timeout
from geode_mpi.message import Message

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime


class WorkQueue(Dispatching):
    """A named queue of tasks, each processed by exactly one of its consumers.

    Create it with `Geode.work_queue`. Producers call `put`; consumers either run handlers
    (``@geode.on(TaskType)`` and ``geode.run()``: taking a task asks for the next) or pull with
    `get`. The dispatcher's rank hands tasks out whenever it waits in geode_mpi (a run loop, a
    receive, a request, a send's wait, and `Geode.close`, which keeps handing them out until
    every rank has called it): a job needs no extra call there for its consumers to finish.
    """

    def __init__(
        self,
        geode: Runtime,
        name: str,
        number: int,
        consumers: Sequence[int],
        dispatcher: int,
        prefetch: int,
        producers: Sequence[int],
    ) -> None:
        self._geode = geode
        self._gate = geode.gate  # its public calls hold it, as the Geode's do
        self.name = name
        self.number = number  # the stream its tasks reach the consumers on
        self._consumers = tuple(consumers)
        self._dispatcher = dispatcher
        self.prefetch = prefetch
        self._producers = frozenset(producers)
        self.dispatch = Dispatch(len(self._producers), dispatcher)
        # On the consumers' ranks: the local consumers that took their `WorkDone` (a `get`
        # for one of them returns None at once: the dispatcher sends each one WorkDone only).
        self._ended: set[int] = set()
        # On the dispatcher's rank: asked about each task about to be handed out; False drops
        # it (an executor's cancelled future, `geode_mpi.core.executor`). None: keep them all.
        self.admit: Callable[[Message], bool] | None = None
        # An executor's queue (`staffing.open_executor`): a restart drops its saved state.
        self.executor = False
        # On the dispatcher's rank: offered first each message reaching the dispatcher on this
        # queue; True takes it (an executor's task outcomes). None: every one is queue traffic.
        self.intercept: Callable[[Message], bool] | None = None
        # On the consumers' ranks: requests for a next task that found no room at the
        # dispatcher (a bounded queue), one entry per request, sent once room comes (a poll's
        # `send_held`): a take asks inside the user's receive, which must neither wait nor raise.
        self._wants_held: deque[int] = deque()
        # On the producers' ranks: the local producers that called `finish` (a put from one
        # of them raises).
        self._finished_here: set[int] = set()
        geode.engine.add_stream(TopicStream(number, -1, name, dispatcher))

    def start(self) -> None:
        """Each local consumer asks for its first ``prefetch`` tasks."""
        for consumer in self._consumers:
            if consumer in self._geode.inboxes:
                for _ in range(self.prefetch):
                    self._want(consumer)

    def consumer_state(self) -> tuple[list[int], list[int]]:
        """What a checkpoint saves of this rank's consumers: (those the queue is over for,
        one entry per request to send after a restart). Over: those that took their
        `WorkDone`, and those whose WorkDone an in-memory queue (``persistent=False``) drops
        (the dispatcher sends each one WorkDone only). Requests: those held for want of room,
        and one per task an in-memory queue drops (the dispatcher counts it handed out: each
        task taken asks for the next, and a dropped one is never taken)."""
        geode = self._geode
        ended = set(self._ended)
        asks = list(self._wants_held)
        done = class_name(WorkDone)
        for consumer in self._consumers:
            inbox = geode.inboxes.get(consumer)
            if inbox is None or geode.engine.configs[consumer].persistent:
                continue
            for parcel in inbox:
                if parcel.source != self.number:
                    continue
                if codec.class_name_of(parcel.meta) == done:
                    ended.add(consumer)
                else:
                    asks.append(consumer)
        return sorted(ended), asks

    def restore_consumers(self, ended: Sequence[int], asks: Sequence[int]) -> None:
        """Restarted: this rank's consumers' part of `consumer_state` (each node's entries
        on the rank that hosts it now): the queue is over for those ``ended``, and the
        requests ``asks`` are sent (or held until room comes)."""
        inboxes = self._geode.inboxes
        self._ended.update(index for index in ended if index in inboxes)
        for consumer in asks:
            if consumer in inboxes:
                self._want(consumer)

    # -- what it is ------------------------------------------------------------------------

    @property
    def consumers(self) -> tuple[str, ...]:
        return tuple(self._geode.names[index] for index in self._consumers)

    @property
    def consumer_indices(self) -> tuple[int, ...]:
        return self._consumers

    @property
    def producer_indices(self) -> frozenset[int]:
        return self._producers

    @property
    def dispatcher(self) -> str:
        return self._geode.names[self._dispatcher]

    @property
    def waiting(self) -> int:
        """Tasks held by the dispatcher, not yet handed out (on the dispatcher's rank)."""
        return len(self.dispatch.tasks)

    def __repr__(self) -> str:
        return (
            f"<WorkQueue {self.name!r} dispatcher={self.dispatcher} "
            f"consumers={list(self.consumers)} prefetch={self.prefetch}>"
        )

    # -- producers -------------------------------------------------------------------------

    @locked
    def put(
        self, task: Any, source: str | int | None = None, *, timeout: float | None = None
    ) -> SendHandle:
        """Queue a task (a Message, or any picklable value) from ``source`` (default: this
        rank's node). When another rank hosts ``source``, that rank queues it: the handle here
        is done at once (``handle.local`` is False)."""
        self._check_open(source)
        msg = task if isinstance(task, Message) else Message(task)
        return self._to_dispatcher(msg, source, timeout)

    def _check_open(self, source: str | int | None) -> None:
        """Refuse a put after ``source`` called `finish`, or after the queue ended (known on
        the dispatcher's rank): no consumer would ever get the task."""
        geode = self._geode
        index = geode.rank if source is None else geode.placement.index(source, "source")
        name = geode.names[index]
        if index in self._finished_here or index in self.dispatch.finished_by:
            raise RuntimeError(
                f"put(source={name!r}) on work queue {self.name!r} after {name} called "
                "finish(): no consumer would get the task (put every task before finish())"
            )
        if self.dispatch.finished:
            raise RuntimeError(
                f"put(source={name!r}) on work queue {self.name!r} after it ended (every "
                "producer called finish()): no consumer would get the task"
            )

    @locked
    def finish(self, source: str | int | None = None) -> None:
        """Say that ``source`` will put no more tasks. Once every producer node has (each
        rank's node by default, every node for a one-process world), `get` returns None to
        the consumers after the last task. A producer's second finish changes nothing.

        Raises:
            ValueError: ``source`` is not a producer of this queue.
            QueueFull: the dispatcher's queue (policy ``raise``) is full for ``source``, as
                for `put`: nothing was sent, call it again once the dispatcher took tasks.
        """
        geode = self._geode
        index = geode.rank if source is None else geode.placement.index(source, "source")
        if index not in self._producers:
            name = geode.names[index]
            names = some_names(geode.names[i] for i in sorted(self._producers))
            raise ValueError(
                f"finish(source={name!r}): {name} is not a producer of work queue "
                f"{self.name!r} (producers: {names})"
            )
        self._to_dispatcher(_Finished(), source, None)
        self._finished_here.add(index)

    def notify(self, msg: Message, source: int) -> None:
        """`put` at once, room or not: a word its dispatcher takes in (`intercept`), never
        queued there (its credit comes back then)."""
        self._to_dispatcher(msg, source, None, room=False)

    def _to_dispatcher(
        self, msg: Message, source: str | int | None, timeout: float | None, room: bool = True
    ) -> SendHandle:
        return self._geode.send(
            msg,
            source,
            self._dispatcher,
            False,
            timeout,
            codec.NO_REPLY,
            codec.FLAG_SEQUENCE,
            via=codec.Route(ROUTE_WORK, self.number),
            # An executor's tasks and outcomes wait for room: the user's policy ``raise`` is
            # for the user's sends (a task's failure is its future's, never its rank's).
            block=self.executor,
            room=room,
        )

    # -- consumers -------------------------------------------------------------------------

    @locked
    def get(self, node: str | int | None = None, *, timeout: float | None = None) -> Message | None:
        """The next task for consumer ``node`` (default: this rank's node), waiting for one;
        None once the queue is finished (see `finish`) and empty.

        Raises:
            ReceiveTimeout: no task within ``timeout`` seconds.
            ValueError: ``node`` is not a consumer of this queue.
        """
        geode = self._geode
        index = geode.local_index(node, "get")
        if index not in self._consumers:
            raise ValueError(f"{geode.names[index]} is not a consumer of work queue {self.name!r}")
        timeout = check_timeout(timeout)
        if index in self._ended:
            return None  # (its one WorkDone was taken: the queue is over for it)
        found = geode.take(index, self._is_mine, None, timeout, what=lambda: self._awaited(index))
        if found is None:
            geode.check_open("get")
            queued = len(geode.inboxes[index])
            waited = geode.transport.delivers_later or senders_may_run()
            ends = "; every producer's finish() ends the queue (get() then returns None)"
            raise ReceiveTimeout(
                geode.names[index], timeout or 0.0, self.dispatcher, None, queued, waited, "get",
                hint="" if waited else ends,
            )  # fmt: skip
        message = geode.deliver(index, found)
        return None if isinstance(message, WorkDone) else message

    def _awaited(self, index: int) -> str:
        """What a consumer's `get` waits for (the notice of a long wait, --hang-timeout): a
        producer whose rank entered close() without `finish` leaves it waiting for ever, and
        nothing tells it so (its tasks pass through the dispatcher, maybe on a third rank)."""
        names = self._geode.names
        producers = some_names(names[i] for i in sorted(self._producers))
        queued = len(self._geode.inboxes[index])
        return (
            f"a task of work queue {self.name!r} at {names[index]} from its dispatcher "
            f"{self.dispatcher} ({queued} other message(s) queued there); get() returns None "
            f"only once every producer ({producers}) has called finish(): one whose rank is "
            "in close() without it leaves get() waiting (call finish() before close())"
        )

    def _is_mine(self, parcel: Any) -> bool:
        return bool(parcel.source == self.number)

    def taken(self, index: int, message: Message) -> None:
        """A consumer took one of this queue's tasks: ask for the next one."""
        message.__dict__["work_queue"] = self.name
        message.__dict__["source"] = self.dispatcher
        if isinstance(message, WorkDone):
            self._ended.add(index)
        else:
            self.want_next(index)

    def want_next(self, index: int) -> None:
        """Consumer ``index`` took a task (or one that could not be decoded, now a dead
        letter): ask for the next one."""
        geode = self._geode
        if geode.serving or not geode.sealed:
            self._want(index)  # (once closed, no dispatcher hands out anything more)

    def _want(self, consumer: int) -> None:
        engine = self._geode.engine
        dispatcher = self._dispatcher
        if not self._wants_held and (
            engine.has_room(consumer, dispatcher)
            # (a dispatcher of this rank: forwarding what reached it gives credits back)
            or (engine.forward_local(dispatcher) and engine.has_room(consumer, dispatcher))
        ):
            self._send_want(consumer)
            return
        self._wants_held.append(consumer)
        engine.held_for_room = True

    def _send_want(self, consumer: int) -> None:
        self._geode.send(
            _Want(),
            consumer,
            self._dispatcher,
            False,
            None,
            codec.NO_REPLY,
            codec.FLAG_SEQUENCE,
            False,
            codec.Route(ROUTE_WORK, self.number),
        )

    # -- room came (the dispatcher's own side: workqueue_dispatch.py) ----------------------

    def send_held(self) -> None:
        """Send on what found no room before (`Engine.on_room`, from a poll): the consumers'
        requests held here, the tasks held at the dispatcher. What still finds none stays held."""
        geode = self._geode
        held = self._wants_held
        if held and (geode.serving or not geode.sealed):
            has_room = geode.engine.has_room
            while held and has_room(held[0], self._dispatcher):
                self._send_want(held.popleft())
            if held:
                geode.engine.held_for_room = True
        state = self.dispatch
        if state.wanting and (state.tasks or state.finished):
            self._dispatch()
