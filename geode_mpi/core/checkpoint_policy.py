"""The checkpoint policy's arguments to `Geode`, checked before anything starts."""

from __future__ import annotations

from typing import Any

from geode_mpi.errors import check_timeout


def check_policy(keep: Any, every: Any, every_messages: Any) -> None:
    """Refuse a checkpoint policy that could not work, naming the argument and its value
    (each rank alike: a bad value found later, by rank 0 only, left the others waiting).
    0 is allowed, and means at every `maybe_checkpoint`.

    Raises:
        TypeError: an argument of the wrong type (``checkpoint_every="600"``).
        ValueError: ``keep_checkpoints`` < 2, ``checkpoint_every`` < 0 or NaN,
            ``checkpoint_every_messages`` < 0.
    """
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise TypeError(f"keep_checkpoints must be an int >= 2, got {keep!r}")
    if keep < 2:
        raise ValueError(f"keep_checkpoints must be an int >= 2, got {keep!r}")
    check_timeout(every, "checkpoint_every")
    if every_messages is not None:
        if isinstance(every_messages, bool) or not isinstance(every_messages, int):
            raise TypeError(
                f"checkpoint_every_messages must be an int >= 0 or None, got {every_messages!r}"
            )
        if every_messages < 0:
            raise ValueError(
                f"checkpoint_every_messages must be an int >= 0, got {every_messages!r}"
            )
