"""Taking a checkpoint (`Checkpointer.take`): the cut that drains the job, what each rank
saves after it, and its file of the epoch written and sealed (`geode_mpi.core.sealing`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geode_mpi.base.logger import log
from geode_mpi.core.checkpoint_state import CheckpointerState, NodeState
from geode_mpi.core.saved import (
    encode_node_state,
    encode_state,
    pattern_state,
    queue_state,
    topic_state,
)
from geode_mpi.core.sealing import SlowStep, write_epoch
from geode_mpi.core.termination import TERMINATION
from geode_mpi.errors import GeodeTimeoutError, check_timeout
from geode_mpi.persistence import CheckpointError
from geode_mpi.persistence.rankfile import JsonValue, RankFile
from geode_mpi.persistence.snapshot import capture
from geode_mpi.tracing import TRACER, now_us

if TYPE_CHECKING:
    from geode_mpi.core.topics import Topic


class Cutting(CheckpointerState):
    """`Checkpointer`'s taking of a checkpoint (a part of it, through ``self``)."""

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
        # (a rank may still wait for a reply from here)
        if not self.geode.arrive(deadline, f"{call}()"):
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
        executors = self.executors_made()  # (those finished let go of first: none saved)
        tree["engine"] = capture(engine, held, self.released)
        tree["geode"] = JsonValue(
            {
                "counters": {str(k): v for k, v in geode.counter.items()},
                "patterns": pattern_state(self.patterns_made()),
                "executors": executors,
                "skipped_streams": sorted(self.skipped_streams),
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
