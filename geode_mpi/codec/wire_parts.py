"""What encoding, peeking and decoding share (wire.py, peeking.py, decoding.py): a message's Stamp
and Peek, the class names read from meta and the wire names and templates of classes sent (all
remembered), a class's slot names, a received message's __dict__, and the first header or
attribute that does not pickle."""

from __future__ import annotations

import copyreg
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from geode_mpi.codec import header, pickling
from geode_mpi.codec.arrays import alike
from geode_mpi.codec.classes import short_name
from geode_mpi.errors import DecodeError

if TYPE_CHECKING:  # numpy is imported by whoever sends arrays, or to decode one (arrays.py)
    import numpy as np

HEAD_SIZE = header.SIZE


class Stamp(NamedTuple):
    """The metadata the sender assigns: who, to whom, which one and when."""

    id: int
    seq: int
    timestamp: float
    source: int
    dest: int


class Peek(NamedTuple):
    """What can be read from meta without decoding the payload."""

    stamp: Stamp
    class_name: str
    kind: int
    flags: int
    body: int  # offset of the data section (after the class name and the route section)
    n_data: int  # frames that belong to the data (the rest belong to headers and attributes)
    data_len: int

    @property
    def type(self) -> str:
        return short_name(self.class_name)


_names: dict[bytes, str] = {}
_NAMES_MAX = 4096


def _new_name(meta: bytes | memoryview, end: int, body: int, mid: int, src: int) -> str:
    """Read a class name not seen before, ending at ``end`` (and remember it)."""
    raw = bytes(meta[HEAD_SIZE:end])
    try:
        if body + header.data_length(meta) > len(meta):
            raise ValueError(
                f"its class name, route and data section need {body} + "
                f"{header.data_length(meta)} bytes, the meta has {len(meta)}"
            )
        name = raw.decode()
        module, colon, qualname = name.partition(":")
        if not module or not colon or not qualname or module.startswith("."):
            raise ValueError(f"class name {name!r} is not 'module:qualname'")
    except ValueError as exc:  # (UnicodeDecodeError is one)
        raise DecodeError(
            f"cannot read the class name of message {mid} from node index {src}: {exc}"
        ) from exc
    if len(_names) >= _NAMES_MAX:
        _names.clear()
    _names[raw] = name
    return name


_slots: dict[type, tuple[str, ...]] = {}


def _slot_names(cls: type) -> tuple[str, ...]:
    """Attributes a Message subclass keeps in __slots__ (they are not in __dict__)."""
    found = _slots.get(cls)
    if found is None:
        found = _slots[cls] = tuple(copyreg._slotnames(cls))  # type: ignore[attr-defined]
    return found


def _state(
    data: Any,
    mid: int,
    seq: int,
    ts: float,
    src: int,
    dst: int,
    reply_to: int,
    names: Sequence[str],
) -> dict[str, Any]:
    """A received message's __dict__: its data and the metadata the sender stamped."""
    count = len(names)
    state = {
        "data": data,
        "id": mid,
        "seq": seq,
        "timestamp": ts,
        "source": names[src] if src < count else str(src),
        "dest": names[dst] if dst < count else str(dst),
    }
    if reply_to >= 0:  # (not NO_REPLY, nor a request's REQUEST)
        state["reply_to"] = reply_to
    return state


SET_ATTRIBUTE = object.__setattr__


def give_state(message: object, state: dict[str, Any]) -> None:
    """Make ``state`` a received message's ``__dict__`` past its class's own ``__setattr__``
    if it has one (a frozen dataclass's refuses every assignment), as unpickling would."""
    if type(message).__setattr__ is SET_ATTRIBUTE:
        message.__dict__ = state  # (the same, and cheaper)
    else:
        SET_ATTRIBUTE(message, "__dict__", state)


# class -> (wire name, has __slots__ or state methods, `classes.state_methods` of it)
_wire_names: dict[type, tuple[bytes, bool, int]] = {}
_Template: TypeAlias = "tuple[bytes, int, int]"
# (class, dtype, shape) -> (name + descriptor + padding, name length, data-section length);
# never of a structured dtype, which an equal dtype (one hash) may not share (see
# `arrays._exact`): those are in `_exact_templates`, with the dtype they were made for.
_templates: dict[tuple[type, np.dtype[Any], tuple[int, ...]], _Template] = {}
_exact_templates: dict[tuple[type, np.dtype[Any], tuple[int, ...]], tuple[Any, _Template]] = {}
_TEMPLATES_MAX = 1024


def _remember_template(
    cls: type, data: np.ndarray[Any, Any], name: bytes, descriptor: bytes, section_len: int
) -> None:
    dtype = data.dtype
    key = (cls, dtype, data.shape)
    template = (name + descriptor, len(name), section_len)
    if dtype.names is None:
        if len(_templates) >= _TEMPLATES_MAX:
            _templates.clear()
        _templates[key] = template
    else:
        if len(_exact_templates) >= _TEMPLATES_MAX:
            _exact_templates.clear()
        _exact_templates[key] = (dtype, template)


def exact_template(cls: type, data: np.ndarray[Any, Any]) -> _Template | None:
    """The template of a small array of a structured dtype: one made for a dtype that is
    equal and travels alike (`arrays.alike`), else None."""
    dtype = data.dtype
    found = _exact_templates.get((cls, dtype, data.shape))
    if found is None or (found[0] is not dtype and not alike(found[0], dtype)):
        return None
    return found[1]


def _first_unpicklable(
    headers: dict[str, Any] | None, extras: dict[str, Any] | None
) -> tuple[str, object]:
    for label, mapping in (("header", headers), ("attribute", extras)):
        for key, value in (mapping or {}).items():
            try:
                pickling.dumps(value, [])
            except Exception:
                return f"{label} {key!r}", value
    return "headers", headers
