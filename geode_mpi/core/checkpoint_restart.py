"""Restoring the newest usable checkpoint (`Checkpointer.restore`): every rank reads its part
(`geode_mpi.core.restoring`), together they pick the epoch, and its state is put in place."""

from __future__ import annotations

from typing import Any

from geode_mpi import codec
from geode_mpi.base.listing import SHOWN, some_names
from geode_mpi.base.logger import log
from geode_mpi.core.checkpoint_state import CheckpointerState
from geode_mpi.core.filters import unfound_classes, unfound_text
from geode_mpi.core.restoring import (
    Loaded,
    OtherJob,
    Part,
    name_restored_topics,
    plan,
    read_part,
)
from geode_mpi.core.topics import EXECUTOR_BASE
from geode_mpi.persistence import CheckpointError
from geode_mpi.persistence.dropping import drop_waiting

# The wire names of an executor's messages, and what to call them in a log line.
_EXECUTOR_WIRE_NAMES = {
    "geode_mpi.core.executor:_Task": "task(s)",
    "geode_mpi.core.executor:_Outcome": "outcome(s)",
}


class Restarting(CheckpointerState):
    """`Checkpointer`'s restart from the newest checkpoint (a part of it, through ``self``)."""

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
        self._warn_unmoved_state(chosen)
        self._warn_unfound_classes()
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
        self.executor_count = chosen.executors
        self.skipped_streams = set(chosen.skipped_streams)
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
                some_names(sorted({geode.names[i] for i in chosen.held_unsaved.values()})),
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

    def _warn_unfound_classes(self) -> None:
        """Warn of restored messages whose class this rank cannot find (renamed or moved since
        the checkpoint): a receive by type would wait for ever beside them. Each rank holding
        some says so (the class is looked up where the message would be decoded)."""
        geode = self.geode
        for index, inbox in geode.inboxes.items():
            unfound = unfound_classes(inbox)
            if unfound:
                log.warning(
                    "restart: messages restored at %s: %s; a receive without a type filter "
                    "fails on each (DecodeError: a dead letter). If the class is defined after "
                    "Geode() is made, ignore this",
                    geode.names[index],
                    unfound_text(unfound),
                )

    def _warn_unmoved_state(self, chosen: Loaded) -> None:
        """On another number of ranks, rank 0 warns once of the per-rank `state` that does not
        follow the nodes. On fewer ranks, that of the old ranks this job lacks, if any saved
        some: each is told by the rank hosting its first node, in one rooted gather (a few
        ranks, a few keys each: never every rank's state). On more, the new ranks start with
        ``{}``: said when rank 0's was not empty (a job that keeps its step there)."""
        geode = self.geode
        saved = chosen.saved_ranks
        if saved > geode.size:
            gone = sorted(chosen.gone_state.items())
            told = self.rooted.gather(
                (len(gone), [(old, _few(keys)) for old, keys in gone[:SHOWN]])
            )
            ranks = 0 if told is None else sum(count for count, _ in told)  # (rank 0's sum)
            if told is None or not ranks:
                return
            shown = sorted(entry for _, entries in told for entry in entries)[:SHOWN]
            listed = "; ".join(f"rank {old} (keys {keys})" for old, keys in shown)
            if ranks > len(shown):
                listed += f"; ... and {ranks - len(shown)} more"
            what = f"the per-rank state (restored_state) of {ranks} old rank(s) this job does "
            what += f"not have is not restored (a rank's goes to the rank of its number): {listed}"
        elif saved < geode.size and geode.rank == 0 and chosen.state:
            fresh = some_names(str(rank) for rank in range(saved, geode.size))
            what = f"restored_state is {{}} on the new rank(s) {fresh} (rank 0's has keys "
            what += f"{_few(sorted(chosen.state))})"
        else:
            return
        log.warning(
            "restart on %d rank(s) from checkpoint epoch %d of %d: %s; keep what must survive a "
            "change of size in node_state",
            geode.size,
            chosen.epoch,
            saved,
            what,
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
        shared = len(self.geode.names) + EXECUTOR_BASE  # (below: numbered among the others)
        for name, arguments in list(self.queue_arguments.items()):
            if not arguments.get("executor"):
                continue
            if arguments.get("stream") is not None and arguments["stream"] < shared:
                self.skipped_streams.add(arguments["stream"])  # (a geode_mpi before 51's)
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


def _few(keys: list[str]) -> str:
    """A state's keys as a warning names them: the first few, quoted."""
    return some_names([repr(key) for key in keys], limit=3)
