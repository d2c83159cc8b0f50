"""What a geode_mpi error's pickle carries: its attributes, and the values that pickle for sure."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geode_mpi.errors import GeodeError


# The errors whose attributes `GeodeError.__reduce__` is trying (by id), in this thread: an
# attribute that refers back to its error is tried once, not once per path to it (and
# another thread pickling the same error at the same time is not taken for such a trial).
_TRYING = threading.local()


def _trying() -> set[int]:
    trying: set[int] | None = getattr(_TRYING, "ids", None)
    if trying is None:
        trying = _TRYING.ids = set()
    return trying


def _own_getstate(cls: type) -> bool:
    """Whether ``cls`` defines its own ``__getstate__`` (object's default on Python 3.11+)."""
    getstate = getattr(cls, "__getstate__", None)
    return getstate is not None and getstate is not getattr(object, "__getstate__", None)


def _attributes(error: GeodeError) -> dict[str, Any]:
    """``error``'s attributes: its ``__dict__`` and the values of its classes' ``__slots__``."""
    state = dict(error.__dict__)
    for cls in type(error).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and name not in state:
                with contextlib.suppress(AttributeError):  # (a slot never set)
                    state[name] = getattr(error, name)
    return state


def _plain(value: Any) -> bool:
    """Whether ``value`` pickles for sure: None, a text, a number, bytes, or an array of a
    dtype without objects."""
    if value is None or type(value) in (str, int, float, bool, bytes):
        return True
    dtype = getattr(value, "dtype", None)
    return type(value).__name__ == "ndarray" and dtype is not None and not dtype.hasobject
