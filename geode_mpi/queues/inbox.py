"""A node's receive queue: FIFO per source, with filtered removal."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple


class Parcel(NamedTuple):
    """A message as it waits in a queue: still encoded, with what filters need to see."""

    source: int
    meta: memoryview
    frames: Sequence[Any]
    nbytes: int


Match = Callable[[Parcel], bool]


class Inbox:
    """Arrival-ordered queue of parcels for one node.

    Parcels from one source stay in the order they arrived, which is the order they were sent.
    """

    def __init__(self) -> None:
        self._items: deque[Parcel] = deque()
        self.peak = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Parcel]:
        return iter(self._items)

    def push(self, parcel: Parcel) -> None:
        """Append a parcel at the tail."""
        self._items.append(parcel)
        if len(self._items) > self.peak:
            self.peak = len(self._items)

    def pop(self, match: Match | None = None) -> Parcel | None:
        """Remove and return the oldest parcel that matches (any, when ``match`` is None)."""
        items = self._items
        if not items:
            return None
        if match is None:
            return items.popleft()
        for index, parcel in enumerate(items):
            if match(parcel):
                del items[index]
                return parcel
        return None
