"""What a checkpoint saves besides the engine, as trees and back: the job's state, per-node
state, topics and work queues (each value checked on the way back). A work queue's part is in
saved_queues.py, the checks of saved values in saved_checks.py: their names stay importable
from here."""

from __future__ import annotations

import pickle
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.core.saved_checks import _other_arguments, other_place
from geode_mpi.core.saved_checks import count as count
from geode_mpi.core.saved_checks import index_key as index_key
from geode_mpi.core.saved_checks import indices as indices
from geode_mpi.core.saved_checks import mapping as mapping
from geode_mpi.core.saved_checks import numbered as numbered
from geode_mpi.core.saved_queues import check_queue_arguments as check_queue_arguments
from geode_mpi.core.saved_queues import check_queue_stream as check_queue_stream
from geode_mpi.core.saved_queues import load_queue as load_queue
from geode_mpi.core.saved_queues import queue_state as queue_state
from geode_mpi.core.saved_queues import restore_queue as restore_queue
from geode_mpi.persistence import CheckpointError
from geode_mpi.persistence.layout import storable
from geode_mpi.persistence.rankfile import JsonValue
from geode_mpi.persistence.snapshot import pack_messages, unpack_messages

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.delivery.topics import TopicStream
else:  # imported when a checkpoint saves or restores
    np = on_first_use("numpy", globals(), "np")

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
        if not isinstance(key, str) or not key:  # ('/' too: a key of the file's index)
            raise TypeError(f"{what} keys must be non-empty str, got {key!r}")
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


def state_keys(tree: Any) -> list[str]:
    """The keys of a saved `state` (`encode_state`'s tree), sorted, nothing unpickled.

    Raises:
        CheckpointError: the tree is not what `encode_state` makes.
    """
    tree = mapping(tree, "state")
    plain = mapping(tree.get("plain", {}), "state/plain")
    return sorted([*plain, *mapping(tree.get("pickled", {}), "state/pickled")])


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


# -- topics and pattern subscriptions (a work queue's: saved_queues.py) --------------------


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
    first: int,
) -> None:
    """A restarted topic's arguments against those saved (see `load_topic`), before the topic
    is made: ``made`` as `topic_state`'s ``arguments``, ``roots`` the node that will send on
    each of its streams, by the number it will get (``first``: the job's first stream's).
    Every rank read the same saved ones and agreed on the new ones: every rank raises, or
    none.

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
    topic = made["wire"] - len(names) + 1
    if before_wire is not None and before_wire != made["wire"]:
        raise CheckpointError(
            f"topic {name!r}: restarted as the job's topic {topic} (stream(s) {sorted(roots)}), "
            f"but the checkpoint saved it as its topic {before_wire - len(names) + 1} (stream(s) "
            f"{sorted(saved['roots'] or roots)}): make the topics and work queues in the same "
            "order as before the checkpoint"
        )
    if saved["roots"] is not None and dict(saved["roots"]) != dict(roots):
        now, before = sorted(roots), sorted(saved["roots"])
        raise other_place(
            f"topic {name!r}",
            f"as the job's topic {topic} on stream(s) {now}",
            f"{'' if before_wire is None else 'as that topic '}on stream(s) {before}",
            (min(now) - first, min(before) - first),
        )


def _shown(argument: str, value: Any, names: Sequence[str]) -> str:
    """A topic argument as the job gave it: node names for node indices."""
    if argument == "publishers":
        return repr([names[index] for index in value])
    if argument == "sequencer":
        return "None (no total order)" if value is None else repr(names[value])
    return repr(value)


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
