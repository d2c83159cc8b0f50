"""A received message built from its state and its rest section, past its class's __setattr__."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geode_mpi.codec import pickling
from geode_mpi.codec.classes import SETS, state_methods
from geode_mpi.codec.wire_parts import SET_ATTRIBUTE, _slot_names, give_state
from geode_mpi.message import Message


def _built(
    cls: type[Message], state: dict[str, Any], rest: memoryview | None, frames: Sequence[Any]
) -> Message:
    """A received message of class ``cls``: its ``__dict__`` ``state``, then the headers and
    attributes of its rest section if it has one (its checksum checked).

    Raises:
        Exception: whatever the bytes or the class make unpickling raise.
    """
    message = cls.__new__(cls)
    if rest is None:  # (a class with state methods always sends one: `own_state._own_state`)
        give_state(message, state)
        return message
    slots, methods = _facts.get(cls) or _class_facts(cls)
    if methods:
        _set_state(message, state, pickling.loads(rest, frames), methods)
        return message
    give_state(message, state)
    slotted = rest_into(state, pickling.loads(rest, frames), slots)
    for key, value in slotted.items():  # (past the class's own __setattr__, as its state)
        SET_ATTRIBUTE(message, key, value)
    return message


# class -> (its slot names, `classes.state_methods` of it): what `_built` asks of a class
_facts: dict[type, tuple[tuple[str, ...], int]] = {}


def _class_facts(cls: type) -> tuple[tuple[str, ...], int]:
    found = (_slot_names(cls), state_methods(cls))
    if len(_facts) >= 4096:
        _facts.clear()
    _facts[cls] = found
    return found


def _set_state(message: Message, state: dict[str, Any], rest: Any, methods: int) -> None:
    """Give a received message of a class with its own ``__getstate__`` or ``__setstate__``
    what its sender's `own_state._own_state` sent (``rest``: headers, then data and the state),
    as unpickling would: its data and headers first, then the state exactly as
    ``__getstate__`` returned it, to its ``__setstate__`` (none for a None state) or set as
    pickle's default does (a dict of attributes, or a pair: attributes and slots); then the
    metadata the sender stamped (``state``: the data section's), directly.

    Raises:
        Exception: ``rest`` is not what such a class sends, or ``__setstate__`` raised.
    """
    if type(rest) is not tuple or len(rest) != 2 or type(rest[1]) is not tuple:
        raise TypeError(f"its rest section is a {type(rest).__name__}, not (headers, state)")
    headers, (data, got) = rest
    SET_ATTRIBUTE(message, "data", data)
    if headers:
        if type(headers) is not dict:
            raise TypeError(f"its headers are a {type(headers).__name__}, not a dict")
        SET_ATTRIBUTE(message, "_headers", headers)
    if got is not None:  # (pickle calls no __setstate__ for a None state)
        if methods & SETS:
            message.__setstate__(got)  # type: ignore[attr-defined]
        else:
            attributes, slots = got if type(got) is tuple else (got, None)
            for key, value in (attributes or {}).items():
                SET_ATTRIBUTE(message, key, value)
            for key, value in (slots or {}).items():
                SET_ATTRIBUTE(message, key, value)
    for key, value in state.items():
        if key != "data":
            SET_ATTRIBUTE(message, key, value)


def rest_into(state: dict[str, Any], rest: Any, slots: Sequence[str]) -> dict[str, Any]:
    """Put what a rest section unpickled to (``rest``: its headers and attributes) into a
    received message's ``__dict__`` ``state``; return the attributes named in ``slots`` (the
    class's ``__slots__``) instead, for the caller to set.

    Raises:
        Exception: ``rest`` is not (headers, attributes), a dict and a dict (or None).
    """
    headers, extras = rest
    slotted: dict[str, Any] = {}
    if extras:
        for key, value in extras.items():
            (slotted if key in slots else state)[key] = value
    if headers:
        if type(headers) is not dict:
            raise TypeError(f"its headers are a {type(headers).__name__}, not a dict")
        state["_headers"] = headers
    return slotted
