"""Checkpoint and restart of a whole job: a consistent cut of every rank's message state.

`Checkpointer.take` is collective. It first *drains* the job: acknowledgements owed go out,
a sequencer forwards what it holds, and every rank waits until everything any rank sent has
reached its destination's queue (`Transport.drain`), so that no message is anywhere but in
exactly one queue. Then each rank writes its nodes' queues, pair states, outboxes, counters,
topics and work queues, and the job's own ``state``, to its file; rank 0 seals the checkpoint
with the manifest once every rank succeeded (`geode_mpi.persistence.store`).

A restart loads the newest complete checkpoint into a fresh Geode with the same nodes on the
same number of ranks: every queued message is queued again, every pair continues from its
numbers (so a message sent again after the restart is recognised and processed once), and the
job reads its ``state`` back from `Geode.restored_state`.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geode_mpi import codec
from geode_mpi.core.termination import DEFAULT_GRACE, TERMINATION
from geode_mpi.errors import ClosedError, GeodeError, check_timeout
from geode_mpi.message import Message
from geode_mpi.persistence import (
    CheckpointError,
    CheckpointStore,
    key_from_environment,
    write_rank_file,
)
from geode_mpi.persistence.manifest import MANIFEST
from geode_mpi.persistence.rankfile import JsonValue, rank_name
from geode_mpi.persistence.snapshot import (
    Restored,
    capture,
    load,
    pack_messages,
    unpack_messages,
)
from geode_mpi.tracing import TRACER, now_us

if TYPE_CHECKING:
    from geode_mpi.core.groups import Sequencer
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.core.topics import Topic
    from geode_mpi.core.workqueues import WorkQueue
    from geode_mpi.delivery.topics import TopicStream

log = logging.getLogger("geode_mpi")
_BLANK = codec.Stamp(0, 0, 0.0, 0, 0)
_JSON_TYPES = (str, int, float, bool, type(None))


def _cannot_close(timeout: float | None) -> None:
    raise RuntimeError("the Geode did not tell its checkpointer how to close it")


def encode_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The job's state as a tree: arrays and plain values as they are, anything else pickled."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of str keys, got {type(state).__name__}")
    plain: dict[str, Any] = {}
    pickled: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise TypeError(f"state keys must be non-empty str without '/', got {key!r}")
        if (isinstance(value, np.ndarray) and not value.dtype.hasobject) or isinstance(
            value, _JSON_TYPES
        ):
            plain[key] = value
        else:
            try:
                pickled[key] = pickle.dumps(value, protocol=5)
            except Exception as exc:
                raise TypeError(f"state[{key!r}] ({type(value).__name__}) cannot be saved") from exc
    return {"plain": plain, "pickled": pickled}


def decode_state(tree: Any) -> dict[str, Any]:
    """Back from `encode_state` (its file passed its checksum, and with a job key its
    manifest's HMAC, before this unpickles).

    Raises:
        CheckpointError: the tree is not what `encode_state` makes, or a value cannot be
            unpickled.
    """
    tree = _mapping(tree, "state")
    state = dict(_mapping(tree.get("plain", {}), "state/plain"))
    for key, raw in _mapping(tree.get("pickled", {}), "state/pickled").items():
        if not isinstance(raw, bytes):
            raise CheckpointError(f"state/pickled/{key}: expected bytes, got {type(raw).__name__}")
        try:
            state[key] = pickle.loads(raw)
        except Exception as exc:
            raise CheckpointError(
                f"state[{key!r}] cannot be unpickled: {type(exc).__name__}: {exc}"
            ) from exc
    return state


# -- checking what a restart reads -------------------------------------------------------


class _OtherJob(Exception):
    """A valid checkpoint of another shape of job: an error, not a reason to fall back."""


@dataclass
class _Loaded:
    """One rank's part of a checkpoint, read and checked, not yet put in place."""

    epoch: int
    engine: Restored
    counters: dict[int, int]
    topics: dict[str, Any]
    queues: dict[str, Any]
    state: dict[str, Any]


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CheckpointError(f"{what}: expected a mapping, got {type(value).__name__}")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"expected a count (an int >= 0), got {value!r}")
    return value


def _index(key: str, what: str) -> int:
    if not key.isdigit():
        raise CheckpointError(f"{what}: key {key!r} is not a number")
    return int(key)


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
        # What else a checkpoint saves, and how a SIGTERM's last one closes the Geode: set by
        # the Geode once its topics, work queues and sequencer exist.
        self.topics_made: Mapping[str, Topic] = {}
        self.queues_made: Mapping[int, WorkQueue] = {}
        self.sequencer: Sequencer | None = None
        self.close_geode: Callable[[float | None], None] = _cannot_close
        self.store = CheckpointStore(directory, keep, key_from_environment())
        self.epoch = 0  # the last checkpoint written or restored
        self.topics: dict[str, Any] = {}  # restored topic state, until the topic is created
        self.queues: dict[str, Any] = {}  # restored work-queue state, likewise
        self.every = every
        self.every_messages = every_messages
        self.last_time = time.monotonic()
        self.last_sent = 0
        self.report: dict[str, Any] | None = None  # what the last checkpoint cost
        self.taken = 0  # checkpoints this job wrote since it started (or restarted)
        self.seconds = 0.0  # the time they took on this rank
        if geode.rank == 0:
            self.store.lock()
        # SIGTERM: a last checkpoint at the next maybe(), else the job ends (termination.py)
        self._catching = TERMINATION.install(term_grace, geode.rank, geode.size, geode.node)

    def sent(self) -> int:
        return sum(stats.sent for stats in self.geode.engine.stats.values())

    def maybe(self, state: Mapping[str, Any] | None, timeout: float | None) -> int | None:
        """Collective: checkpoint if the policy says so on any rank (rank 0's clock for time),
        and after a SIGTERM checkpoint and exit; None when nothing was due."""
        geode = self.geode
        now = time.monotonic()
        time_due = self.every is not None and now - self.last_time >= self.every
        sent_due = (
            self.every_messages is not None and self.sent() - self.last_sent >= self.every_messages
        )
        votes = geode.transport.allgather((TERMINATION.requested, time_due, sent_due))
        terminated = any(vote[0] for vote in votes)
        if not (terminated or votes[0][1] or any(vote[2] for vote in votes)):
            return None
        if not terminated:
            return self.take(state, timeout)
        with TERMINATION.shielded():  # every rank is here: nothing to give up on
            epoch = self.take(state, timeout)
            if geode.rank == 0:
                print(
                    f"geode_mpi: SIGTERM: checkpoint {epoch} written in {self.store.directory}; "
                    "exiting (restart with --restart)",
                    flush=True,
                )
            self.close_geode(timeout)
        TERMINATION.finished()
        raise SystemExit(0)

    # -- taking one ------------------------------------------------------------------------

    def take(self, state: Mapping[str, Any] | None, timeout: float | None) -> int:
        with TERMINATION.shielded():  # after a SIGTERM too: it may be the job's last
            return self._take(state, timeout)

    def _take(self, state: Mapping[str, Any] | None, timeout: float | None) -> int:
        geode = self.geode
        if geode.sealed:
            raise ClosedError("checkpoint")
        timeout = check_timeout(timeout)
        started = time.perf_counter()
        tree: dict[str, Any] = {"state": encode_state(state or {})}
        engine = geode.engine
        transport = geode.transport
        sequencer = self.sequencer
        assert sequencer is not None, "the Geode sets the sequencer before any checkpoint"
        while True:  # a forward sends: drain again until nothing moves
            while engine.forwards:
                engine.forward()
            sequencer.resume()  # what a forward that raised left behind
            engine.flush()
            transport.drain(timeout)
            if not any(transport.allgather(bool(engine.forwards) or sequencer.holding)):
                break
        drained = time.perf_counter()
        tree["engine"] = capture(engine)
        tree["geode"] = JsonValue({"counters": {str(k): v for k, v in geode.counter.items()}})
        tree["topics"] = {
            topic.name: topic_state(engine.topics.of_topic(topic.wire))
            for topic in self.topics_made.values()
        }
        tree["queues"] = {queue.name: queue_state(queue) for queue in self.queues_made.values()}
        newest = max(self.store.epochs(complete_only=False), default=0)
        epoch = max(transport.allgather(max(newest, self.epoch))) + 1
        if geode.rank == 0:
            self.store.prepare(epoch)
        transport.allgather(None)  # the directory exists before anyone writes into it
        attrs = {"epoch": epoch, "rank": geode.rank, "size": geode.size}
        written = write_rank_file(self.store.epoch_path(epoch), geode.rank, attrs, tree)
        files = transport.allgather(written)
        if geode.rank == 0:
            info = {"nodes": list(geode.names), "size": geode.size}
            self.store.write_manifest(epoch, files, info)
        transport.allgather(None)  # sealed: every rank returns a complete checkpoint's epoch
        self.epoch = int(epoch)
        self.last_time = time.monotonic()
        self.last_sent = self.sent()
        done = time.perf_counter()
        self.report = {
            "epoch": self.epoch,
            "seconds": done - started,
            "drain_seconds": drained - started,
            "bytes": sum(file.size for file in files),  # every rank's file
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
                self.report["bytes"] / 1e6,
                self.report["seconds"],
                self.report["drain_seconds"],
                self.store.directory,
            )
        return self.epoch

    # -- restoring the newest --------------------------------------------------------------

    def restore(self) -> dict[str, Any] | None:
        """Load the newest usable checkpoint; its state, or None when there is none.

        Collective. Each rank checks the manifest (its shape, and its HMAC with a job key) and
        its own file, reads the file and checks every value in it, without changing anything
        (`_load`); an epoch is used only if every rank succeeded, else every rank tries the next
        older one together. Only then is the state put in place.

        Raises:
            CheckpointError: the checkpoint was saved by another shape of job; or the directory
                holds sealed checkpoints (with a manifest) and none of them can be used: a
                restart never silently starts afresh when there was something to resume.
        """
        geode = self.geode
        transport = geode.transport
        # Rank 0's view of the directory, so that every rank tries the same epochs in order.
        candidates, sealed = transport.allgather(
            (self.store.epochs(complete_only=False), self.store.epochs(complete_only=True))
        )[0]
        chosen: _Loaded | None = None
        skipped: list[str] = []
        for epoch in candidates:
            mine: _Loaded | None = None
            problem = mismatch = None
            try:
                mine = self._load(epoch)
            except _OtherJob as exc:
                mismatch = str(exc)
            except CheckpointError as exc:
                problem = str(exc)
            except Exception as exc:  # anything else a damaged file makes our code raise
                path = self.store.epoch_path(epoch)
                problem = f"{path}: rank {geode.rank}: {type(exc).__name__}: {exc} (damaged?)"
            votes = transport.allgather((problem, mismatch))
            mismatches = [found for _, found in votes if found is not None]
            if mismatches:
                self.close()  # the job stops: the directory's lock is free again
                raise CheckpointError(mismatches[0])
            # Every rank reads the same manifest: say its problem once.
            problems = list(dict.fromkeys(found for found, _ in votes if found is not None))
            if not problems:
                chosen = mine
                break
            if epoch in sealed:
                skipped += problems
            if geode.rank == 0:
                for found in problems:
                    log.warning("checkpoint skipped: %s", found)
        if chosen is None:
            if skipped:
                self.close()
                raise CheckpointError(
                    f"restart: {self.store.directory} holds checkpoint(s) "
                    f"{', '.join(str(epoch) for epoch in sealed)} and none can be used: "
                    f"{'; '.join(skipped)}. Nothing was restored; to start afresh instead, move "
                    "the directory aside (or give the job another one)"
                )
            if geode.rank == 0:
                log.warning(
                    "restart: no complete checkpoint in %s; starting afresh", self.store.directory
                )
            return None
        chosen.engine.apply(geode.engine)
        geode.counter.update(chosen.counters)
        self.topics = chosen.topics
        self.queues = chosen.queues
        self.epoch = chosen.epoch
        if geode.rank == 0:
            how = " (authenticated)" if self.store.key is not None else ""
            log.info(
                "restarted from checkpoint epoch %d%s in %s",
                chosen.epoch,
                how,
                self.store.directory,
            )
        return chosen.state

    def _load(self, epoch: int) -> _Loaded:
        """This rank's part of ``epoch``, read and checked; nothing is changed yet.

        Raises:
            _OtherJob: a valid manifest of another shape of job.
            CheckpointError: anything wrong with the manifest, the file or its content.
        """
        geode = self.geode
        manifest = self.store.manifest(epoch)
        path = self.store.epoch_path(epoch)
        nodes, size = manifest.get("nodes"), manifest.get("size")
        if not isinstance(nodes, list) or not all(isinstance(name, str) for name in nodes):
            raise CheckpointError(f"{path / MANIFEST}: nodes {nodes!r} is not a list of names")
        if size != geode.size or nodes != list(geode.names):
            raise _OtherJob(
                f"{path}: saved with nodes {nodes} on {size} rank(s); this job has nodes "
                f"{list(geode.names)} on {geode.size}: restart with the same nodes and number "
                "of ranks"
            )
        _, tree = self.store.validate(epoch, geode.rank).read(geode.rank)
        try:
            counters = _mapping(_mapping(tree.get("geode"), "geode").get("counters"), "counters")
            return _Loaded(
                epoch,
                load(geode.engine, tree.get("engine")),
                {_index(key, "counters"): _count(value) for key, value in counters.items()},
                {
                    name: load_topic(state)
                    for name, state in _mapping(tree.get("topics", {}), "topics").items()
                },
                {
                    name: load_queue(state, geode.names)
                    for name, state in _mapping(tree.get("queues", {}), "queues").items()
                },
                decode_state(tree.get("state")),
            )
        except CheckpointError as exc:
            raise CheckpointError(f"{path / rank_name(geode.rank)}: {exc}") from exc

    def close(self) -> None:
        self.store.unlock()
        if self._catching:
            self._catching = False
            TERMINATION.uninstall()


# -- topics and work queues ----------------------------------------------------------------


def topic_state(streams: Sequence[TopicStream]) -> dict[str, Any]:
    """A topic's state (its streams' numbering and retained messages) as a tree."""
    return {
        "next_seq": JsonValue({str(stream.number): stream.next_seq for stream in streams}),
        "retained": {
            str(stream.number): pack_messages(list(stream.retained)) for stream in streams
        },
    }


def load_topic(state: Any) -> dict[str, Any]:
    """A topic's saved state, checked: what `restore_topic` takes."""
    state = _mapping(state, "topic")
    next_seq = _mapping(state.get("next_seq"), "topic/next_seq")
    retained = _mapping(state.get("retained"), "topic/retained")
    return {
        "next_seq": {_index(key, "next_seq"): _count(seq) for key, seq in next_seq.items()},
        "retained": {_index(key, "retained"): unpack_messages(r) for key, r in retained.items()},
    }


def restore_topic(streams: Sequence[TopicStream], state: Mapping[str, Any]) -> None:
    """Put a topic's state from `load_topic` into the streams of the topic just created."""
    by_number = {stream.number: stream for stream in streams}
    for number, seq in state["next_seq"].items():
        by_number[number].next_seq = seq
    for number, messages in state["retained"].items():
        by_number[number].retained.extend(messages)


def queue_state(queue: WorkQueue) -> dict[str, Any]:
    """A work queue's dispatcher state as a tree."""
    state = queue.dispatch
    encoded = [codec.encode(task, _BLANK) for task in state.tasks]
    return {
        "tasks": pack_messages(encoded),
        "numbers": JsonValue(
            {
                "wanting": list(state.wanting),
                "producers_left": state.producers_left,
                "finished": state.finished,
                "told": sorted(state.told),
                "dispatched": state.dispatched,
            }
        ),
    }


def load_queue(state: Any, names: Sequence[str]) -> dict[str, Any]:
    """A work queue's saved state, checked and its tasks decoded: what `restore_queue` takes.

    Raises:
        CheckpointError: the state is not what `queue_state` makes (damaged).
    """
    state = _mapping(state, "work queue")
    tasks = []
    for meta, frames in unpack_messages(state.get("tasks")):
        try:
            task: Message = codec.decode(meta, frames, names)
        except GeodeError as exc:
            raise CheckpointError(f"work queue task: {exc}") from exc
        for field in ("id", "seq", "timestamp", "source", "dest"):
            task.__dict__.pop(field, None)
        tasks.append(task)
    numbers = _mapping(state.get("numbers"), "work queue/numbers")
    wanting, told = numbers.get("wanting"), numbers.get("told")
    if not isinstance(wanting, list) or not isinstance(told, list):
        raise CheckpointError(f"work queue/numbers: wanting {wanting!r}, told {told!r}")
    left, finished = numbers.get("producers_left"), numbers.get("finished")
    if not isinstance(finished, bool) or isinstance(left, bool) or not isinstance(left, int):
        raise CheckpointError(f"work queue/numbers: producers_left {left!r}, finished {finished!r}")
    return {
        "tasks": tasks,
        "numbers": {
            "wanting": [_count(node) for node in wanting],
            "producers_left": left,
            "finished": finished,
            "told": [_count(node) for node in told],
            "dispatched": _count(numbers.get("dispatched")),
        },
    }


def restore_queue(queue: WorkQueue, state: Mapping[str, Any]) -> None:
    """Put a work queue's state from `load_queue` into the queue just created."""
    dispatch = queue.dispatch
    dispatch.tasks.extend(state["tasks"])
    numbers = state["numbers"]
    dispatch.wanting.extend(numbers["wanting"])
    dispatch.producers_left = numbers["producers_left"]
    dispatch.finished = numbers["finished"]
    dispatch.told.update(numbers["told"])
    dispatch.dispatched = numbers["dispatched"]
