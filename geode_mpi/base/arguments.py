"""Arguments checked: a timeout, a True/False flag, a whole number (an int or a numpy integer)."""

from __future__ import annotations

import numbers
import operator


def check_timeout(timeout: float | None, argument: str = "timeout") -> float | None:
    """Validate a timeout argument: None (wait forever) or a number >= 0.

    Raises:
        ValueError: the timeout is negative or not a number.
    """
    if timeout is None:
        return None
    if timeout.__class__ is not float and timeout.__class__ is not int:
        # numpy scalars (np.float32(1), np.int64(2)) are seconds too; a bool is not
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
            raise TypeError(f"{argument} must be a number of seconds or None, got {timeout!r}")
        timeout = (
            operator.index(timeout) if isinstance(timeout, numbers.Integral) else float(timeout)
        )
    if timeout != timeout or timeout < 0:
        raise ValueError(f"{argument} must be >= 0, got {timeout!r}")
    try:
        return float(timeout)
    except OverflowError:  # an int beyond a float's range
        digits = str(timeout)
        raise ValueError(
            f"{argument} must be a number of seconds a float can hold (float('inf') waits "
            f"for ever), got an int of {len(digits)} digits ({digits[:12]}...)"
        ) from None


def check_flag(value: object, argument: str) -> bool:
    """A True/False argument checked: a bool (or a numpy bool), never a truthy stand-in
    ("no" is not False).

    Raises:
        TypeError: ``value`` is not a bool.
    """
    if value is True or value is False:
        return value
    if value.__class__.__module__ == "numpy" and value.__class__.__name__ in ("bool", "bool_"):
        return bool(value)
    raise TypeError(f"{argument} must be True or False, got {value!r}")


def whole(value: object) -> int | None:
    """``value`` as an int if it is an int or a numpy integer (not a bool), else None."""
    if value.__class__ is int:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return operator.index(value)
