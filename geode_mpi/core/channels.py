"""A Geode's topics and work queues: creating them, and handing each the messages it owns (the
pattern subscriptions in channel_patterns.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from geode_mpi.codec.header import ROUTE_TOPIC, Route
from geode_mpi.core.channel_patterns import Subscribing
from geode_mpi.core.checkpointing import (
    Checkpointer,
    check_queue_arguments,
    check_queue_stream,
    check_topic_arguments,
    restore_queue,
    restore_topic,
)
from geode_mpi.core.processing import Processor
from geode_mpi.core.runtime import Runtime
from geode_mpi.core.subscriptions import GLOB, Pattern, Subscription
from geode_mpi.core.topics import EXECUTOR_BASE, STREAM_BASE, Topic
from geode_mpi.core.workqueues import WorkDone, WorkQueue
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.errors import check_flag
from geode_mpi.message import Message
from geode_mpi.queues import Match
from geode_mpi.tracing import TRACER
from geode_mpi.transport import BroadcastStreams, require

if TYPE_CHECKING:
    from geode_mpi.core.executor import GeodeExecutor

# Said with a topic a receive names that this rank has not made: the usual cause, a port of
# mpi4py's bcast that made the topic on its root rank only.
_MADE_BY_ALL = (
    "; topic() is collective: every rank calls it for each topic, members or not, with the "
    "same arguments and in the same order, before it receives from it (a topic made only on "
    "the rank that publishes, as a bcast's root, is missing on the others, and that rank "
    "waits in topic())"
)


def _ignore(message: Message) -> None:
    """The run loop's handler of `WorkDone`: nothing to do."""


def _unset(deadline: float | None) -> None:
    raise RuntimeError("the Geode sets Channels.settle before any topic")


def _both(first: Match, second: Match) -> Match:
    return lambda parcel: first(parcel) and second(parcel)


class Channels(Subscribing):
    """The topics and work queues of one Geode (see `Geode.topic`, `Geode.work_queue`).

    Both send on streams numbered beyond every node index, the same on every rank because
    every rank creates them in the same order. Messages for a total-order topic's sequencer or
    a work queue's dispatcher that arrive before this rank created the topic or queue wait
    here until it does. The pattern subscriptions live here too (`Subscribing`, in
    channel_patterns.py): every rank holds the same ones (each was agreed), so a topic created
    later gets the same subscribers everywhere.
    """

    def __init__(self, geode: Runtime, processor: Processor) -> None:
        self._geode = geode
        self._processor = processor
        self.topics: dict[str, Topic] = {}
        self.topics_by_wire: dict[int, Topic] = {}
        self.work_queues: dict[int, WorkQueue] = {}  # by stream number
        self.executors: list[GeodeExecutor] = []  # those whose client is on this rank
        # Every executor made here and not over (`GeodeExecutor.over`), in the order made.
        self.executors_made: list[GeodeExecutor] = []
        geode.task_sources = self.work_queues  # a consumer's taken task goes to its queue
        self.checkpointer: Checkpointer | None = None  # the Geode's, to restore from
        self._early: list[tuple[int, int, Message, Route]] = []
        self._streams_made = 0  # topics' and work queues' streams (numbers taken or skipped)
        self.executor_count = 0  # executors made (the last one's k, in `executor_number`)
        self.finished_pairs: list[tuple[int, int]] = []  # released executors' (`drop_idle`)
        self._queues_made = False  # a work queue was made (executors' too, released or not)
        self.patterns: dict[Pattern, Subscription] = {}  # in the order first subscribed
        # Restarted: the pattern (un)subscribes made since, while a saved topic is not made
        # again yet (`_since_restart`: applied to it when it is), in call order.
        self._pattern_calls: list[tuple[str, Pattern, list[int]]] = []
        # receive(topic=<pattern>): the match, and how many topics existed when it was made
        self._pattern_matches: dict[Pattern, tuple[int, Match]] = {}
        # Forward until nothing is on its way to a sequencer or dispatcher anywhere
        # (collective; the Geode sets it to `Sequencer.settle`): before a total-order topic's
        # membership changes, and as close() begins.
        self.settle: Callable[[float | None], None] = _unset
        # What sends on what forwarders hold for want of room (the Geode sets it): the
        # engine's `on_room` once a total-order topic or a work queue exists.
        self.on_room: Callable[[], None] | None = None

    @property
    def forwarding(self) -> bool:
        """True if messages of this job's topics or work queues travel to an owner that sends
        them on (a total-order topic's sequencer, a work queue's dispatcher): the same on every
        rank, since every rank creates every topic and queue."""
        return self._queues_made or any(
            topic.total_order and set(topic.publishers) != {topic.sequencer}
            for topic in self.topics.values()
        )

    @property
    def first_stream(self) -> int:
        """The first topic or work-queue stream's number (the one after every node index)."""
        return len(self._geode.names) + STREAM_BASE

    def new_stream_number(self) -> int:
        """The next topic or work-queue stream's number (beyond every node index; after a
        restart from a checkpoint of a geode_mpi that numbered executors among them, past
        the numbers its executors took: `Checkpointer.skipped_streams`)."""
        number = self.upcoming(1)[0]
        self._streams_made = number - self.first_stream + 1
        return number

    def upcoming(self, count: int) -> list[int]:
        """The numbers the next ``count`` streams will get, none taken yet."""
        skipped = () if self.checkpointer is None else self.checkpointer.skipped_streams
        found: list[int] = []
        number = self.first_stream + self._streams_made
        while len(found) < count:
            if number not in skipped:
                found.append(number)
            number += 1
        return found

    def executor_number(self, k: int) -> int:
        """The stream number of executor ``k``'s work queue (``executor-k``)."""
        return len(self._geode.names) + EXECUTOR_BASE + k - 1

    def release(self, queue: WorkQueue) -> None:
        """Forget a finished executor's work queue on this rank (`GeodeExecutor.release`):
        what still comes for it (a worker's request sent before its end) is dropped, and a
        checkpoint no longer saves it."""
        self.work_queues.pop(queue.number, None)

    def topic(
        self,
        name: str,
        publishers: Sequence[str | int],
        subscribers: Sequence[str | int],
        retain: int,
        total_order: bool,
        sequencer: str | int | None,
    ) -> Topic:
        """`Geode.topic`: check the arguments (the same on every rank), create the topic."""
        geode = self._geode
        if geode.sealed:
            raise geode.closed_error("topic")  # (naming a close() ended unfinished)
        require(geode.transport, BroadcastStreams, f"Geode.topic({name!r})")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a topic name must be a non-empty str, got {name!r}")
        if name in self.topics:
            raise ValueError(f"topic {name!r} already exists")
        if isinstance(retain, bool) or not isinstance(retain, int) or retain < 0:
            raise ValueError(f"retain must be an int >= 0, got {retain!r}")
        placement = geode.placement
        total_order = check_flag(total_order, "total_order")
        pubs = placement.indices(publishers, "publishers", "publisher")
        subs = placement.indices(subscribers, "subscribers", "subscriber")
        for what, nodes in (("publishers", pubs), ("subscribers", subs)):
            if len(set(nodes)) != len(nodes):
                raise ValueError(f"topic {name!r}: {what} must be distinct, got {nodes!r}")
        if not pubs:
            raise ValueError(f"topic {name!r} needs at least one publisher")
        chosen = None
        if total_order or sequencer is not None:
            chosen = pubs[0] if sequencer is None else placement.index(sequencer, "sequencer")
        arguments = (name, pubs, subs, retain, chosen)
        geode.agree(repr(arguments).encode(), f"topic {name!r}", f"topic({name!r})")
        wire = len(geode.names) + len(self.topics)
        checkpointer = self.checkpointer
        saved = None if checkpointer is None else checkpointer.topics.get(name)
        if checkpointer is not None and saved is not None:
            # Restarted: its numbering, retained messages and pairs are the saved streams'
            # (checked before anything is made: an error leaves no half-made topic).
            made = {"publishers": pubs, "sequencer": chosen, "retain": retain, "wire": wire}
            roots = pubs if chosen is None else [chosen]
            numbers = dict(zip(self.upcoming(len(roots)), roots, strict=True))
            check_topic_arguments(name, saved, made, numbers, geode.names, self.first_stream)
            del checkpointer.topics[name]
        joined = subs + self._pattern_subscribers(name, subs)
        named = set(subs)  # the others came through a pattern
        if saved is not None and saved["subscribers"] is not None:
            # Restarted: the subscribers at the checkpoint, in their order (every rank read
            # the same ones): those that subscribed later, and not those that had left (they
            # would come back to a place in the stream whose messages never come); their
            # pairs continue from the checkpoint.
            joined = list(saved["subscribers"])
            named = set(saved["named"] or ())
        topic = Topic(
            geode, name, wire, pubs, joined, retain, chosen, self.new_stream_number, self.settle
        )
        topic.named = named
        self.topics[name] = topic
        self.topics_by_wire[wire] = topic
        if topic.total_order:
            geode.engine.on_room = self.on_room
            geode.engine.held_for_room = True  # (what reached its sequencer before: sent on)
        if saved is not None:
            restore_topic(geode.engine.topics.of_topic(wire), saved)
            if saved["subscribers"] is not None:
                self._since_restart(topic)
        self.release_early()
        return topic

    def work_queue(
        self,
        name: str,
        consumers: Sequence[str | int],
        dispatcher: str | int | None,
        producers: Sequence[str | int] | None,
        prefetch: int,
        number: int | None = None,
    ) -> WorkQueue:
        """`Geode.work_queue`: check the arguments (the same on every rank), create the
        queue (an executor's: numbered ``number``, `executor_number`)."""
        geode = self._geode
        if geode.sealed:
            raise geode.closed_error("work_queue")  # (naming a close() ended unfinished)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a work queue name must be a non-empty str, got {name!r}")
        if any(queue.name == name for queue in self.work_queues.values()) or (
            number is None and self._executors_name(name)
        ):
            raise ValueError(f"work queue {name!r} already exists")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be an int >= 1, got {prefetch!r}")
        placement = geode.placement
        taking = placement.indices(consumers, "consumers", "consumer")
        if not taking or len(set(taking)) != len(taking):
            raise ValueError(f"work queue {name!r} needs distinct consumers, got {consumers!r}")
        owner = 0 if dispatcher is None else placement.index(dispatcher, "dispatcher")
        making = (
            list(range(len(geode.names)))
            if producers is None
            else placement.indices(producers, "producers", "producer")
        )
        arguments = (name, taking, owner, making, prefetch)
        geode.agree(repr(arguments).encode(), f"work queue {name!r}", f"work_queue({name!r})")
        checkpointer = self.checkpointer
        saved = None if checkpointer is None else checkpointer.queue_arguments.get(name)
        if saved is not None:
            # Restarted: its dispatcher's state, pairs and queues are the saved arguments'.
            made = {"dispatcher": owner, "consumers": taking, "producers": sorted(making)}
            check_queue_arguments(name, saved, made, geode.names)
            upcoming = self.upcoming(1)[0]
            check_queue_stream(name, saved.get("stream"), upcoming, self.first_stream)
        if number is None:
            number = self.new_stream_number()
        self._queues_made = True
        queue = WorkQueue(geode, name, number, taking, owner, prefetch, making)
        self.work_queues[number] = queue
        geode.engine.on_room = self.on_room
        self._processor.add(WorkDone, None, _ignore)
        if checkpointer is not None and name in checkpointer.queues:
            # Restarted: the requests and tasks in flight at the checkpoint are in its state.
            restore_queue(queue, checkpointer.queues.pop(name))
            queue.restore_consumers(*checkpointer.consumers.pop(name, ([], [])))
        else:
            queue.start()
        self.release_early()
        return queue

    def executors_saved(self) -> int:
        """What a checkpoint saves of the executors: how many were made (the executors
        finished on this rank let go of first, so that their queues are not saved)."""
        self.release_finished()
        return self.executor_count

    def release_finished(self) -> None:
        """Let go of every executor finished on this rank and not let go of yet (one shut
        down by ``shutdown()`` rather than its ``with`` block, say): before a new one, and
        before a checkpoint, which then does not save their queues."""
        for executor in list(self.executors_made):
            if executor.finished():
                executor.release()

    def released(self, number: int) -> bool:
        """Whether stream ``number`` was a finished executor's work queue, released (`release`:
        an executor's number is never given again)."""
        first = self.executor_number(1)
        return first <= number < first + self.executor_count and number not in self.work_queues

    def _executors_name(self, name: str) -> bool:
        """Whether ``name`` is an executor's of this job (``executor-k``), made on every rank
        (released on some, maybe: the name stays taken, the same on every rank)."""
        head, _, k = name.partition("-")
        if not (head == "executor" and k.isdigit() and 0 < int(k) <= self.executor_count):
            return False
        # A user's queue of that name saved in the checkpoint this job restarted from (the
        # executors were numbered around it then): made again, it is the user's.
        checkpointer = self.checkpointer
        return checkpointer is None or name not in checkpointer.queue_arguments

    # -- which topic a receive means ---------------------------------------------------------

    def topic_named(self, topic: Topic | str) -> Topic:
        """A topic of this job, given as itself or by name.

        Raises:
            ValueError: no such topic.
        """
        name = topic.name if isinstance(topic, Topic) else topic
        found = self.topics.get(name)
        if found is None:
            known = ", ".join(self.topics) or "none"
            raise ValueError(f"no topic {name!r} in this job (topics: {known}){_MADE_BY_ALL}")
        return found

    def topic_match(self, topic: Topic | Subscription | str, rest: Match | None) -> Match:
        """What ``receive(topic=...)`` passes the queue: messages of that topic, or of the
        topics a pattern matches (a `Subscription`, or a name with ``*``, ``?`` or ``[`` that
        is no topic's), that ``rest`` (source and type, None: any) also accepts.

        Raises:
            ValueError: no such topic, or no topic matches the pattern.
        """
        if isinstance(topic, Subscription):
            wanted = Pattern(topic.pattern, topic.prefix)
        elif isinstance(topic, str) and topic not in self.topics and not GLOB.isdisjoint(topic):
            wanted = Pattern(topic)
        else:
            match = self.topic_named(topic).match
            return match if rest is None else _both(match, rest)
        made = self._pattern_matches.get(wanted)
        if made is None or made[0] != len(self.topics):  # topics are never removed
            numbers = frozenset(
                number
                for name, found in self.topics.items()
                if wanted.matches(name)
                for number in found.numbers
            )
            if not numbers:
                known = ", ".join(self.topics) or "none"
                raise ValueError(f"no topic matches {wanted} (topics: {known}){_MADE_BY_ALL}")
            made = (len(self.topics), lambda parcel: parcel.source in numbers)
            self._pattern_matches[wanted] = made
        return made[1] if rest is None else _both(made[1], rest)

    def to_owner(self, index: int, source: int, message: Message, via: Route) -> bool:
        """A message for a total-order topic's sequencer or a work queue's dispatcher, which
        ``index`` is (a work queue's: held here until this rank has created the queue).
        False if this rank has not created the topic yet, or a subscriber of the topic has
        no room for it now: nothing was done, the caller (`Sequencer`) holds it and hands it
        over again on a later poll."""
        state = message.__dict__
        if via.kind == ROUTE_TOPIC:
            topic = self.topics_by_wire.get(via.number)
            if topic is None or not topic.has_room(index):
                # (not made here yet: held by the sequencer, unacknowledged, as for want of
                # room, so that a checkpoint saves it and its order holds; made, retried)
                return False
            if TRACER.on:
                trace_receive(index, message, "dispatch")
            state["origin"] = self._geode.names[source]
            topic.publish_sequenced(message, index)
            return True
        if TRACER.on:
            trace_receive(index, message, "dispatch")
        queue = self.work_queues.get(via.number)
        if queue is None:
            if not self.released(via.number):
                self._early.append((index, source, message, via))
            return True
        queue.arrived(message, source)
        return True

    def held(self, index: int, sources: set[int], via: Route) -> None:
        """Sequencer node ``index`` holds messages of ``sources`` for ``via``'s topic for want
        of room at its subscribers: each source is told of those whose rank is in close()
        (else its send waiting for room at ``index`` would wait for ever)."""
        topic = self.topics_by_wire.get(via.number)
        if topic is not None and via.kind == ROUTE_TOPIC:
            topic.tell_held(index, sources)

    def send_held(self) -> None:
        """What each work queue holds for want of room (tasks at its dispatcher, consumers'
        requests for their next task), sent on as far as room has come."""
        if self._early:
            self.release_early()
        for queue in self.work_queues.values():
            queue.send_held()

    def release_early(self) -> None:
        """Hand over what arrived for a topic or work queue before this rank created it."""
        early, self._early = self._early, []
        stuck: set[tuple[int, int]] = set()  # topics whose subscribers lack room: in order
        for index, source, message, via in early:
            channel = (via.kind, via.number)
            if channel in stuck or not self.to_owner(index, source, message, via):
                stuck.add(channel)
                self._early.append((index, source, message, via))
        if stuck:
            self._geode.engine.held_for_room = True
