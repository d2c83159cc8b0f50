"""How long this rank has been stuck, counted over every Geode open in the process.

`Stillness` is the rule that the hang watchdog (--hang-timeout) and the notice of a long wait
share; `OpenGeodes` holds every open Geode's part in one of them: a message of any open Geode
that moves is progress, the waits' hook stays installed while any is open, and what a rank
holds is told for each (`states`). One Geode per watch would have made the last one made the
only one watched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, Protocol, TypeVar

CHECK_EVERY = 0.05  # seconds between two looks at this rank's activity
# A rank whose waits paused last this long ago was outside geode_mpi meanwhile (computing):
# its time waiting starts over.
OUTSIDE_GAP = 1.5


class Stillness:
    """How long this rank has been stuck: since the later of two instants, the last time
    anything it counts moved (``activity`` changed), and the time it entered geode_mpi's waits
    after being outside them (computing) for more than OUTSIDE_GAP seconds.

    Args:
        activity: a value (compared with ==) that changes whenever a message of this rank
            moves.
    """

    def __init__(self, activity: Callable[[], object]) -> None:
        now = time.monotonic()
        self.activity = activity
        self.next_look = 0.0
        self.last_pause = now  # the last sleeping pause of a wait
        self.waiting_since = now  # when this rank last came back into geode_mpi's waits
        self.last_activity = now
        self.fingerprint = activity()

    def look(self, now: float) -> None:
        """Every CHECK_EVERY: note activity."""
        if now < self.next_look:
            return
        self.next_look = now + CHECK_EVERY
        fingerprint = self.activity()
        if fingerprint != self.fingerprint:
            self.fingerprint = fingerprint
            self.last_activity = now

    def stuck(self, now: float) -> float:
        """Seconds stuck at ``now``."""
        return now - max(self.last_activity, self.waiting_since)

    def paused(self, now: float) -> float:
        """A sleeping pause of a wait at ``now``: the seconds stuck."""
        if now - self.last_pause > OUTSIDE_GAP:
            self.waiting_since = now  # it was computing meanwhile: that is progress
        self.last_pause = now
        self.look(now)
        return self.stuck(now)


class Part(Protocol):
    """One open Geode's part in a watch: what its rank holds, and a count of its moves."""

    @property
    def describe(self) -> Callable[[], list[str]]: ...

    @property
    def activity(self) -> Callable[[], object]: ...


P = TypeVar("P", bound=Part)


class OpenGeodes(Generic[P]):
    """Every open Geode's part in one watch of the process, and its `Stillness` over them all.

    `add` when a Geode is made, `remove` when it closes; the subclass's `hook` puts the watch
    in the waits' hooks (at every add), `unhook` takes it off once no Geode is open.
    """

    def __init__(self) -> None:
        self.members: tuple[P, ...] = ()  # replaced whole: read without the lock
        self.changing = threading.Lock()
        self.still = Stillness(self.activity)

    def activity(self) -> object:
        """Every open Geode's activity (changes whenever a message of any of them moves)."""
        return tuple(member.activity() for member in self.members)

    def add(self, member: P) -> None:
        with self.changing:
            self.members = (*self.members, member)
            self.still = Stillness(self.activity)  # (a Geode made: that is progress)
            self.hook()

    def remove(self, member: P) -> None:
        with self.changing:
            self.members = tuple(other for other in self.members if other is not member)
            if not self.members:
                self.unhook()

    def hook(self) -> None:
        """Be called from the waits (a Geode is open)."""
        raise NotImplementedError

    def unhook(self) -> None:
        """Stop being called (no Geode is open)."""
        raise NotImplementedError


class Section(NamedTuple):
    """What a rank holds in one open Geode: its heading ("" when it is the only Geode open)
    and its lines."""

    heading: str
    lines: list[str]

    def text(self) -> list[str]:
        """The heading, if any, then the lines."""
        return [self.heading, *self.lines] if self.heading else self.lines


def sections(members: Sequence[Part], indent: str = "") -> list[Section]:
    """What the rank holds in each of ``members`` (each line after ``indent``): under a
    heading for each Geode when there are several."""
    count = len(members)
    return [
        Section(
            f"{indent}Geode {number} of {count} open:" if count > 1 else "",
            [f"{indent}{line}" for line in member.describe()],
        )
        for number, member in enumerate(members, 1)
    ]


def states(members: Sequence[Part], indent: str = "") -> list[str]:
    """`sections` as lines: each one's heading, if any, then its lines."""
    return [line for section in sections(members, indent) for line in section.text()]
