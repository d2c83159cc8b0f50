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

from geode_mpi import codec
from geode_mpi.base.backoff import TOGETHER_YIELD
from geode_mpi.base.logger import log
from geode_mpi.core.restoring import (
    Loaded,
    OtherJob,
    Part,
    name_restored_topics,
    plan,
    read_part,
)
from geode_mpi.core.saved import (
    check_queue_arguments,
    check_topic_arguments,
    encode_node_state,
    encode_state,
    pattern_state,
    queue_state,
    restore_queue,
    restore_topic,
    topic_state,
)
from geode_mpi.core.sealing import SlowStep, write_epoch
from geode_mpi.core.termination import DEFAULT_GRACE, TERMINATION
from geode_mpi.delivery.waiting import wait_for
from geode_mpi.errors import GeodeTimeoutError, check_timeout
from geode_mpi.persistence import CheckpointError, CheckpointStore, key_from_environment
from geode_mpi.persistence.dropping import drop_waiting
from geode_mpi.persistence.rankfile import JsonValue, RankFile
from geode_mpi.persistence.snapshot import capture
from geode_mpi.tracing import TRACER, now_us
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
    "check_topic_arguments",
    "restore_queue",
    "restore_topic",
]

NodeState = Mapping[str | int, Any]

# maybe()'s votes, or-ed over the ranks in one reduction
_TERMINATED, _TIME_DUE, _SENT_DUE = 1, 2, 4
# maybe()'s vote: polls before its wait (measured at 2 ranks, no checkpoint due: 41-49 us a
# call as a blocking reduction, 144-267 us through the wait alone)
_QUICK_POLLS = 64


def _told(exc: Exception) -> str:
    """An exception as the other ranks are told it: its text, and its type unless it is a
    CheckpointError (whose text says it all)."""
    return str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"


def _cannot_close(timeout: float | None) -> None:
    raise RuntimeError("the Geode did not tell its checkpointer how to close it")


# The wire names of an executor's messages, and what to call them in a log line.
_EXECUTOR_WIRE_NAMES = {
    "geode_mpi.core.executor:_Task": "task(s)",
    "geode_mpi.core.executor:_Outcome": "outcome(s)",
}


class Checkpointer:
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
                arrived = geode.arrive(deadline)
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

    # -- taking one ------------------------------------------------------------------------

    def take(
        self,
        state: Mapping[str, Any] | None,
        timeout: float | None,
        node_state: NodeState | None = None,
        deadline: float | None = None,
        call: str = "checkpoint",
    ) -> int:
        """Take a checkpoint within ``timeout`` (or by ``deadline``, `maybe`'s, when given);
        ``call``: the public call a timeout names."""
        with TERMINATION.shielded():  # after a SIGTERM too: it may be the job's last
            return self._take(state, timeout, node_state, deadline, call)

    def _node_states(self, node_state: NodeState | None) -> dict[str, Any]:
        """``node_state`` as a tree by node index, each node hosted on this rank."""
        geode = self.geode
        if node_state is None:
            return {}
        if not isinstance(node_state, Mapping):
            raise TypeError(
                f"node_state must be a mapping of node to state, got {type(node_state).__name__}"
            )
        tree: dict[str, Any] = {}
        for node, value in node_state.items():
            index = geode.placement.index(node, "node_state")
            if index not in geode.engine.inboxes:
                raise ValueError(
                    f"node_state: node {geode.names[index]!r} is hosted by rank "
                    f"{geode.placement.rank_of(index)}, not by this rank {geode.rank}: each "
                    "rank passes the state of its own nodes (Geode.local_nodes)"
                )
            tree[str(index)] = encode_node_state(value, geode.names[index])
        return tree

    def _cut(self, deadline: float | None, timeout: float | None, call: str) -> None:
        """Drain until nothing moves anywhere (a forward sends: drain again), within what is
        left of the call's ``timeout`` (`Sequencer.settle`)."""
        sequencer = self.sequencer
        assert sequencer is not None, "the Geode sets the sequencer before any checkpoint"
        if not self.geode.arrive(deadline):  # (a rank may still wait for a reply from here)
            raise self._late(timeout, "waiting for the other ranks to call it", call)
        try:
            sequencer.settle(deadline)
        except GeodeTimeoutError as exc:
            raise self._late(timeout, f"in the drain ({exc})", call) from None

    def _late(
        self, timeout: float | None, where: str, call: str = "checkpoint"
    ) -> GeodeTimeoutError:
        return GeodeTimeoutError(
            f"{call}() on rank {self.geode.rank} timed out after {timeout:g} s {where}"
        )

    def _take(
        self,
        state: Mapping[str, Any] | None,
        timeout: float | None,
        node_state: NodeState | None,
        deadline: float | None,
        call: str,
    ) -> int:
        geode = self.geode
        if geode.sealed:
            raise geode.closed_error("checkpoint")  # (naming a close() ended unfinished)
        timeout = check_timeout(timeout)
        started = time.perf_counter()
        # One deadline for the whole call: the arrival, each round of the drain, the writes'
        # gather and broadcast.
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        # What this rank cannot save fails the checkpoint on every rank, told in its
        # collectives (`sealing.write_epoch`): raised here, alone, it left the other ranks
        # waiting in them for ever, or pairing their next checkpoint with this one's steps.
        failed: Exception | None = None
        tree: dict[str, Any] = {}
        self._cut(deadline, timeout, call)
        drained = time.perf_counter()
        # ``state`` and ``node_state`` are read after the cut, and the engine captured right
        # after with nothing run between: the cut's waits run handlers (of ack=True messages,
        # requests) that may change them, and the pairs saved say those messages were
        # processed. Read before the cut, the saved state lacked their effect: lost.
        try:
            tree["state"] = encode_state(state or {})
            tree["node_state"] = self._node_states(node_state)
            self._capture(tree)
        except Exception as exc:
            failed = exc
        try:
            written, total = self._write(tree, deadline, failed)
        except SlowStep as exc:  # (which step: `sealing.write_epoch`'s, or the numbering)
            raise self._late(timeout, exc.where, call) from None
        self.last_time = time.monotonic()
        self.last_sent = self.sent()
        done = time.perf_counter()
        self.report = {
            "epoch": self.epoch,
            "seconds": done - started,
            "drain_seconds": drained - started,
            "bytes": total,  # every rank's file
            "rank_bytes": written.size,
        }
        self.taken += 1
        self.seconds += done - started
        if TRACER.on:
            TRACER.span(
                "checkpoint",
                geode.rank,
                now_us() - (done - started) * 1e6,
                {"epoch": self.epoch, "bytes": written.size, "drain_s": drained - started},
            )
        if geode.rank == 0:
            log.info(
                "checkpoint %d: %.1f MB in %.3f s (drain %.3f s) in %s",
                self.epoch,
                total / 1e6,
                self.report["seconds"],
                self.report["drain_seconds"],
                self.store.directory,
            )
        return self.epoch

    def _capture(self, tree: dict[str, Any]) -> None:
        """The engine, counters, topics and work queues into ``tree`` (after the cut).

        Raises:
            CheckpointError: a topic or work queue of the checkpoint this Geode restarted
                from was not made again yet: its state (numbering, retained and held
                messages, tasks) is only in that checkpoint, and this one would lose it.
        """
        unmade = [f"topic {name!r}" for name in self.topics]
        unmade += [f"work queue {name!r}" for name in self.queues]
        if unmade:
            raise CheckpointError(
                f"{', '.join(unmade)} of checkpoint {self.restored_epoch} (restarted from) "
                "not made again before this checkpoint, which would lose its state (numbering, "
                "retained and held messages, tasks): after a restart, make every topic and "
                "work queue again (the same arguments, the same order) before the next "
                "checkpoint"
            )
        geode = self.geode
        engine = geode.engine
        sequencer = self.sequencer
        held = None if sequencer is None else sequencer.held_parcels()
        tree["engine"] = capture(engine, held)
        tree["geode"] = JsonValue(
            {
                "counters": {str(k): v for k, v in geode.counter.items()},
                "patterns": pattern_state(self.patterns_made()),
            }
        )
        tree["topics"] = {
            topic.name: topic_state(
                engine.topics.of_topic(topic.wire), topic.named, self._arguments(topic)
            )
            for topic in self.topics_made.values()
        }
        tree["queues"] = {queue.name: queue_state(queue) for queue in self.queues_made.values()}

    def _arguments(self, topic: Topic) -> dict[str, Any]:
        """What ``topic`` was made with, as node indices (`saved.check_topic_arguments`)."""
        index = self.geode.placement.index
        return {
            "publishers": [index(node) for node in topic.publishers],
            "sequencer": None if topic.sequencer is None else index(topic.sequencer),
            "retain": topic.retain,
            "wire": topic.wire,
        }

    def _write(
        self, tree: dict[str, Any], deadline: float | None, failed: Exception | None = None
    ) -> tuple[RankFile, int]:
        """Write this rank's file of the next epoch and seal it (`sealing.write_epoch`): (the
        file, every file's bytes). The epoch's number is known on every rank without asking
        once this job has written or restored one (the directory's lock keeps other jobs out);
        the first checkpoint asks rank 0, which lists the directory (one listing, not P).
        ``failed``: why this rank has no file to write (its part could not be saved).

        Raises:
            CheckpointError: some rank could not save its part or write its file (each rank
                raises, naming the first).
            SlowStep: a step did not finish by ``deadline``; its ``where`` says which.
        """
        if self.next_epoch is None:
            rank0 = self.geode.rank == 0
            newest = max(self.store.epochs(complete_only=False), default=0) if rank0 else 0
            try:
                self.next_epoch = int(
                    self.rooted.bcast(max(newest, self.epoch) + 1, deadline=deadline)
                )
            except GeodeTimeoutError:
                raise SlowStep("waiting for rank 0 to number the checkpoint") from None
        epoch = self.next_epoch
        self.next_epoch = epoch + 1  # whatever happens: a failed epoch is never reused
        written, total = write_epoch(
            self.geode, self.rooted, self.store, epoch, tree, deadline, failed
        )
        self.epoch = int(epoch)
        return written, total

    # -- restoring the newest --------------------------------------------------------------

    def restore(self) -> dict[str, Any] | None:
        """Load the newest usable checkpoint; its state, or None when there is none.

        Collective. Rank 0 reads and checks each epoch's manifest (its shape, and its HMAC with
        a job key) and scatters each rank its part (`restoring.plan`); each rank checks and
        reads its files and every value in them, without changing anything
        (`restoring.read_part`). An epoch is used only if every rank succeeded, else every
        rank tries the next older one together. Only then is the state put in place.

        Raises:
            CheckpointError: the checkpoint was saved by another shape of job; or the directory
                holds sealed checkpoints (with a manifest) and none of them can be used: a
                restart never silently starts afresh when there was something to resume.
        """
        geode = self.geode
        rooted = self.rooted
        store = self.store
        # Rank 0's view of the directory, so that every rank tries the same epochs in order.
        listing = (store.epochs(complete_only=False), store.epochs(complete_only=True))
        candidates, sealed = rooted.bcast(listing if geode.rank == 0 else None)
        self.next_epoch = max(candidates, default=0) + 1
        chosen: Loaded | None = None
        skipped: list[str] = []  # on rank 0
        for epoch in candidates:
            parts = plan(store, epoch, geode.names, geode.size) if geode.rank == 0 else None
            part: Part = rooted.scatter(parts)
            mine, problem, mismatch = self._read(epoch, part)
            if not rooted.allreduce(problem is not None or mismatch is not None, "max"):
                chosen = mine
                break
            store.unusable.add(epoch)  # (never one of the checkpoints kept: `prunable`)
            votes = rooted.gather((problem, mismatch))
            found = self._judge(votes, epoch in sealed, skipped)
            if found is not None:
                self.close()  # the job stops: the directory's lock is free again
                raise CheckpointError(found)
        if chosen is None:
            message = None
            if skipped:
                message = (
                    f"restart: {store.directory} holds checkpoint(s) "
                    f"{', '.join(str(epoch) for epoch in sealed)} and none can be used: "
                    f"{'; '.join(skipped)}. Nothing was restored; to start afresh instead, move "
                    "the directory aside (or give the job another one)"
                )
            if (message := rooted.bcast(message)) is not None:
                self.close()
                raise CheckpointError(message)
            if geode.rank == 0:
                log.warning(
                    "restart: no complete checkpoint in %s; starting afresh", store.directory
                )
            return None
        self._apply(chosen)
        return chosen.state

    def _read(self, epoch: int, part: Part) -> tuple[Loaded | None, str | None, str | None]:
        """(this rank's part read, or why not: a problem (try older), or a mismatch (stop))."""
        if part.problem is not None or part.mismatch is not None:
            return None, part.problem, part.mismatch
        try:
            return read_part(self.geode, self.store, epoch, part), None, None
        except OtherJob as exc:
            return None, None, str(exc)
        except CheckpointError as exc:
            return None, str(exc), None
        except Exception as exc:  # anything else a damaged file makes our code raise
            path = self.store.epoch_path(epoch)
            problem = f"{path}: rank {self.geode.rank}: {type(exc).__name__}: {exc} (damaged?)"
            return None, problem, None

    def _judge(self, votes: list[Any] | None, sealed: bool, skipped: list[str]) -> str | None:
        """On rank 0, log why an epoch was skipped; on every rank, the mismatch that stops the
        restart, if any rank found one."""
        mismatch = None
        if votes is not None:  # rank 0
            mismatches = [found for _, found in votes if found is not None]
            mismatch = mismatches[0] if mismatches else None
            # Ranks reading the same file or manifest find the same problem: say it once.
            problems = list(dict.fromkeys(found for found, _ in votes if found is not None))
            if mismatch is None:
                if sealed:
                    skipped += problems
                for found in problems:
                    log.warning("checkpoint skipped: %s", found)
        verdict: str | None = self.rooted.bcast(mismatch)
        return verdict

    def _apply(self, chosen: Loaded) -> None:
        geode = self.geode
        if any(arguments.get("executor") for arguments in chosen.arguments.values()):
            self._drop_executor_parcels(chosen)
        chosen.engine.apply(geode.engine)
        name_restored_topics(chosen, geode.engine)
        geode.counter.update(chosen.counters)
        self.topics = chosen.topics
        self.patterns = chosen.patterns
        self.queues = chosen.queues
        self.consumers = chosen.consumers
        self.queue_arguments = chosen.arguments
        self.node_state = chosen.node_state
        self.epoch = self.restored_epoch = chosen.epoch
        if chosen.held_unsaved:  # (logged by the rank hosting each sequencer: once each)
            log.warning(
                "restart: checkpoint epoch %d in %s was written before a total-order topic's "
                "sequencer saved the messages it held for want of room at a subscriber: "
                "topic(s) %s (sequencer %s); messages the sequencer held then are not in the "
                "checkpoint and may be lost (never delivered to some subscribers)",
                chosen.epoch,
                self.store.directory,
                ", ".join(repr(name) for name in sorted(chosen.held_unsaved)),
                ", ".join(sorted({geode.names[i] for i in chosen.held_unsaved.values()})),
            )
        self._drop_executors()
        if geode.rank == 0:
            how = " (authenticated)" if self.store.key is not None else ""
            log.info(
                "restarted from checkpoint epoch %d%s in %s",
                chosen.epoch,
                how,
                self.store.directory,
            )

    def _drop_executor_parcels(self, chosen: Loaded) -> None:
        """Drop the restored tasks that waited at this rank's workers and the outcomes that
        waited at its clients: the executors they belong to start afresh (`_drop_executors`),
        and a new one, numbered as the old (streams are numbered in creation order) and
        numbering its tasks from 0 again, would take them as its own (old tasks run again,
        old outcomes resolving new futures: wrong results). Logged, with their count; each is
        acknowledged as processed (`drop_waiting`), so that its sender stops resending it."""
        dropped = drop_waiting(
            chosen.engine,
            lambda parcel: _EXECUTOR_WIRE_NAMES.get(codec.peek(parcel.meta).class_name),
        )
        if dropped:
            log.warning(
                "restarted from checkpoint %d: %s of an executor waited on this rank; an "
                "executor starts afresh after a restart, so they are dropped, never run or "
                "delivered",
                chosen.epoch,
                " and ".join(f"{count} {what}" for what, count in sorted(dropped.items())),
            )

    def _drop_executors(self) -> None:
        """Forget the restored executors' queues (the same on every rank: their arguments are
        in every file): a restart starts every executor afresh (docs/executor.md), so they
        are never made again, and a later checkpoint does not wait for them. The dispatcher's
        rank logs the tasks such a queue still held (an executor checkpointed mid-block, from
        another thread): they are dropped, never run."""
        for name, arguments in list(self.queue_arguments.items()):
            if not arguments.get("executor"):
                continue
            self.dropped.add(name)
            del self.queue_arguments[name]
            self.consumers.pop(name, None)
            state = self.queues.pop(name, None)
            if state is not None and state["tasks"]:  # (the dispatcher's rank)
                log.warning(
                    "restarted from checkpoint %d: executor %r held %d unfinished task(s); an "
                    "executor starts afresh after a restart, so they are dropped, never run",
                    self.restored_epoch,
                    name,
                    len(state["tasks"]),
                )

    def unmade_topics(self) -> dict[int, str]:
        """The restored topics not made again yet, by wire number (a checkpoint written before
        topics' arguments were saved says none)."""
        found = {}
        for name, state in self.topics.items():
            arguments = state.get("arguments")
            if arguments is not None:
                found[arguments["wire"]] = name
        return found

    def close(self) -> None:
        self.store.unlock()
        if self._catching:
            self._catching = False
            TERMINATION.uninstall()
