"""Bundles: several messages of one source queued as one entry, taken one at a time."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geode_mpi.queues.inbox import Parcel


class Bundle:
    """Messages ``at`` to ``end - 1`` of something one source sent at once (a run of messages),
    in order: the frames of the one queue entry that stands for them all.

    A plain take (no filter, no order key, nothing held back or ranked) takes the next one
    (`next_parcel`, or the delivery layer's own take that advances ``at``); anything else
    first replaces the entry by one parcel per message left (`parcels`), so that filters,
    retries, priorities and checkpoints see single messages, as if they had come one by one.
    """

    __slots__ = ("at", "end")

    def __init__(self, at: int, end: int) -> None:
        self.at: int = at
        self.end: int = end

    def parcel(self, at: int) -> Parcel:
        """The queue's parcel of message ``at`` alone (what `Inbox.pop` hands out)."""
        raise NotImplementedError

    def parcels(self) -> list[Parcel]:
        """One parcel per message left, in order."""
        return [self.parcel(at) for at in range(self.at, self.end)]


def unbundle(items: deque[Parcel]) -> None:
    """Replace, in place and in order, each bundle entry of ``items`` by its parcels."""
    expanded: list[Parcel] = []
    for parcel in items:
        frames = parcel.frames
        if isinstance(frames, Bundle):
            expanded.extend(frames.parcels())
        else:
            expanded.append(parcel)
    items.clear()  # (in place: the engine and the receive path hold this deque)
    items.extend(expanded)
