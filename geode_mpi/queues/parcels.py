"""A message as it waits in a queue (`Parcel`): its fields, its first take, its expiry's clocks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
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
    priority: int = 0  # higher is taken first
    expires: float = math.inf  # the `time.monotonic()` instant after which it is dropped


NEVER = math.inf  # a parcel's ``expires`` when it has no ttl
# A parcel flag of the queue's own, never on the wire (a header's flags and route byte take
# bits 0-15): put back untried (a handler that close() interrupted), so taken once already:
# its credit went back and its first take counted then, though its ``attempts`` are still 0.
TAKEN_BEFORE = 1 << 16


def first_take(parcel: Parcel) -> bool:
    """Whether taking ``parcel`` now is its first take: neither a retry nor put back untried."""
    return not parcel.attempts and not parcel.flags & TAKEN_BEFORE


def wall_clock(expires: float) -> float:
    """A parcel's ``expires`` (monotonic) as a `time.time()` instant (what a checkpoint keeps:
    the monotonic clock starts anew with each process)."""
    return expires if expires == NEVER else time.time() + (expires - time.monotonic())


def monotonic_clock(wall: float) -> float:
    """A `time.time()` instant (`wall_clock`'s) as a parcel's ``expires``."""
    return NEVER if wall == NEVER else time.monotonic() + (wall - time.time())


Match = Callable[[Parcel], bool]
Key = Callable[[Parcel], Any]
