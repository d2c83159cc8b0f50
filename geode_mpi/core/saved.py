"""What a checkpoint saves besides the engine, as trees and back: the job's state, per-node
state, topics and work queues (each value checked on the way back)."""

from __future__ import annotations

import pickle
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi import codec
from geode_mpi.base.ondemand import on_first_use
from geode_mpi.errors import GeodeError
from geode_mpi.message import Message
from geode_mpi.persistence import CheckpointError
from geode_mpi.persistence.layout import storable
from geode_mpi.persistence.rankfile import JsonValue
from geode_mpi.persistence.snapshot import pack_messages, unpack_messages

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.core.workqueues import WorkQueue
    from geode_mpi.delivery.topics import TopicStream
else:  # imported when a checkpoint saves or restores
    np = on_first_use("numpy", globals(), "np")

_BLANK = codec.Stamp(0, 0, 0.0, 0, 0)
_JSON_TYPES = (str, int, float, bool, type(None))


def encode_state(state: Mapping[str, Any], what: str = "state") -> dict[str, Any]:
    """The job's state as a tree: arrays HDF5 stores exactly (`layout.storable`) and plain
    values as they are, anything else pickled: arrays of str, dates or objects, subclasses of
    ndarray (a masked array keeps its mask, a matrix stays a matrix) and of the plain types
    (numpy's float64, an IntEnum) come back as they were.

    Raises:
        TypeError: ``state`` is not a mapping of str keys, or a value cannot be pickled
            (naming ``what`` and the key).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"{what} must be a mapping of str keys, got {type(state).__name__}")
    plain: dict[str, Any] = {}
    pickled: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise TypeError(f"{what} keys must be non-empty str without '/', got {key!r}")
        kind = type(value)
        if kind in _JSON_TYPES or (kind is np.ndarray and storable(value.dtype)):
            plain[key] = value
        else:
            try:
                pickled[key] = pickle.dumps(value, protocol=5)
            except Exception as exc:
                raise TypeError(
                    f"{what}[{key!r}] ({kind.__name__}) cannot be saved: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
    return {"plain": plain, "pickled": pickled}


def decode_state(tree: Any) -> dict[str, Any]:
    """Back from `encode_state` (its file passed its checksum, and with a job key its
    manifest's HMAC, before this unpickles).

    Raises:
        CheckpointError: the tree is not what `encode_state` makes, or a value cannot be
            unpickled.
    """
    tree = mapping(tree, "state")
    state = dict(mapping(tree.get("plain", {}), "state/plain"))
    for key, raw in mapping(tree.get("pickled", {}), "state/pickled").items():
        if not isinstance(raw, bytes):
            raise CheckpointError(f"state/pickled/{key}: expected bytes, got {type(raw).__name__}")
        try:
            state[key] = pickle.loads(raw)
        except Exception as exc:
            raise CheckpointError(
                f"state[{key!r}] cannot be unpickled: {type(exc).__name__}: {exc}"
            ) from exc
    return state


def encode_node_state(value: Any, node: str) -> dict[str, Any]:
    """One node's state as a tree (see `encode_state`)."""
    return encode_state({"value": value}, f"node_state[{node!r}]")


def decode_node_state(tree: Any) -> Any:
    """Back from `encode_node_state`.

    Raises:
        CheckpointError: the tree is not what `encode_node_state` makes.
    """
    state = decode_state(tree)
    if set(state) != {"value"}:
        raise CheckpointError(f"node state: keys {sorted(state)}, expected ['value']")
    return state["value"]


def mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CheckpointError(f"{what}: expected a mapping, got {type(value).__name__}")
    return value


def count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"expected a count (an int >= 0), got {value!r}")
    return value


def index_key(key: str, what: str) -> int:
    if not key.isdigit():
        raise CheckpointError(f"{what}: key {key!r} is not a number")
    return int(key)


# -- topics and work queues ----------------------------------------------------------------


def topic_state(
    streams: Sequence[TopicStream], named: Iterable[int], arguments: Mapping[str, Any]
) -> dict[str, Any]:
    """A topic's state as a tree: the arguments it was made with (``publishers``,
    ``sequencer``, ``retain``, ``wire``: node indices and numbers, for `check_topic_arguments`),
    its subscribers (in order, the same on each of its streams; ``named``: those subscribed by
    name, not through a pattern), each stream's publisher (its root node, so that a restart on
    another number of ranks knows which rank takes the stream over), numbering and retained
    messages."""
    return {
        "arguments": JsonValue(dict(arguments)),
        "subscribers": JsonValue(list(streams[0].subscribers)),
        "named": JsonValue(sorted(named)),
        "roots": JsonValue({str(stream.number): stream.publisher for stream in streams}),
        "next_seq": JsonValue({str(stream.number): stream.next_seq for stream in streams}),
        "retained": {
            str(stream.number): pack_messages(list(stream.retained)) for stream in streams
        },
        # (what its sequencer holds is saved with the sequencer's node: a checkpoint without
        # this key was written before, and a restart says what may be lost: `held_unsaved`)
        "forwards_saved": JsonValue(True),
    }


def load_topic(state: Any) -> dict[str, Any]:
    """A topic's saved state, checked: what `restore_topic` takes. ``roots`` (stream number
    to publisher node), ``subscribers`` and ``named`` are None in a checkpoint written before
    they were saved."""
    state = mapping(state, "topic")
    next_seq = mapping(state.get("next_seq"), "topic/next_seq")
    retained = mapping(state.get("retained"), "topic/retained")
    roots = state.get("roots")
    return {
        "arguments": topic_arguments(state.get("arguments")),
        "subscribers": indices(state.get("subscribers"), "topic/subscribers"),
        "named": indices(state.get("named"), "topic/named"),
        "roots": None if roots is None else numbered(roots, "topic/roots"),
        "next_seq": numbered(next_seq, "topic/next_seq"),
        "retained": {index_key(key, "retained"): unpack_messages(r) for key, r in retained.items()},
        "forwards_saved": state.get("forwards_saved") is True,
    }


def held_unsaved(topics: Mapping[str, Any], hosted: Container[int]) -> list[tuple[str, int]]:
    """(name, sequencer node) of each total-order topic of ``topics`` (`load_topic`'s) whose
    sequencer ``hosted`` holds and whose checkpoint was written before a sequencer's held
    messages were saved (no ``forwards_saved``): those messages are not in it."""
    found = []
    for name, state in topics.items():
        arguments = state["arguments"]
        sequencer = None if arguments is None else arguments["sequencer"]
        if sequencer is not None and sequencer in hosted and not state["forwards_saved"]:
            found.append((name, sequencer))
    return found


def topic_arguments(tree: Any) -> dict[str, Any] | None:
    """A topic's saved arguments (see `topic_state`), checked; None in a checkpoint written
    before they were saved.

    Raises:
        CheckpointError: the tree is not what `topic_state` makes.
    """
    if tree is None:
        return None
    tree = mapping(tree, "topic/arguments")
    sequencer = tree.get("sequencer")
    return {
        "publishers": indices(tree.get("publishers"), "topic/arguments/publishers"),
        "sequencer": None if sequencer is None else count(sequencer),
        "retain": count(tree.get("retain")),
        "wire": count(tree.get("wire")),
    }


def check_topic_arguments(
    name: str,
    saved: Mapping[str, Any],
    made: Mapping[str, Any],
    roots: Mapping[int, int],
    names: Sequence[str],
) -> None:
    """A restarted topic's arguments against those saved (see `load_topic`), before the topic
    is made: ``made`` as `topic_state`'s ``arguments``, ``roots`` the node that will send on
    each of its streams, by the number it will get. Every rank read the same saved ones and
    agreed on the new ones: every rank raises, or none.

    Raises:
        CheckpointError: one differs (naming the topic, the argument, what was saved and what
            was given): the saved numbering, retained messages and pairs belong to the saved
            publishers and streams, and would go to others.
    """
    arguments = saved["arguments"] or {}
    for argument in ("publishers", "sequencer", "retain"):
        before, now = arguments.get(argument), made[argument]
        if argument not in arguments or before == now:
            continue
        shown_now, shown_before = _shown(argument, now, names), _shown(argument, before, names)
        raise _other_arguments(f"topic {name!r}", argument, shown_now, shown_before)
    before_wire = arguments.get("wire")
    if (saved["roots"] is not None and dict(saved["roots"]) != dict(roots)) or (
        before_wire is not None and before_wire != made["wire"]
    ):
        saved_as = "" if before_wire is None else f" as its topic {before_wire - len(names) + 1}"
        raise CheckpointError(
            f"topic {name!r}: restarted as the job's topic {made['wire'] - len(names) + 1} "
            f"(stream(s) {sorted(roots)}), but the checkpoint saved it{saved_as} (stream(s) "
            f"{sorted(saved['roots'] or roots)}): make the topics and work queues in the same "
            "order as before the checkpoint"
        )


def _other_arguments(what: str, argument: str, now: str, before: str) -> CheckpointError:
    """The error of a restarted topic or work queue (``what``) made with another ``argument``
    than the checkpoint saved (``now`` and ``before`` as the job gives them)."""
    return CheckpointError(
        f"{what}: restarted with {argument}={now}, but the checkpoint saved it with "
        f"{argument}={before}: restart with the same arguments"
    )


def _shown(argument: str, value: Any, names: Sequence[str]) -> str:
    """A topic argument as the job gave it: node names for node indices."""
    if argument == "publishers":
        return repr([names[index] for index in value])
    if argument == "sequencer":
        return "None (no total order)" if value is None else repr(names[value])
    return repr(value)


def numbered(tree: Any, what: str) -> dict[int, int]:
    """A mapping of numbers to counts (node indices, seqs), checked."""
    return {index_key(key, what): count(value) for key, value in mapping(tree, what).items()}


def indices(tree: Any, what: str) -> list[int] | None:
    """A list of node indices, checked (None stays None: not saved)."""
    if tree is None:
        return None
    if not isinstance(tree, list):
        raise CheckpointError(f"{what}: expected a list of node indices, got {tree!r}")
    return [count(value) for value in tree]


def pattern_state(patterns: Iterable[tuple[str, bool, Sequence[int]]]) -> list[Any]:
    """The pattern subscriptions as a JSON value: (pattern, prefix?, member nodes), in the
    order they were first made."""
    return [[text, prefix, list(members)] for text, prefix, members in patterns]


def load_patterns(tree: Any) -> list[tuple[str, bool, list[int]]]:
    """Back from `pattern_state` (an empty list in a checkpoint written before they were
    saved).

    Raises:
        CheckpointError: the tree is not what `pattern_state` makes.
    """
    if tree is None:
        return []
    if not isinstance(tree, list):
        raise CheckpointError(f"geode/patterns: expected a list, got {tree!r}")
    found = []
    for entry in tree:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not isinstance(entry[0], str)
            or not entry[0]
            or not isinstance(entry[1], bool)
        ):
            raise CheckpointError(f"geode/patterns: {entry!r} is not [pattern, prefix, nodes]")
        members = indices(entry[2], "geode/patterns")
        found.append((entry[0], entry[1], members or []))
    return found


def restore_topic(streams: Sequence[TopicStream], state: Mapping[str, Any]) -> None:
    """Put a topic's state from `load_topic` into the streams of the topic just created."""
    by_number = {stream.number: stream for stream in streams}
    for number, seq in state["next_seq"].items():
        by_number[number].next_seq = seq
    for number, messages in state["retained"].items():
        by_number[number].retained.extend(messages)


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
