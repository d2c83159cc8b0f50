"""What a geode_mpi error's pickle carries: its attributes, each kept if it pickles (else None)."""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Callable
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


def _picklable(state: dict[str, Any], reduce: Callable[..., Any]) -> dict[str, Any]:
    """``state`` with None for each value that cannot be pickled (each tried once: texts,
    numbers and arrays of numbers are taken as they are, not pickled twice). A geode_mpi
    error held as a value, pickled by ``reduce`` (`GeodeError.__reduce__`), is tried by its
    class and text only: its own attributes are filtered when it is pickled (trying it whole
    tried a chain of errors holding errors again at each link: twice the time per link)."""
    kept = {}
    for name, value in state.items():
        if not _plain(value):
            try:
                pickle.dumps((type(value), value.args) if _filters_itself(value, reduce) else value)
            except Exception:  # (whatever a value's own __reduce__ raises)
                value = None
        kept[name] = value
    return kept


def _filters_itself(value: Any, reduce: Callable[..., Any]) -> bool:
    """Whether ``value`` is a geode_mpi error that pickles by ``reduce`` (`GeodeError`'s
    ``__reduce__``, not its own nor its own ``__getstate__``): its unpicklable attributes
    arrive as None, so only its class and text need trying."""
    cls: Any = type(value)
    return cls.__reduce__ is reduce and not _own_getstate(cls)
