"""A node's receive queue: FIFO per source, priorities, expiry, filters, retries, a capacity."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, islice
from operator import itemgetter
from typing import Any

from geode_mpi.queues.bundles import Bundle, take_next, unbundle
from geode_mpi.queues.parcels import NEVER as NEVER
from geode_mpi.queues.parcels import TAKEN_BEFORE as TAKEN_BEFORE
from geode_mpi.queues.parcels import Key as Key
from geode_mpi.queues.parcels import Match as Match
from geode_mpi.queues.parcels import Parcel as Parcel
from geode_mpi.queues.parcels import first_take as first_take
from geode_mpi.queues.parcels import monotonic_clock as monotonic_clock
from geode_mpi.queues.parcels import wall_clock as wall_clock

_PRIORITY = itemgetter(8)  # Parcel.priority, read in C by map() (see `Inbox._pop_ranked`)
_EXPIRES = itemgetter(9)  # Parcel.expires


class Inbox:
    """Arrival-ordered queue of parcels for one node.

    Parcels from one source come out in the order they were sent: a parcel put back for a retry
    goes before the later ones from its source, and while it waits out its back-off its source
    is held back (other sources are not).

    A parcel with a priority goes before every queued parcel of a lower one (the default is 0);
    within one priority the order above holds. A parcel past its ``expires`` is never taken: a
    take that meets it removes it and hands it to `on_expired`. Queues that never held such
    parcels take the oldest at once, with no scan.

    The parcels with a priority above 0 wait at the front, highest first (arrival order within
    each priority), so that a take is a ``popleft``: each goes in at the end of its
    priority's lane, found from the count of each priority queued (a sorted handful). One
    deque holds every parcel (the engine appends the plain ones to `waiting` itself; the
    runtime, asyncio and checkpoints read it), so the lanes are its segments, not deques of
    their own. Only negative priorities still make a take scan.

    One entry may stand for several messages of one source (a `Bundle`: a run received
    whole): a plain take takes its next message; any other take, a retry, a drop and
    iteration first expand it to one parcel per message (`len` counts its messages).

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
        self.held_back: dict[int, dict[int, float]] = {}
        # Parcels queued with a priority or an expiry (`push` counts them): while any is, a
        # take drops the expired and takes the highest priority.
        self.ranked = 0
        # Queued parcels by priority above 0 (they lead the queue, highest first), their sum,
        # and how many have a priority below 0 (those alone make a take scan).
        self._lanes: dict[int, int] = {}
        self._above = 0
        self._below = 0
        # No queued parcel expires before this (a lower bound: removals leave it low).
        self._soonest = NEVER
        # What takes an expired parcel (the delivery engine: counts it, dead-letters it).
        self.on_expired: Callable[[Parcel], None] | None = None
        # Sources whose parcels only their own match takes (an executor's task stream at its
        # worker nodes): source -> that match. Every other take skips them.
        self.private: dict[int, Match] = {}
        # Entries that stand for several messages (`Bundle`: a run), and how many messages
        # they hold beyond one each: the queue holds len(waiting) + extra messages.
        self.bundles = 0
        self.extra = 0

    def __len__(self) -> int:
        return len(self._items) + self.extra

    @property
    def in_order(self) -> bool:
        """Whether a plain take (no filter, no key) takes the queue's head: nothing queued
        with a priority or ttl, held back, or private to another filter. (A take once a
        message tests the three inline: a property call costs 69 ns against 28.)"""
        return not (self.ranked or self.held_back or self.private)

    @property
    def waiting(self) -> deque[Parcel]:
        """The entries in arrival order (read it, do not change it; a `Bundle` entry holds
        several messages): its truth value is the cheapest "is anything queued?" there is."""
        return self._items

    def __iter__(self) -> Iterator[Parcel]:
        """The parcels, one per message (bundles are expanded first)."""
        self.unbundle()
        return iter(self._items)

    def unbundle(self) -> None:
        """Replace each bundle entry by one parcel per message it still holds."""
        if self.bundles:
            unbundle(self._items)
            self.bundles = self.extra = 0

    def push(self, parcel: Parcel) -> Parcel | None:
        """Append a parcel at the tail; return the parcel dropped to make room, if any."""
        items = self._items
        if parcel.priority or parcel.expires != NEVER:
            self._place(parcel)
        else:
            items.append(parcel)
        dropped = None
        if self.drop_oldest and len(items) + self.extra > self.capacity:  # type: ignore[operator]
            dropped = self._drop_oldest()
        depth = len(items) + self.extra
        if depth > self.peak:
            self.peak = depth
        return dropped

    def _drop_oldest(self) -> Parcel | None:
        # The oldest of priority 0 or below first (after the lanes above 0), else of those.
        self.unbundle()
        above = self._above
        items = self._items
        private = self.private
        capacity = self.capacity or 0  # (set: drop_oldest needs one)
        if private and sum(parcel.source not in private for parcel in items) <= capacity:
            return None  # an executor's tasks (at most its prefetch) take no user's room
        for index, parcel in chain(enumerate(islice(items, above, None), above), enumerate(items)):
            if parcel.source in private:
                continue  # an executor's task: only the user's messages are dropped
            if parcel.seq not in self.held_back.get(parcel.source, ()):
                del self._items[index]
                self._unrank(parcel)
                return parcel
        for index, parcel in enumerate(items):
            if parcel.source not in private:
                del self._items[index]
                self._release(parcel)
                return parcel
        return None  # (unreachable: some parcel is the user's)

    def _place(self, parcel: Parcel) -> None:
        """Queue a parcel with a priority or an expiry: one above 0 at the end of its lane
        (after every queued parcel of its priority or a higher one), any other at the tail."""
        self._rank(parcel)
        priority = parcel.priority
        if priority > 0:
            lanes = self._lanes
            # (the count of its priority or a higher one includes it now)
            index = sum(count for lane, count in lanes.items() if lane >= priority) - 1
            self._items.insert(index, parcel)
        else:
            self._items.append(parcel)

    def _rank(self, parcel: Parcel) -> None:
        """Count a parcel with a priority or an expiry in."""
        self.ranked += 1
        if parcel.expires < self._soonest:
            self._soonest = parcel.expires
        priority = parcel.priority
        if priority > 0:
            self._lanes[priority] = self._lanes.get(priority, 0) + 1
            self._above += 1
        elif priority < 0:
            self._below += 1

    def _unrank(self, parcel: Parcel) -> None:
        priority = parcel.priority
        if priority or parcel.expires != NEVER:
            self.ranked -= 1
            if priority > 0:
                self._above -= 1
                left = self._lanes[priority] - 1
                if left:
                    self._lanes[priority] = left
                else:
                    del self._lanes[priority]
            elif priority < 0:
                self._below -= 1

    def extend(self, parcels: Sequence[Parcel]) -> None:
        """Queue parcels in order, placed and counted as `push` does, none dropped (a
        restore)."""
        for parcel in parcels:
            if parcel.priority or parcel.expires != NEVER:
                self._place(parcel)
            else:
                self._items.append(parcel)
        if len(self._items) > self.peak:
            self.peak = len(self._items)

    def _release(self, parcel: Parcel) -> None:
        self._unrank(parcel)
        waits = self.held_back.get(parcel.source)
        if waits is not None:
            waits.pop(parcel.seq, None)
            if not waits:
                del self.held_back[parcel.source]

    def pop(self, match: Match | None = None, key: Key | None = None) -> Parcel | None:
        """Remove and return the oldest deliverable parcel that matches (any: ``match`` None).

        With ``key``, the deliverable matching parcel with the smallest key instead (for
        example the earliest timestamp); ties go to the oldest. A higher priority goes first
        either way.
        """
        items = self._items
        if not items:
            return None
        if self.bundles:
            if match is key is None and not (self.ranked or self.held_back or self.private):
                head = items[0].frames  # (the plain take: a bundle at the head gives its next)
                if isinstance(head, Bundle):
                    return head.parcel(take_next(self, head))
                return items.popleft()
            self.unbundle()
        if self.private:
            match = self._public(match)
        if not self.held_back and key is None:
            if self.ranked:
                if match is None:
                    return self._pop_ranked()
            elif match is None:
                return items.popleft()
            else:
                for index, parcel in enumerate(items):
                    if match(parcel):
                        del items[index]
                        return parcel
                return None
        return self._pop_slow(match, key)

    def _public(self, match: Match | None) -> Match:
        """``match``, skipping the private sources' parcels unless it is one's own match."""
        private = self.private
        if match is None:
            return lambda parcel: parcel.source not in private
        if any(match is own for own in private.values()):
            return match
        wanted = match
        return lambda parcel: parcel.source not in private and wanted(parcel)

    def _pop_ranked(self) -> Parcel | None:
        """`pop` of the highest priority's oldest parcel, with no filter, no key and nothing
        held back: the first, when a priority above 0 leads the queue or none is below 0;
        else (negative priorities) C-speed passes over the queue (map, max, index)."""
        items = self._items
        if self._soonest <= time.monotonic():
            self.purge()
            if not items:
                return None
        if self._above or not self._below:
            parcel = items.popleft()
        else:
            priorities = list(map(_PRIORITY, items))
            index = priorities.index(max(priorities))
            parcel = items[index]
            del items[index]
        self._unrank(parcel)
        return parcel

    def _pop_slow(self, match: Match | None, key: Key | None) -> Parcel | None:
        """`pop` with an order key, held-back retries, or parcels with a priority or an
        expiry: one scan, which also removes the expired ones (handed to `on_expired` once the
        queue is consistent)."""
        first = key is None and not self.ranked  # the first deliverable match wins
        now = time.monotonic()
        held = self.held_back
        blocked: set[tuple[int, int]] = set()  # (source, priority): FIFO holds within each
        expired: list[int] = []
        best = best_priority = -1
        best_key: Any = None
        for index, parcel in enumerate(self._items):
            if parcel.expires <= now:
                expired.append(index)
                continue
            lane = (parcel.source, parcel.priority)
            if lane in blocked:
                continue
            waits = held.get(parcel.source)
            retried = waits is not None and parcel.seq in waits
            if retried and waits[parcel.seq] > now:  # type: ignore[index]
                blocked.add(lane)  # it waits out a back-off; its lane's later ones too
                continue
            if match is not None and not match(parcel):
                if retried:
                    blocked.add(lane)  # a retried parcel must go before the later ones
                continue
            # Higher priority first; then the smallest key; ties go to the oldest.
            if first:
                best = index
                break
            priority = parcel.priority
            if best < 0 or priority > best_priority:
                best, best_priority = index, priority
                if key is not None:
                    best_key = key(parcel)
            elif key is not None and priority == best_priority:
                value = key(parcel)
                if value < best_key:
                    best, best_key = index, value
            if retried:
                blocked.add(lane)
        items = self._items
        taken: Parcel | None = None
        if best >= 0:
            taken = items[best]
            del items[best]
            self._release(taken)
        if expired:
            self._expire([index - (best >= 0 and index > best) for index in expired])
        return taken

    def _expire(self, indices: list[int]) -> None:
        """Remove the parcels at ``indices`` (ascending), then hand each to `on_expired`."""
        items = self._items
        gone = [items[index] for index in indices]
        for index in reversed(indices):
            del items[index]  # (in place: the engine and the receive path hold this deque)
        for parcel in gone:
            self._release(parcel)
        if self.on_expired is not None:
            for parcel in gone:
                self.on_expired(parcel)

    def purge(self) -> int:
        """Remove the expired parcels now (each to `on_expired`); how many there were."""
        now = time.monotonic()
        if self._soonest > now:
            return 0
        expired = [
            index for index, expires in enumerate(map(_EXPIRES, self._items)) if expires <= now
        ]
        if expired:
            self._expire(expired)
        self._soonest = min(map(_EXPIRES, self._items), default=NEVER)
        return len(expired)

    def put_back(self, parcel: Parcel, not_before: float) -> None:
        """Queue ``parcel`` again for a retry, ahead of its source's later parcels.

        Args:
            parcel: a parcel taken earlier (its ``attempts`` already counted).
            not_before: the `time.monotonic()` instant before which it is not delivered; until
                then no parcel of its source is.
        """
        self.unbundle()  # (a bundle's parcel has its first seq, not its next one's)
        items = self._items
        # Within its priority's lane when above 0, else after every such lane.
        priority = parcel.priority
        lanes = self._lanes
        start = sum(count for lane, count in lanes.items() if lane > priority)
        end = start + lanes.get(priority, 0) if priority > 0 else len(items)
        after = start - 1  # the last parcel of its source that it must follow
        for index, other in enumerate(islice(items, start, end), start):
            if other.source == parcel.source:
                if other.seq > parcel.seq:
                    items.insert(index, parcel)
                    break
                after = index
        else:
            items.insert(after + 1, parcel)  # first in its lane when its source has none there
        if priority or parcel.expires != NEVER:
            self._rank(parcel)
        self.held_back.setdefault(parcel.source, {})[parcel.seq] = not_before
        if len(items) > self.peak:
            self.peak = len(items)

    def next_ready(self) -> float | None:
        """Seconds until the first held-back parcel may go (0 if one may now), or None."""
        if not self.held_back:
            return None
        soonest = min(min(waits.values()) for waits in self.held_back.values())
        return max(0.0, soonest - time.monotonic())
