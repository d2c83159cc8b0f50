"""The Geode's topics, pattern subscriptions, work queues and executors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from geode_mpi.base.gate import locked
from geode_mpi.codec.compression import Compression, setting
from geode_mpi.core.facade import Facade
from geode_mpi.core.subscriptions import Subscription
from geode_mpi.core.topics import Topic
from geode_mpi.core.workqueues import WorkQueue

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.core.executor import GeodeExecutor
else:  # a job that never asks for a zero-copy array never needs numpy here
    from geode_mpi.base.ondemand import on_first_use

    np = on_first_use("numpy", globals(), "np")


class ChannelCalls(Facade):
    """The Geode's topic and work-queue calls (`Geode` inherits them)."""

    @locked
    def topic(
        self,
        name: str,
        publishers: Sequence[str | int],
        subscribers: Sequence[str | int],
        *,
        retain: int = 0,
        total_order: bool = False,
        sequencer: str | int | None = None,
        compress: str | Compression | None = None,
    ) -> Topic:
        """Create a topic: what its publishers publish, each subscriber receives once.

        Collective: every rank calls it with the same arguments, in the same order as its other
        topics (each topic is a set of MPI broadcast streams, built here).

        Args:
            name: the topic's name (unique in the job).
            publishers: the nodes that may publish on it.
            subscribers: the nodes that receive what is published (may include publishers).
            retain: keep each publisher's last ``retain`` messages, for nodes that subscribe
                later: they get those first (total order: the topic's last ``retain``, in
                its one order, whoever published them).
            total_order: every subscriber sees the messages of all publishers in one order
                (they go through the ``sequencer``, default the first publisher); otherwise
                each publisher's messages keep their order (one broadcast stream each).
            sequencer: the node that orders a total-order topic.
            compress: the topic's compression, over the Geode's (see `Geode`): each message
                is compressed once, whatever the number of subscribers.

        Raises:
            TypeError: publishers or subscribers is not a list of nodes (a single name is
                refused), total_order is not a bool.
            UnknownNodeError: a publisher, subscriber or the sequencer is not a node.
            ValueError: the name is taken, no publishers, a node listed twice, retain < 0.
            WorldMismatchError: ranks called it with different arguments.
        """
        chosen = setting(compress)
        made = self._channels.topic(name, publishers, subscribers, retain, total_order, sequencer)
        made.compress = chosen
        return made

    @locked
    def subscribe(
        self,
        nodes: str | int | Sequence[str | int],
        pattern: str | None = None,
        *,
        prefix: str | None = None,
    ) -> Subscription:
        """Subscribe nodes to every topic whose name matches a glob or starts with a prefix:
        the topics that exist now and those created later.

        Collective: every rank calls it with the same arguments, in the same order as its
        topics. The existing topics it matches add the nodes as `Topic.subscribe` does (their
        retained messages first); a topic created later includes them from its start. A node
        already subscribed to a topic, by name or by another pattern, still gets each of its
        messages once.

        Args:
            nodes: the subscribing node, or several.
            pattern: a glob over topic names (``fnmatch``, case-sensitive): ``"sim.*"``,
                ``"sim.?.temp"``, ``"*"`` (every topic).
            prefix: instead of a pattern, a name prefix, as ZeroMQ's subscriptions:
                ``prefix="sim."``.

        Returns:
            The `Subscription` of that pattern; ``receive(topic=subscription)`` takes only
            the messages of the topics it matches.

        Raises:
            UnknownNodeError: a node that is not a node of this job.
            ValueError: neither or both of pattern and prefix, an empty one, no nodes or a
                node twice.
            WorldMismatchError: ranks called it with different arguments.
        """
        return self._channels.subscribe(nodes, pattern, prefix)

    @locked
    def unsubscribe(
        self,
        nodes: str | int | Sequence[str | int],
        pattern: str | None = None,
        *,
        prefix: str | None = None,
    ) -> None:
        """Undo `subscribe` for these nodes (collective): they leave every topic the pattern
        matches, except the ones they subscribed to by name or through another pattern, and
        the topics created later no longer include them. Messages already delivered stay
        in their queues.

        Raises:
            UnknownNodeError: a node that is not a node of this job.
            ValueError: a node that did not subscribe to this pattern (the error names the
                patterns there are), or the mistakes `subscribe` refuses.
            WorldMismatchError: ranks called it with different arguments.
        """
        self._channels.unsubscribe(nodes, pattern, prefix)

    @locked
    def work_queue(
        self,
        name: str,
        consumers: Sequence[str | int],
        *,
        dispatcher: str | int | None = None,
        producers: Sequence[str | int] | None = None,
        prefetch: int = 1,
    ) -> WorkQueue:
        """Create a work queue: each task put on it is processed by exactly one consumer.

        Collective: every rank calls it with the same arguments, in the same order as its
        other work queues and topics. See `WorkQueue`.

        Args:
            name: the queue's name (unique among work queues).
            consumers: the nodes that process its tasks.
            dispatcher: the node that holds the tasks and hands them out (default: the first
                node); its rank hands them out whenever it waits in geode_mpi, `close` too.
            producers: the nodes that will call ``finish()`` (default: every node); `get`
                returns None once all of them have and no task is left.
            prefetch: tasks a consumer asks for ahead (1: one waiting while it works on one).

        Raises:
            TypeError: consumers or producers is not a list of nodes (a single name is
                refused).
            UnknownNodeError: a consumer, producer or the dispatcher is not a node.
            ValueError: the name is taken, no consumers, a consumer twice, prefetch < 1.
        """
        return self._channels.work_queue(name, consumers, dispatcher, producers, prefetch)

    @locked
    def executor(
        self,
        client: str | int | None = None,
        *,
        workers: Sequence[str | int] | None = None,
        prefetch: int = 1,
    ) -> GeodeExecutor:
        """A `concurrent.futures.Executor` over a work queue: ``submit`` and ``map`` run
        functions on the worker nodes (see `GeodeExecutor` and docs/executor.md).

        Collective: every rank calls it with the same arguments, in the same order as its
        work queues and topics, then enters ``with`` on the result. On the client's rank the
        block gets the executor; on the others, entering it runs tasks until the client's
        block ends, and gives None. In the embedded world it runs the tasks in a thread.

        Args:
            client: the node that submits tasks and gets their outcomes (default: the first
                node); it is the queue's dispatcher.
            workers: the nodes that run them (default: the first node of every rank but the
                client's; in a job of one rank, the first node but the client).
            prefetch: tasks a worker is handed ahead of the one it runs (1 hides the round
                trip to the client; no queued task is cancellable once handed out).

        Raises:
            UnknownNodeError: the client or a worker is not a node.
            ValueError: no workers, a worker twice, prefetch < 1.
            WorldMismatchError: ranks called it with different arguments.
            ThreadError: MPI runs below the 'serialized' thread level (the client's work is
                done in a thread).
            RuntimeError: called inside another executor's ``with`` block (on every rank:
                make both before the first block).
        """
        from geode_mpi.core.staffing import open_executor  # (concurrent.futures: on demand)

        made = open_executor(self._runtime, self._channels, client, workers, prefetch)
        if made.is_client:  # close() shuts it down, if the job did not (see `Lifecycle`)
            self._channels.executors.append(made)
        return made
