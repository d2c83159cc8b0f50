"""Pattern subscriptions: a glob or a prefix over topic names (`Geode.subscribe`), matching
the topics that exist when it is made and those created later."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from geode_mpi.core.runtime import Runtime
    from geode_mpi.core.topics import Topic

GLOB = frozenset("*?[")  # the characters that make a receive's topic= a pattern


# A NamedTuple, not a dataclass: `dataclasses` loads `inspect` (tests/unit/test_lazy_imports.py).
class Pattern(NamedTuple):
    """A set of topic names: a glob (`fnmatch`, case-sensitive) or a prefix (ZeroMQ's)."""

    text: str
    prefix: bool = False

    @classmethod
    def of(cls, pattern: object, prefix: object) -> Pattern:
        """The pattern of ``subscribe(nodes, pattern)`` or ``subscribe(nodes, prefix=...)``.

        Raises:
            ValueError: neither or both given, or not a non-empty str.
        """
        if (pattern is None) == (prefix is None):
            raise ValueError(
                f"give a pattern or a prefix, not both nor neither: got pattern={pattern!r}, "
                f"prefix={prefix!r}"
            )
        text = pattern if prefix is None else prefix
        kind = "pattern" if prefix is None else "prefix"
        if not isinstance(text, str) or not text:
            raise ValueError(f"a {kind} must be a non-empty str, got {text!r} (every topic: '*')")
        return cls(text, prefix is not None)

    def matches(self, name: str) -> bool:
        return name.startswith(self.text) if self.prefix else fnmatchcase(name, self.text)

    def __str__(self) -> str:
        return f"{'prefix' if self.prefix else 'pattern'} {self.text!r}"


class Subscription:
    """A pattern subscription: its nodes receive every topic whose name matches, the topics
    that existed when they subscribed and those created later.

    Made by `Geode.subscribe` (one per pattern: subscribing more nodes to the same pattern
    returns the same object); pass it to ``receive(topic=...)`` to take only the messages of
    the topics it matches.
    """

    def __init__(self, geode: Runtime, pattern: Pattern, topics: dict[str, Topic]) -> None:
        self._geode = geode
        self._pattern = pattern
        self._topics = topics  # every topic of the job, by name (the Geode's own dict)
        self.members: list[int] = []  # node indices, in the order they subscribed

    @property
    def pattern(self) -> str:
        """The glob, or the prefix (see ``prefix``)."""
        return self._pattern.text

    @property
    def prefix(self) -> bool:
        """True for a prefix subscription, False for a glob."""
        return self._pattern.prefix

    @property
    def nodes(self) -> tuple[str, ...]:
        """The subscribed nodes (none once all of them unsubscribed)."""
        return tuple(self._geode.names[index] for index in self.members)

    @property
    def topics(self) -> tuple[str, ...]:
        """The names of the job's topics it matches now, in creation order."""
        return tuple(name for name in self._topics if self._pattern.matches(name))

    def __repr__(self) -> str:
        return f"<Subscription {self._pattern} nodes={list(self.nodes)} topics={list(self.topics)}>"
