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

import json
import logging
import os
import pickle
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from geode_mpi import codec
from geode_mpi.core.termination import DEFAULT_GRACE, TERMINATION
from geode_mpi.errors import ClosedError, check_timeout
from geode_mpi.message import Message
from geode_mpi.persistence import CheckpointError, CheckpointStore, write_rank_file
from geode_mpi.persistence.snapshot import capture, pack_messages, restore, unpack_messages
from geode_mpi.persistence.store import MANIFEST, JsonValue
from geode_mpi.tracing import TRACER, now_us

if TYPE_CHECKING:
    from geode_mpi.core.geode import Geode
    from geode_mpi.core.topics import Topic
    from geode_mpi.core.workqueues import WorkQueue

log = logging.getLogger("geode_mpi")
_BLANK = codec.Stamp(0, 0, 0.0, 0, 0)
_JSON_TYPES = (str, int, float, bool, type(None))


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


def decode_state(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Back from `encode_state` (its file passed its checksum before this unpickles)."""
    state = dict(tree.get("plain", {}))
    for key, raw in tree.get("pickled", {}).items():
        state[key] = pickle.loads(raw)
    return state


class Checkpointer:
    """A Geode's checkpoints: where they go, taking one, restoring the newest."""

    def __init__(
        self,
        geode: Geode,
        directory: str | os.PathLike[str],
        keep: int,
        every: float | None = None,
        every_messages: int | None = None,
        term_grace: float = DEFAULT_GRACE,
    ) -> None:
        self.geode = geode
        self.store = CheckpointStore(directory, keep)
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
        return sum(stats.sent for stats in self.geode._engine.stats.values())

    def maybe(self, state: Mapping[str, Any] | None, timeout: float | None) -> int | None:
        """Collective: checkpoint if the policy says so on any rank (rank 0's clock for time),
        and after a SIGTERM checkpoint and exit; None when nothing was due."""
        geode = self.geode
        now = time.monotonic()
        time_due = self.every is not None and now - self.last_time >= self.every
        sent_due = (
            self.every_messages is not None and self.sent() - self.last_sent >= self.every_messages
        )
        votes = geode._transport.allgather((TERMINATION.requested, time_due, sent_due))
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
            geode.close(timeout)
        TERMINATION.finished()
        raise SystemExit(0)

    # -- taking one ------------------------------------------------------------------------

    def take(self, state: Mapping[str, Any] | None, timeout: float | None) -> int:
        with TERMINATION.shielded():  # after a SIGTERM too: it may be the job's last
            return self._take(state, timeout)

    def _take(self, state: Mapping[str, Any] | None, timeout: float | None) -> int:
        geode = self.geode
        if geode._sealed:
            raise ClosedError("checkpoint")
        timeout = check_timeout(timeout)
        started = time.perf_counter()
        tree: dict[str, Any] = {"state": encode_state(state or {})}
        engine = geode._engine
        transport = geode._transport
        sequencer = geode._sequencer
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
        tree["geode"] = JsonValue({"counters": {str(k): v for k, v in geode._counter.items()}})
        tree["topics"] = {
            topic.name: topic_state(topic) for topic in geode._channels.topics.values()
        }
        tree["queues"] = {
            queue.name: queue_state(queue) for queue in geode._channels.work_queues.values()
        }
        newest = max(self.store.epochs(complete_only=False), default=0)
        epoch = max(transport.allgather(max(newest, self.epoch))) + 1
        if geode.rank == 0:
            self.store.prepare(epoch)
        transport.allgather(None)  # the directory exists before anyone writes into it
        attrs = {"epoch": epoch, "rank": geode.rank, "size": geode.size}
        written = write_rank_file(self.store.epoch_path(epoch), geode.rank, attrs, tree)
        files = transport.allgather(written)
        if geode.rank == 0:
            info = {"nodes": list(geode._names), "size": geode.size}
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
        """Load the newest complete checkpoint; its state, or None when there is none.

        Each rank checks the manifest and its own file (in parallel); an epoch is used only if
        every rank found its part good, else the next older one is tried."""
        geode = self.geode
        transport = geode._transport
        candidates = transport.allgather(self.store.epochs(complete_only=False))[0]
        loaded = None
        for epoch in candidates:
            self._check_same_job(epoch)
            try:
                mine: Any = self.store.validate(epoch, geode.rank)
                problem = None
            except CheckpointError as exc:
                mine, problem = None, str(exc)
            problems = [found for found in transport.allgather(problem) if found is not None]
            if not problems:
                loaded = mine
                break
            if geode.rank == 0:
                for found in problems:
                    log.warning("checkpoint skipped: %s", found)
        if loaded is None:
            if geode.rank == 0:
                log.warning(
                    "restart: no complete checkpoint in %s; starting afresh", self.store.directory
                )
            return None
        epoch = loaded.epoch
        _, tree = loaded.read(geode.rank)
        restore(geode._engine, tree["engine"])
        for key, count in tree["geode"]["counters"].items():
            geode._counter[int(key)] = count
        self.topics = dict(tree.get("topics", {}))
        self.queues = dict(tree.get("queues", {}))
        self.epoch = epoch
        if geode.rank == 0:
            log.info("restarted from checkpoint epoch %d in %s", epoch, self.store.directory)
        return decode_state(tree["state"])

    def _check_same_job(self, epoch: int) -> None:
        """Raise if a checkpoint with a readable manifest was saved by another shape of job
        (every rank reads the same manifest, so every rank raises alike)."""
        geode = self.geode
        path = self.store.epoch_path(epoch)
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # unreadable or missing: validation says so, and the next one is tried
        if manifest.get("size") != geode.size or manifest.get("nodes") != list(geode._names):
            raise CheckpointError(
                f"{path}: saved with nodes {manifest.get('nodes')} on {manifest.get('size')} "
                f"rank(s); this job has nodes {list(geode._names)} on {geode.size}: restart "
                "with the same nodes and number of ranks"
            )

    def close(self) -> None:
        self.store.unlock()
        if self._catching:
            self._catching = False
            TERMINATION.uninstall()


# -- topics and work queues ----------------------------------------------------------------


def topic_state(topic: Topic) -> dict[str, Any]:
    return {
        "next_seq": JsonValue({str(number): seq for number, seq in topic._next_seq.items()}),
        "retained": {
            str(number): pack_messages(list(retained))
            for number, retained in topic._retained.items()
        },
    }


def restore_topic(topic: Topic, state: Mapping[str, Any]) -> None:
    for number, seq in state["next_seq"].items():
        topic._next_seq[int(number)] = seq
    for number, packed in state["retained"].items():
        topic._retained[int(number)].extend(unpack_messages(packed))


def queue_state(queue: WorkQueue) -> dict[str, Any]:
    encoded = [codec.encode(task, _BLANK) for task in queue._tasks]
    return {
        "tasks": pack_messages(encoded),
        "numbers": JsonValue(
            {
                "wanting": list(queue._wanting),
                "producers_left": queue._producers_left,
                "finished": queue._finished,
                "told": sorted(queue._told),
                "dispatched": queue.dispatched,
            }
        ),
    }


def restore_queue(queue: WorkQueue, state: Mapping[str, Any]) -> None:
    names = queue._geode._names
    for meta, frames in unpack_messages(state["tasks"]):
        task: Message = codec.decode(meta, frames, names)
        for field in ("id", "seq", "timestamp", "source", "dest"):
            task.__dict__.pop(field, None)
        queue._tasks.append(task)
    numbers = state["numbers"]
    queue._wanting.extend(numbers["wanting"])
    queue._producers_left = numbers["producers_left"]
    queue._finished = numbers["finished"]
    queue._told.update(numbers["told"])
    queue.dispatched = numbers["dispatched"]
