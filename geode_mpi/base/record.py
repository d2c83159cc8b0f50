"""Value classes with a dataclass's equality, repr and immutability, without `dataclasses`.

`import dataclasses` loads inspect, ast and dis (1.1 MB of every rank, and the methods it
generates more): issue 15 holds a job of Python objects within raw mpi4py's memory + 10 MB.
"""

from __future__ import annotations

from typing import Any


def field_values(record: Record) -> tuple[Any, ...]:
    """A record's fields' values, in order (a dataclass's ``astuple``, without deep copies)."""
    return tuple(getattr(record, name) for name in record.__match_args__)


def fill(record: Frozen, *values: Any) -> None:
    """Set a frozen record's fields, in ``__match_args__`` order (its ``__init__`` only)."""
    for name, value in zip(record.__match_args__, values, strict=True):
        object.__setattr__(record, name, value)


class Record:
    """Compared and shown by the fields named in ``__match_args__``, in that order, as a
    dataclass is (``__match_args__`` also lets ``case QueueConfig(None, "block")`` match), and
    unhashable while mutable. A subclass writes its own ``__init__``; without ``__slots__`` it
    keeps a ``__dict__``, as a dataclass does (and pickles alike)."""

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()  # a ClassVar (unsaid: hints resolve anywhere)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return field_values(self) == field_values(other)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__qualname__}({shown})"


class Frozen(Record):
    """A `Record` whose fields cannot change once ``__init__`` set them with `fill`, and
    hashable, as ``dataclass(frozen=True)`` is (which raises an AttributeError subclass)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(field_values(self))
