"""The checks of a saved tree's values (mappings, counts, node indices) and the error of a
restart's arguments that differ from the saved ones: what saved.py and saved_queues.py share."""

from __future__ import annotations

from typing import Any

from geode_mpi.persistence import CheckpointError


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


def _other_arguments(what: str, argument: str, now: str, before: str) -> CheckpointError:
    """The error of a restarted topic or work queue (``what``) made with another ``argument``
    than the checkpoint saved (``now`` and ``before`` as the job gives them)."""
    return CheckpointError(
        f"{what}: restarted with {argument}={now}, but the checkpoint saved it with "
        f"{argument}={before}: restart with the same arguments"
    )


def other_place(what: str, now: str, before: str, numbered: tuple[int, int]) -> CheckpointError:
    """The error of a restarted topic or work queue (``what``) whose streams get other numbers
    than the checkpoint saved (``now`` and ``before`` as said): ``numbered``, how many stream
    numbers came before its first, now and at the checkpoint."""
    now_before, saved_before = numbered
    cause = (
        "a topic or work queue made before it then is not made again before it now"
        if now_before < saved_before
        else "one more topic or work queue is made before it now (or one made after it then)"
    )
    return CheckpointError(
        f"{what}: restarted {now}, but the checkpoint saved it {before}: streams are numbered "
        f"in the order topics and work queues are made (a topic has one per publisher, or "
        f"one with a sequencer; a work queue one; an executor none), and {now_before} were "
        f"numbered before it now, {saved_before} before the checkpoint: {cause}. Make the same "
        "topics and work queues, in the same order, as before the checkpoint"
    )
