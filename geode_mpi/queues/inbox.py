"""A node's receive queue: FIFO per source, filtered removal, retries held back, a capacity."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple


class Parcel(NamedTuple):
    """A message as it waits in a queue: still encoded, with what filters need to see."""

    source: int  # sending node index
    seq: int  # its number on the (source, dest) pair
    flags: int  # the codec's delivery flags
    reply_to: int  # the id it answers, or -1
    meta: memoryview
    frames: Sequence[Any]
    nbytes: int
    attempts: int  # deliveries that failed so far


Match = Callable[[Parcel], bool]
Key = Callable[[Parcel], Any]


class Inbox:
    """Arrival-ordered queue of parcels for one node.

    Parcels from one source come out in the order they were sent: a parcel put back for a retry
    goes before the later ones from its source, and while it waits out its back-off its source
    is held back (other sources are not).

    Args:
        capacity: with ``drop_oldest``, the most parcels kept (None: no limit).
        drop_oldest: when full, `push` drops the oldest parcel to make room.
    """

    def __init__(self, capacity: int | None = None, drop_oldest: bool = False) -> None:
        self._items: deque[Parcel] = deque()
        self.capacity = capacity
        self.drop_oldest = drop_oldest and capacity is not None
        self.peak = 0
        # source -> {seq: when that parcel, put back for a retry, may be delivered again}
        self._held_back: dict[int, dict[int, float]] = {}

    def __len__(self) -> int:
        return len(self._items)

    @property
    def waiting(self) -> deque[Parcel]:
        """The parcels in arrival order (read it, do not change it): its truth value is the
        cheapest "is anything queued?" there is."""
        return self._items

    def __iter__(self) -> Iterator[Parcel]:
        return iter(self._items)

    def push(self, parcel: Parcel) -> Parcel | None:
        """Append a parcel at the tail; return the parcel dropped to make room, if any."""
        items = self._items
        items.append(parcel)
        dropped = None
        if self.drop_oldest and len(items) > self.capacity:  # type: ignore[operator]
            dropped = self._drop_oldest()
        if len(items) > self.peak:
            self.peak = len(items)
        return dropped

    def _drop_oldest(self) -> Parcel:
        for index, parcel in enumerate(self._items):
            if parcel.seq not in self._held_back.get(parcel.source, ()):
                del self._items[index]
                return parcel
        oldest = self._items.popleft()
        self._release(oldest)
        return oldest

    def _release(self, parcel: Parcel) -> None:
        waits = self._held_back.get(parcel.source)
        if waits is not None:
            waits.pop(parcel.seq, None)
            if not waits:
                del self._held_back[parcel.source]

    def pop(self, match: Match | None = None, key: Key | None = None) -> Parcel | None:
        """Remove and return the oldest deliverable parcel that matches (any: ``match`` None).

        With ``key``, the deliverable matching parcel with the smallest key instead (for
        example the earliest timestamp); ties go to the oldest.
        """
        items = self._items
        if not items:
            return None
        if not self._held_back and key is None:
            if match is None:
                return items.popleft()
            for index, parcel in enumerate(items):
                if match(parcel):
                    del items[index]
                    return parcel
            return None
        return self._pop_slow(match, key)

    def _pop_slow(self, match: Match | None, key: Key | None) -> Parcel | None:
        now = time.monotonic()
        held = self._held_back
        blocked: set[int] = set()
        best = -1
        best_key: Any = None
        for index, parcel in enumerate(self._items):
            source = parcel.source
            if source in blocked:
                continue
            waits = held.get(source)
            retried = waits is not None and parcel.seq in waits
            if retried and waits[parcel.seq] > now:  # type: ignore[index]
                blocked.add(source)  # it waits out a back-off; its source's later ones too
                continue
            if match is not None and not match(parcel):
                if retried:
                    blocked.add(source)  # a retried parcel must go before the later ones
                continue
            if key is None:
                best = index
                break
            value = key(parcel)
            if best < 0 or value < best_key:
                best, best_key = index, value
            if retried:
                blocked.add(source)
        if best < 0:
            return None
        parcel = self._items[best]
        del self._items[best]
        self._release(parcel)
        return parcel

    def put_back(self, parcel: Parcel, not_before: float) -> None:
        """Queue ``parcel`` again for a retry, ahead of its source's later parcels.

        Args:
            parcel: a parcel taken earlier (its ``attempts`` already counted).
            not_before: the `time.monotonic()` instant before which it is not delivered; until
                then no parcel of its source is.
        """
        items = self._items
        after = -1  # the last parcel of its source that it must follow
        for index, other in enumerate(items):
            if other.source == parcel.source:
                if other.seq > parcel.seq:
                    items.insert(index, parcel)
                    break
                after = index
        else:
            items.insert(after + 1, parcel)  # at the front when its source has none queued
        self._held_back.setdefault(parcel.source, {})[parcel.seq] = not_before
        if len(items) > self.peak:
            self.peak = len(items)

    def next_ready(self) -> float | None:
        """Seconds until the first held-back parcel may go (0 if one may now), or None."""
        if not self._held_back:
            return None
        soonest = min(min(waits.values()) for waits in self._held_back.values())
        return max(0.0, soonest - time.monotonic())
