"""Checkpoint and restart of a whole job: a consistent cut of every rank's message state.

`Checkpointer.take` is collective. It first *drains* the job: acknowledgements owed go out,
a sequencer forwards what it holds, and every rank waits until everything any rank sent has
reached its destination's queue (`Transport.drain`), so that no message is anywhere but in
exactly one queue. Then each rank writes its nodes' queues, pair states, outboxes, counters,
per-node state, topics and work queues, and the job's own ``state``, to its file; rank 0 seals
the checkpoint with the manifest once every rank succeeded (`geode_mpi.core.sealing`, over
`geode_mpi.persistence.store`). Past the drain, every step is a reduction of one int, a
broadcast or a gather to rank 0: no rank but rank 0 handles more than its own few bytes of the
others' (`transport.rooted`).

A restart loads the newest complete checkpoint into a fresh Geode with the same nodes, on the
same number of ranks or another (`geode_mpi.core.restoring`): every queued message is queued
again, every pair continues from its numbers (so a message sent again after the restart is
recognised and processed once), and the job reads its ``state`` back from
`Geode.restored_state`, and each node's from `Geode.restored_node_state`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from geode_mpi.base.backoff import TOGETHER_YIELD
from geode_mpi.core.checkpoint_cut import Cutting
from geode_mpi.core.checkpoint_restart import Restarting
from geode_mpi.core.checkpoint_state import NodeState
from geode_mpi.core.saved import (
    check_queue_arguments,
    check_queue_stream,
    check_topic_arguments,
    restore_queue,
    restore_topic,
)
from geode_mpi.core.termination import DEFAULT_GRACE, TERMINATION
from geode_mpi.delivery.waiting import wait_for
from geode_mpi.errors import check_timeout
from geode_mpi.persistence import CheckpointError, CheckpointStore, key_from_environment
from geode_mpi.transport import InProcTransport, Rooted, require

if TYPE_CHECKING:
    from geode_mpi.core.groups import Sequencer
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.core.topics import Topic
    from geode_mpi.core.workqueues import WorkQueue
    from geode_mpi.queues import Parcel

# channels restore through these
__all__ = [
    "Checkpointer",
    "check_queue_arguments",
    "check_queue_stream",
    "check_topic_arguments",
    "restore_queue",
    "restore_topic",
]

# maybe()'s votes, or-ed over the ranks in one reduction
_TERMINATED, _TIME_DUE, _SENT_DUE = 1, 2, 4
# maybe()'s vote: polls before its wait (measured at 2 ranks, no checkpoint due: 41-49 us a
# call as a blocking reduction, 144-267 us through the wait alone)
_QUICK_POLLS = 64


def _told(exc: Exception) -> str:
    """An exception as the other ranks are told it: its text, and its type unless it is a
    CheckpointError (whose text says it all)."""
    return str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"


def _none_released(number: int) -> bool:
    return False


def _cannot_close(timeout: float | None) -> None:
    raise RuntimeError("the Geode did not tell its checkpointer how to close it")


class Checkpointer(Cutting, Restarting):
    """A Geode's checkpoints: where they go, taking one, restoring the newest."""

    def __init__(
        self,
        geode: Runtime,
        directory: str | os.PathLike[str],
        keep: int,
        every: float | None = None,
        every_messages: int | None = None,
        term_grace: float = DEFAULT_GRACE,
    ) -> None:
        self.geode = geode
        # A reduction, a broadcast, a gather: a transport of the checkpoint's few collectives.
        self.rooted = cast(Rooted, require(geode.transport, Rooted, "checkpoints"))
        # What else a checkpoint saves, and how a SIGTERM's last one closes the Geode: set by
        # the Geode once its topics, work queues and sequencer exist.
        self.topics_made: Mapping[str, Topic] = {}
        self.queues_made: Mapping[int, WorkQueue] = {}
        # the pattern subscriptions: (pattern, prefix?, member nodes), in the order made
        self.patterns_made: Callable[[], list[tuple[str, bool, list[int]]]] = list
        # The executors made (`Channels.executor_count`), those finished let go of first.
        self.executors_made: Callable[[], int] = int
        # Whether a stream is a finished executor's, let go of: its pairs are not saved.
        self.released: Callable[[int], bool] = _none_released
        self.sequencer: Sequencer | None = None
        self.close_geode: Callable[[float | None], None] = _cannot_close
        self.store = CheckpointStore(directory, keep, key_from_environment())
        self.epoch = 0  # the last checkpoint written or restored
        self.restored_epoch: int | None = None  # the one this Geode restarted from
        self.next_epoch: int | None = None  # the next one's number, once agreed
        self.topics: dict[str, Any] = {}  # restored topic state, until the topic is created
        self.patterns: list[tuple[str, bool, list[int]]] = []  # restored pattern subscriptions
        self.queues: dict[str, Any] = {}  # restored work-queue state, likewise
        # Executors' queues of the restored checkpoint: dropped, never made again
        # (`staffing.staff` gives the next executor another name).
        self.dropped: set[str] = set()
        # The executors the restored checkpoint's job had made (the next one continues after)
        self.executor_count = 0
        # Topic and work-queue stream numbers the next ones skip: those a checkpoint of a
        # geode_mpi before 51 gave its executors, among them (`Restarting._drop_executors`),
        # saved again by every checkpoint, so that the topics and work queues keep theirs.
        self.skipped_streams: set[int] = set()
        # restored state of this rank's consumers, by work queue (`Loaded.consumers`)
        self.consumers: dict[str, tuple[list[int], list[int]]] = {}
        self.queue_arguments: dict[str, dict[str, Any]] = {}  # as saved, by work queue
        self.node_state: dict[int, Any] = {}  # restored per-node state, by node index
        self.every = every
        self.every_messages = every_messages
        self.last_time = time.monotonic()
        self.last_sent = 0
        self.report: dict[str, Any] | None = None  # what the last checkpoint cost
        self.taken = 0  # checkpoints this job wrote since it started (or restarted)
        # A SIGTERM's last checkpoint and the messages queued then, which it holds: the end's
        # report (`Runtime.report_unreceived`) tells them from messages never received.
        self.saved_last: tuple[int, dict[int, Parcel]] | None = None
        self.seconds = 0.0  # the time they took on this rank
        self._claim()
        # SIGTERM: a last checkpoint at the next maybe(), else the job ends (termination.py)
        self._catching = TERMINATION.install(term_grace, geode.rank, geode.size, geode.node)

    def _claim(self) -> None:
        """Collective: rank 0 makes the directory absolute and locks it; every rank takes
        that absolute path, the lock's outcome and its file's token (`CheckpointStore.
        holds_lock`) in one broadcast.

        A relative ``checkpoint_dir`` is resolved once, here, against rank 0's working
        directory: a job that changes directory later (every rank its own ``run{rank}``)
        still writes every file where the manifest says, and a restart finds them. A lock
        refused (another live job holds the directory, or it cannot be made or written)
        is raised on every rank, with rank 0's message: raised on rank 0 alone, it left the
        others waiting in the restore's broadcast, or in their first checkpoint, for ever.

        The simulated ranks of one process (an `InProcHub` of several) cannot wait for each
        other: each takes its own cwd's absolute path (the one process's), rank 0 alone
        locks, and nothing is broadcast (their ``checkpoint()`` says it needs MPI).

        Raises:
            CheckpointError: rank 0 could not lock the directory (on rank 0 the original
                exception, CheckpointError or other).
        """
        store = self.store
        rank0 = self.geode.rank == 0
        if self.geode.size > 1 and isinstance(self.geode.transport, InProcTransport):
            store.directory = Path(os.path.abspath(store.directory))
            if rank0:
                store.lock()
            return
        refused: Exception | None = None
        if rank0:
            store.directory = Path(os.path.abspath(store.directory))
            try:
                store.lock()
            except Exception as exc:  # any: the other ranks must hear of it
                refused = exc
        told = (
            str(store.directory),
            None if refused is None else _told(refused),
            store.lock_token,
        )
        directory, refusal, store.lock_token = self.rooted.bcast(told if rank0 else None)
        store.directory = Path(directory)
        if refused is not None:
            raise refused
        if refusal is not None:
            raise CheckpointError(f"rank 0: {refusal}")

    def sent(self) -> int:
        return sum(stats.sent for stats in self.geode.engine.stats.values())

    def maybe(
        self,
        state: Mapping[str, Any] | None,
        timeout: float | None,
        node_state: NodeState | None = None,
    ) -> int | None:
        """Collective: checkpoint if the policy says so on any rank (rank 0's clock for time),
        and after a SIGTERM checkpoint and exit; None when nothing was due."""
        geode = self.geode
        if geode.sealed:
            raise geode.closed_error("maybe_checkpoint")  # (naming a close() ended unfinished)
        timeout = check_timeout(timeout)
        # One deadline for the whole call, as for checkpoint(): the vote, then the checkpoint.
        # With a timeout every rank arrives first (an Ibarrier waited on, serving, within
        # it), then votes in a blocking reduction; without, the vote alone, waited on serving:
        # a rank may wait in a get() for a task this rank hands out, before it comes here.
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + timeout
            # Never Terminated, as the vote's wait: after a SIGTERM the ranks still coming are
            # on their way to the last checkpoint (the grace's timer bounds the wait).
            with TERMINATION.shielded():
                arrived = geode.arrive(deadline, "maybe_checkpoint()")
            if not arrived:
                where = "waiting for the other ranks to call it"
                raise self._late(timeout, where, "maybe_checkpoint")
        vote = _TERMINATED if TERMINATION.requested else 0
        if geode.rank == 0 and self.every is not None:
            vote |= _TIME_DUE if time.monotonic() - self.last_time >= self.every else 0
        if self.every_messages is not None:
            vote |= _SENT_DUE if self.sent() - self.last_sent >= self.every_messages else 0
        votes = self._vote(vote, deadline)
        if not votes:
            return None
        if not votes & _TERMINATED:
            return self.take(state, timeout, node_state, deadline, "maybe_checkpoint")
        with TERMINATION.shielded():  # every rank is here: nothing to give up on
            epoch = self.take(state, timeout, node_state, deadline, "maybe_checkpoint")
            self.saved_last = (epoch, geode.queued_now())  # (not lost, says the end)
            if geode.rank == 0:
                print(
                    f"geode_mpi: SIGTERM: checkpoint {epoch} written in {self.store.directory}; "
                    "exiting (restart with --restart)",
                    flush=True,
                )
            self.close_geode(timeout)
        TERMINATION.finished()
        raise SystemExit(0)

    def _vote(self, vote: int, deadline: float | None) -> int:
        """The votes of every rank or-ed: past `Runtime.arrive` (a timeout), a blocking
        reduction; else a nonblocking one, waited on making progress (serving the dispatcher,
        requests, acks) as every wait does."""
        geode = self.geode
        if deadline is not None or not geode.transport.delivers_later:
            return self.rooted.allreduce(vote, "bor")
        reducing = self.rooted.start_allreduce(vote, "bor")
        engine = geode.engine
        for _ in range(_QUICK_POLLS):  # (the ranks most often arrive together: no wait's cost)
            if reducing.test():
                return reducing.value
            engine.poll()
        with TERMINATION.shielded():  # (never Terminated: a SIGTERM's last checkpoint is next)
            wait_for(geode.engine, reducing.test, None, TOGETHER_YIELD)
        return reducing.value

    def close(self) -> None:
        self.store.unlock()
        if self._catching:
            self._catching = False
            TERMINATION.uninstall()
