"""Bundles: several messages of one source queued as one entry, taken one or several at a time."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geode_mpi.queues.inbox import Inbox
    from geode_mpi.queues.parcels import Parcel


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


def add_bundle(inbox: Inbox, parcel: Parcel) -> None:
    """Queue ``parcel``, whose frames are a `Bundle` (no priority, no expiry), at the tail of
    ``inbox``, counted as the messages it holds."""
    bundle: Bundle = parcel.frames  # type: ignore[assignment]
    inbox.waiting.append(parcel)
    inbox.bundles += 1
    inbox.extra += bundle.end - bundle.at - 1
    if len(inbox) > inbox.peak:
        inbox.peak = len(inbox)


def take_next(inbox: Inbox, bundle: Bundle) -> int:
    """Advance ``bundle``, the frames of ``inbox``'s first entry, past its next message and
    return that message's index, if a plain `Inbox.pop` would take it now (nothing held back
    for a retry, nothing with a priority or a ttl, no private source); else -1."""
    items = inbox.waiting
    head: Any = items[0].frames
    if inbox.ranked or inbox.held_back or inbox.private or head is not bundle:
        return -1
    at: int = bundle.at
    bundle.at = at + 1
    if at + 1 < bundle.end:
        inbox.extra -= 1
    else:
        items.popleft()
        inbox.bundles -= 1
    return at


def take_many(inbox: Inbox, bundle: Bundle, most: int) -> int:
    """`take_next` for up to ``most`` messages at once: advance ``bundle`` past them and
    return the index of the first (they are ``at`` to the new ``bundle.at``); -1 with
    nothing done if a plain `Inbox.pop` would not take them now."""
    items = inbox.waiting
    head: Any = items[0].frames
    if inbox.ranked or inbox.held_back or inbox.private or head is not bundle:
        return -1
    at: int = bundle.at
    end = bundle.end
    stop = at + most if at + most < end else end
    bundle.at = stop
    if stop < end:
        inbox.extra -= stop - at
    else:
        inbox.extra -= stop - at - 1
        items.popleft()
        inbox.bundles -= 1
    return at
