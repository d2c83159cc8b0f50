"""What a checkpoint saves of a work queue, as a tree and back: its dispatcher's state and its
consumers' on this rank (each value checked on the way back), and a restart's arguments checked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.core.saved_checks import _other_arguments, count, indices, mapping, other_place
from geode_mpi.errors import GeodeError
from geode_mpi.message import Message
from geode_mpi.persistence import CheckpointError
from geode_mpi.persistence.rankfile import JsonValue
from geode_mpi.persistence.snapshot import pack_messages, unpack_messages

if TYPE_CHECKING:
    from geode_mpi.core.workqueues import WorkQueue

_BLANK = codec.Stamp(0, 0, 0.0, 0, 0)


def queue_state(queue: WorkQueue) -> dict[str, Any]:
    """A work queue's dispatcher state, and its consumers' on this rank (`WorkQueue.
    consumer_state`), as a tree."""
    state = queue.dispatch
    encoded = [codec.encode(task, _BLANK) for task in state.tasks]
    ended, asks = queue.consumer_state()
    return {
        "tasks": pack_messages(encoded),
        "consumers": JsonValue({"ended": ended, "asks": asks}),
        "numbers": JsonValue(
            {
                "wanting": list(state.wanting),
                "producers_left": state.producers_left,
                "finished": state.finished,
                "told": sorted(state.told),
                "dispatched": state.dispatched,
                "finished_by": sorted(state.finished_by),
                "stream": queue.number,
                "dispatcher": state.node,
                "consumers": list(queue.consumer_indices),
                "producers": sorted(queue.producer_indices),
                "executor": queue.executor,
            }
        ),
    }


def load_queue(state: Any, names: Sequence[str]) -> dict[str, Any]:
    """A work queue's saved state, checked and its tasks decoded: what `restore_queue` takes.

    Raises:
        CheckpointError: the state is not what `queue_state` makes (damaged).
    """
    state = mapping(state, "work queue")
    tasks = []
    for meta, frames in unpack_messages(state.get("tasks")):
        try:
            task: Message = codec.decode(meta, frames, names)
        except GeodeError as exc:
            raise CheckpointError(f"work queue task: {exc}") from exc
        for field in ("id", "seq", "timestamp", "source", "dest"):
            task.__dict__.pop(field, None)
        tasks.append(task)
    numbers = mapping(state.get("numbers"), "work queue/numbers")
    wanting, told = numbers.get("wanting"), numbers.get("told")
    if not isinstance(wanting, list) or not isinstance(told, list):
        raise CheckpointError(f"work queue/numbers: wanting {wanting!r}, told {told!r}")
    left, finished = numbers.get("producers_left"), numbers.get("finished")
    if not isinstance(finished, bool) or isinstance(left, bool) or not isinstance(left, int):
        raise CheckpointError(f"work queue/numbers: producers_left {left!r}, finished {finished!r}")
    finished_by = numbers.get("finished_by", [])  # (not in a checkpoint from before it)
    if not isinstance(finished_by, list):
        raise CheckpointError(f"work queue/numbers: finished_by {finished_by!r}")
    stream, dispatcher = numbers.get("stream"), numbers.get("dispatcher")
    consumers = mapping(state.get("consumers", {}), "work queue/consumers")  # (not before)
    ended = indices(consumers.get("ended", []), "work queue/consumers/ended")
    asks = indices(consumers.get("asks", []), "work queue/consumers/asks")
    return {
        # the queue's arguments, as node indices (None: not saved, by an older geode_mpi)
        "arguments": {
            "dispatcher": None if dispatcher is None else count(dispatcher),
            "consumers": indices(numbers.get("consumers"), "work queue/numbers/consumers"),
            "producers": indices(numbers.get("producers"), "work queue/numbers/producers"),
            # an executor's (`executor.md`): a restart drops it (False before it was saved)
            "executor": numbers.get("executor", False) is True,
            "stream": None if stream is None else count(stream),
        },
        # this rank's consumers: over for them, and their requests to send again
        "ended": ended or [],
        "asks": asks or [],
        # None in a checkpoint written before they were saved
        "root": None if dispatcher is None else (count(stream), count(dispatcher)),
        "tasks": tasks,
        "numbers": {
            "wanting": [count(node) for node in wanting],
            "producers_left": left,
            "finished": finished,
            "told": [count(node) for node in told],
            "dispatched": count(numbers.get("dispatched")),
            "finished_by": [count(node) for node in finished_by],
        },
    }


def restore_queue(queue: WorkQueue, state: Mapping[str, Any] | None) -> None:
    """Put a work queue's state from `load_queue` into the queue just created (None: the
    queue's dispatcher is on another rank, which restores its state)."""
    if state is None:
        return
    dispatch = queue.dispatch
    dispatch.tasks.extend(state["tasks"])
    numbers = state["numbers"]
    dispatch.wanting.extend(numbers["wanting"])
    dispatch.producers_left = numbers["producers_left"]
    dispatch.finished = numbers["finished"]
    dispatch.told.update(numbers["told"])
    dispatch.dispatched = numbers["dispatched"]
    dispatch.finished_by.update(numbers["finished_by"])


def check_queue_arguments(
    name: str, saved: Mapping[str, Any], made: Mapping[str, Any], names: Sequence[str]
) -> None:
    """A restarted work queue's arguments (``dispatcher``, ``consumers``, ``producers``: node
    indices) against those saved (see `load_queue`: None, not saved, is not compared). Every
    rank read the same ones and agreed on the new ones: every rank raises, or none.

    Raises:
        CheckpointError: one differs: the queue's dispatcher holds tasks and requests, and its
            consumers' pairs and queues, for the saved ones only.
    """
    for argument in ("dispatcher", "consumers", "producers"):
        before, now = saved.get(argument), made[argument]
        if before is None or before == now:
            continue
        if isinstance(now, int):
            shown_before, shown_now = repr(names[before]), repr(names[now])
        else:
            shown_before = repr([names[index] for index in before])
            shown_now = repr([names[index] for index in now])
        raise _other_arguments(f"work queue {name!r}", argument, shown_now, shown_before)


def check_queue_stream(name: str, saved: int | None, now: int, first: int) -> None:
    """A restarted work queue's stream number (``now``, the next one) against the saved one
    (None: not saved), ``first`` the job's first stream's: the saved tasks and requests in
    its consumers' queues and pairs are of the saved stream.

    Raises:
        CheckpointError: they differ (said as `saved_checks.other_place` says it).
    """
    if saved is not None and saved != now:
        raise other_place(
            f"work queue {name!r}", f"on stream {now}", f"on stream {saved}",
            (now - first, saved - first),
        )  # fmt: skip
