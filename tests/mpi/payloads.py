"""Deterministic payloads that every rank can rebuild to check what it received."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from geode_mpi import Message


class Point(Message):
    """A user message type with its own attributes."""

    def __init__(self, data: Any, label: str, weight: float = 1.0) -> None:
        super().__init__(data)
        self.label = label
        self.weight = weight


@dataclass(frozen=True)
class Reading(Message):
    """A frozen dataclass: its ``__setattr__`` refuses every assignment, ``__dict__`` too."""

    step: int
    value: Any = None


@dataclass(frozen=True, slots=True)
class SlottedReading(Message):
    """A frozen dataclass with slots."""

    step: int
    value: Any = None


class Locked(Message):
    """Holds a lock and a cache derived from its data: its ``__getstate__`` drops both, its
    ``__setstate__`` makes them again (and counts its calls in ``restored``)."""

    def __init__(self, data: Any, label: str) -> None:
        super().__init__(data)
        self.label = label
        self.lock = threading.Lock()
        self.total = float(np.sum(data))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["lock"], state["total"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()
        self.total = float(np.sum(self.data))
        self.restored = self.__dict__.get("restored", 0) + 1


class Unlocked(Message):
    """A ``__getstate__`` alone, dropping a lock: the receiver's copy has no lock."""

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        self.lock = threading.Lock()
        self.step = 3

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}


class Packed(Message):
    """A state that is not a dict: a tuple its ``__setstate__`` unpacks."""

    def __init__(self, data: Any, scale: float) -> None:
        super().__init__(data)
        self.scale = scale

    def __getstate__(self) -> tuple[Any, float]:
        return (self.data, self.scale)

    def __setstate__(self, state: tuple[Any, float]) -> None:
        self.data, self.scale = state
        self.unpacked = True


class SlotSet(Message):
    """A slot, and a ``__setstate__`` written for pickle's default state of such a class: a
    pair, the ``__dict__`` then the slots."""

    __slots__ = ("a",)

    def __init__(self, data: Any, a: Any) -> None:
        super().__init__(data)
        self.a = a

    def __setstate__(self, state: tuple[dict[str, Any] | None, dict[str, Any]]) -> None:
        attributes, slots = state
        self.__dict__.update(attributes or {})
        for key, value in slots.items():
            setattr(self, key, value)
        self.restored = True


class Stateless(Message):
    """A ``__getstate__`` that returns None: pickle sets no state and calls no
    ``__setstate__`` (which would fail here)."""

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        self.lock = threading.Lock()

    def __getstate__(self) -> None:
        return None

    def __setstate__(self, state: Any) -> None:
        raise AssertionError(f"__setstate__ called with {state!r}")


class TagSlot:
    """A mixin with ``__slots__``, after Message in its subclass's MRO."""

    __slots__ = ("tag",)


class Sample(Message, TagSlot):
    """A subclass with a slotted mixin: not Message's layout, never built inline (it used to
    be, and its receive raised a bare TypeError, the message lost and the pair's next held)."""

    def __init__(self, data: Any = None, tag: str = "") -> None:
        super().__init__(data)
        self.tag = tag


def array_cases() -> list[tuple[str, np.ndarray[Any, Any]]]:
    """Arrays of many dtypes, shapes, orders and byte orders (at least 10 combinations)."""
    rng = np.random.default_rng(1234)
    base = rng.standard_normal((40, 30))
    big = rng.integers(0, 2**31, size=300_000, dtype=np.int64)  # 2.4 MB, out of band
    return [
        ("float64 2-D C", base.copy()),
        ("float32 1-D", base[0].astype(np.float32)),
        ("int8 3-D", rng.integers(-128, 127, (4, 5, 6), dtype=np.int8)),
        ("uint16 big-endian", rng.integers(0, 2**16, 50).astype(">u2")),
        ("int64 big out-of-band", big),
        ("bool", rng.random((7, 3)) > 0.5),
        ("complex128", base[:5] + 1j * base[5:10]),
        ("complex64 big-endian", (base[:3] + 2j).astype(">c8")),
        ("0-d float64", np.array(3.25)),
        ("empty (0, 3)", np.empty((0, 3), np.float64)),
        ("Fortran-ordered", np.asfortranarray(base)),
        ("non-contiguous slice", base[::3, ::2]),
        ("negative strides", base[::-1, ::-2]),
        ("non-contiguous big", np.tile(base, (40, 10))[::2, ::3]),
        ("float16 transposed view", base.astype(np.float16).T),
        ("structured", np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", ">f8")])),
        ("datetime64", np.arange(5).astype("datetime64[s]")),
        ("unicode", np.array(["alpha", "beta", "gamma"])),
    ]


# A record dtype made with ``align=True`` (a record inside it too), and the same layout without
# the aligned-struct flag, which numpy holds equal to it, with one hash.
ALIGNED = np.dtype([("a", "u1"), ("b", "<f8"), ("c", [("x", "u1"), ("y", "<i4")])], align=True)
PACKED = np.dtype(
    {
        "names": ["a", "b", "c"],
        "formats": [
            "u1",
            "<f8",
            {"names": ["x", "y"], "formats": ["u1", "<i4"], "offsets": [0, 4]},
        ],
        "offsets": [0, 8, 16],
        "itemsize": 24,
    }
)
