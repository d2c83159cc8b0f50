"""The state of a message whose class has its own ``__getstate__`` or ``__setstate__``, taken as
pickle takes it (`encode`'s general path: it travels in the rest section)."""

from __future__ import annotations

from typing import Any

from geode_mpi.codec.classes import SETS
from geode_mpi.codec.wire_parts import _slot_names
from geode_mpi.errors import EncodeError
from geode_mpi.message import Message


def _own_state(message: Message, methods: int) -> tuple[Any, tuple[Any, Any]]:
    """(headers, (data, state)) of a message whose class has its own ``__getstate__`` or
    ``__setstate__`` (`classes.state_methods`): its headers and data, which always travel,
    and its state exactly as pickle takes it, what ``__getstate__`` returns (None: no state).

    Raises:
        EncodeError: ``__getstate__`` raised, or returned what the class cannot take back.
    """
    cls = type(message)
    getstate = getattr(message, "__getstate__", None)  # (object's, from Python 3.11)
    try:
        state = getstate() if getstate is not None else _default_state(message)
    except Exception as exc:
        raise EncodeError(f"{cls.__name__}.__getstate__()", cls, exc) from exc
    if not methods & SETS and not _settable(state):
        raise EncodeError(
            f"{cls.__name__}.__getstate__()",
            type(state),
            TypeError(
                f"it returned a {type(state).__name__}, which only a __setstate__ of the "
                "class can take back: return None, a dict of attributes or a (dict, slots "
                "dict) pair, or define __setstate__"
            ),
        )
    found = message.__dict__
    return found.get("_headers") or None, (found.get("data"), state)


def _default_state(message: Message) -> Any:
    """``object.__getstate__()`` of Python 3.11, for Python 3.10: the ``__dict__`` (None if
    empty), paired with a dict of the slots that are set if the class has any."""
    slots = {k: getattr(message, k) for k in _slot_names(type(message)) if hasattr(message, k)}
    attributes = message.__dict__ or None
    return (attributes, slots) if slots else attributes


def _settable(state: Any) -> bool:
    """Whether unpickling sets ``state`` without a ``__setstate__``: None, a dict, or a pair
    of dicts (or None), attributes and slots."""
    if type(state) is tuple and len(state) == 2:
        return all(part is None or isinstance(part, dict) for part in state)
    return state is None or isinstance(state, dict)
