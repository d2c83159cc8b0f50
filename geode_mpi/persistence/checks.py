"""Values read back from a checkpoint, checked: each check raises `CheckpointError` naming
what it read and what it expected."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.errors import CheckpointError

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a checkpoint is read
    np = on_first_use("numpy", globals(), "np")


def brief(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def as_int(value: Any, what: str, least: int | None = 0) -> int:
    """``value`` as an int of at least ``least`` (None: any); ``what`` names it in the error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"{what}: expected an int, got {brief(value)}")
    if least is not None and value < least:
        raise CheckpointError(f"{what}: expected an int >= {least}, got {value}")
    return value


def as_ints(value: Any, what: str, length: int | None = None) -> list[int]:
    """``value`` as a list of ints >= 0 (of ``length`` of them, if given)."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        size = "a list" if length is None else f"a list of {length}"
        raise CheckpointError(f"{what}: expected {size} ints, got {brief(value)}")
    return [as_int(item, what) for item in value]


def as_dict(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a mapping."""
    if not isinstance(value, dict):
        raise CheckpointError(f"{what}: expected a mapping, got {brief(value)}")
    return value


def as_list(value: Any, what: str) -> list[Any]:
    """``value`` as a list."""
    if not isinstance(value, list):
        raise CheckpointError(f"{what}: expected a list, got {brief(value)}")
    return value


def as_int_array(value: Any, what: str) -> np.ndarray[Any, Any]:
    """``value`` as an int64 array (from any integer array)."""
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iu":
        raise CheckpointError(f"{what}: expected an int array, got {brief(value)}")
    return value.astype(np.int64)


def as_rows(value: Any, columns: int, count: int, what: str) -> list[list[int]]:
    """``value``, an int array, as ``count`` rows of ``columns`` ints."""
    array = as_int_array(value, what)
    if array.size != columns * count:
        raise CheckpointError(f"{what}: {array.size} numbers for {count} rows of {columns}")
    return array.reshape(count, columns).tolist()
