"""A lossy transport for tests: drops, duplicates, delays and reorders envelopes, reproducibly.

`FaultyHub` is the lossy sibling of `geode_mpi.transport.InProcHub` (both are `LocalHub`s, their
endpoints `LocalTransport`s): a set of connected in-process endpoints, one per simulated rank,
for one thread to drive. Unlike the in-process hub nothing is delivered inside ``send``: every
envelope (a data message or a control record, i.e. an ack carrying credits) is copied into the
destination's in-flight list with a fate drawn from one seeded ``random.Random``, and arrives on
a *later* ``progress()`` call of its destination, so the transport says ``delivers_later = True``.

Fates (see `Faults`), drawn per envelope at send time:

- drop: it never arrives;
- duplicate: two copies travel, each with its own delay;
- delay: it arrives 2..``max_delay`` progress calls of its destination later instead of at the
  next one (so later envelopes overtake it);
- reorder: it overtakes up to ``reorder_span`` envelopes already in flight to the same
  destination that are due at the same progress call.

`FaultyHub.force` queues fates for the next envelopes of one kind, to script a precise
scenario ("drop the first ack") on top of (or instead of) the random faults.

Time: the hub counts progress per destination, in ``progress()`` calls, never in seconds, so
its fates depend only on the seed and on the order of the calls the test makes. (The delivery
engine has timers of its own, resends and delayed acks: tests/unit/test_delivery_faults.py
points them at a virtual clock, which makes a whole run replay exactly.) Only ``progress()`` of
rank r moves envelopes to rank r: with several simulated ranks in one thread, drive every rank
with non-blocking calls (``try_receive``, ``pending``: both run ``progress()`` once) in a loop,
never with a blocking ``receive()``, which would spin on its own rank while the others stand
still. (A ``receive`` with a short timeout works, it just cannot see what another rank has not
sent yet.) ``close()`` delivers whatever is still in flight to its rank, ``drain()`` to every
rank.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from geode_mpi import codec
from geode_mpi.errors import DecodeError
from geode_mpi.transport.base import Frame, copy_frame
from geode_mpi.transport.inproc import LocalHub, LocalTransport

DATA = "data"
CONTROL = "control"
FATES = ("pass", "drop", "duplicate", "delay", "reorder")


@dataclass(frozen=True)
class Faults:
    """How often each fault strikes an envelope (probabilities in [0, 1], drawn independently).

    Args:
        drop: probability that an envelope is lost.
        duplicate: probability that a (not dropped) envelope travels twice.
        delay: probability, per copy, of arriving 2..``max_delay`` progress calls late.
        reorder: probability, per copy, of overtaking envelopes already in flight.
        max_delay: the longest delay, in progress calls of the destination (>= 2).
        reorder_span: how many in-flight envelopes a reordered one overtakes at most.
        data: apply the faults to data messages.
        control: apply the faults to control records (acks and credits).
    """

    drop: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    reorder: float = 0.0
    max_delay: int = 8
    reorder_span: int = 4
    data: bool = True
    control: bool = True

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "delay", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.max_delay < 2:
            raise ValueError(f"max_delay must be >= 2, got {self.max_delay}")
        if self.reorder_span < 1:
            raise ValueError(f"reorder_span must be >= 1, got {self.reorder_span}")

    @classmethod
    def uniform(cls, rate: float, *, data: bool = True, control: bool = True) -> Faults:
        """Every fault at the same ``rate``."""
        return cls(rate, rate, rate, rate, data=data, control=control)


@dataclass(slots=True)
class _Transit:
    """One copy of an envelope in flight."""

    due: int  # the destination's progress call that delivers it
    source: int  # sending rank
    meta: bytes
    frames: list[Frame]
    nbytes: int


class FaultyHub(LocalHub):
    """A set of connected lossy endpoints, one per simulated rank, for one thread.

    Args:
        size: the number of simulated ranks.
        faults: how often each fault strikes (default: none; `force` can still script some).
        seed: the seed of the random.Random that draws every fate.

    Attributes:
        counts: what happened, by ``"<kind> <event>"`` (kind ``data`` or ``control``; event
            ``sent``, ``dropped``, ``duplicated``, ``delayed``, ``reordered``, ``delivered``).
        delivered_to: data copies delivered, by destination node index (for exact checks of
            the receivers' ``received + duplicates``).
    """

    def __init__(self, size: int, faults: Faults | None = None, seed: int = 0) -> None:
        super().__init__(size)
        self.faults = Faults() if faults is None else faults
        self.rng = random.Random(seed)
        self.endpoints = [FaultyTransport(self, rank) for rank in range(size)]
        self.counts: Counter[str] = Counter()
        self.delivered_to: Counter[int] = Counter()
        self._in_flight: list[list[_Transit]] = [[] for _ in range(size)]
        self._ticks = [0] * size
        self._forced: dict[str, deque[str]] = {DATA: deque(), CONTROL: deque()}

    def endpoint(self, rank: int) -> FaultyTransport:
        """The transport of simulated rank ``rank``."""
        self.check_rank(rank)
        return self.endpoints[rank]

    def force(self, *fates: str, kind: str = DATA) -> None:
        """Give the next envelopes of ``kind`` (``"data"`` or ``"control"``) these fates.

        Each fate is one of ``pass``, ``drop``, ``duplicate``, ``delay``, ``reorder``; forced
        fates apply even when `Faults` leaves that kind alone, and draw nothing from the rng.
        """
        if kind not in self._forced:
            raise ValueError(f"kind must be {DATA!r} or {CONTROL!r}, got {kind!r}")
        for fate in fates:
            if fate not in FATES:
                raise ValueError(f"fate must be one of {', '.join(FATES)}, got {fate!r}")
        self._forced[kind].extend(fates)

    def in_flight(self, rank: int | None = None) -> int:
        """Copies in flight to ``rank`` (None: to every rank)."""
        if rank is None:
            return sum(len(queue) for queue in self._in_flight)
        return len(self._in_flight[rank])

    # -- moving envelopes --------------------------------------------------------------------

    def post(self, source: int, dest: int, meta: bytes, frames: Sequence[Frame]) -> int:
        """Put one envelope in flight from ``source`` to ``dest``; its size in bytes."""
        kind = CONTROL if codec.is_control(meta) else DATA
        data = bytes(meta)
        copies = [copy_frame(frame) for frame in frames]
        nbytes = len(data) + sum(frame.nbytes for frame in copies)
        self.counts[f"{kind} sent"] += 1
        queue = self._in_flight[dest]
        for delay, overtake in self._fate(kind):
            transit = _Transit(
                self._ticks[dest] + delay, source, data, [f.copy() for f in copies], nbytes
            )
            position = len(queue)
            if overtake:
                # Go ahead of the last `overtake` copies due at the same call (the list order
                # breaks ties between copies due at the same call).
                same = [k for k, t in enumerate(queue) if t.due == transit.due]
                if same:
                    position = same[max(0, len(same) - overtake)]
            queue.insert(position, transit)
        return nbytes

    def _fate(self, kind: str) -> list[tuple[int, int]]:
        """(delay in progress calls, envelopes to overtake) for each copy that travels."""
        faults = self.faults
        forced = self._forced[kind]
        if forced:
            fate = forced.popleft()
            self.counts[f"{kind} forced {fate}"] += 1
            if fate == "drop":
                self.counts[f"{kind} dropped"] += 1
                return []
            if fate == "duplicate":
                self.counts[f"{kind} duplicated"] += 1
                return [(1, 0), (1, 0)]
            if fate == "delay":
                self.counts[f"{kind} delayed"] += 1
                return [(faults.max_delay, 0)]
            if fate == "reorder":
                self.counts[f"{kind} reordered"] += 1
                return [(1, faults.reorder_span)]
            return [(1, 0)]
        if not (faults.data if kind == DATA else faults.control):
            return [(1, 0)]
        rng = self.rng
        if rng.random() < faults.drop:
            self.counts[f"{kind} dropped"] += 1
            return []
        n = 1
        if rng.random() < faults.duplicate:
            self.counts[f"{kind} duplicated"] += 1
            n = 2
        fates = []
        for _ in range(n):
            delay = 1
            overtake = 0
            if rng.random() < faults.delay:
                self.counts[f"{kind} delayed"] += 1
                delay = rng.randint(2, faults.max_delay)
            if rng.random() < faults.reorder:
                self.counts[f"{kind} reordered"] += 1
                overtake = rng.randint(1, faults.reorder_span)
            fates.append((delay, overtake))
        return fates

    def deliver_due(self, rank: int, everything: bool = False) -> bool:
        """One progress call of ``rank``: deliver what is due (or everything); True if any."""
        self._ticks[rank] += 1
        tick = self._ticks[rank]
        queue = self._in_flight[rank]
        due = [t for t in queue if everything or t.due <= tick]
        if not due:
            return False
        queue[:] = [t for t in queue if not (everything or t.due <= tick)]
        due.sort(key=lambda t: t.due)  # stable: the list order among copies due together
        endpoint = self.endpoints[rank]
        # The sink may send (acks): those land in the lists, never in `due`, so they arrive on
        # a later call. If the sink raises, what was not delivered yet stays in flight.
        for k, transit in enumerate(due):
            try:
                self._count_delivery(transit)
                endpoint.deliver(
                    transit.source, memoryview(transit.meta), transit.frames, transit.nbytes
                )
            except BaseException:
                queue.extend(due[k + 1 :])
                raise
        return True

    def settle(self) -> None:
        """Deliver everything in flight to every rank (what was dropped stays dropped), until
        deliveries stop sending (acks to a local node)."""
        for _ in range(100):
            if not self.in_flight():
                return
            for rank in range(self.size):
                self.deliver_due(rank, everything=True)

    def _count_delivery(self, transit: _Transit) -> None:
        if codec.is_control(transit.meta):
            self.counts[f"{CONTROL} delivered"] += 1
            return
        self.counts[f"{DATA} delivered"] += 1
        with contextlib.suppress(DecodeError):  # the transport contract sends opaque bytes
            self.delivered_to[codec.track(transit.meta).dest] += 1


class FaultyTransport(LocalTransport):
    """One endpoint of a `FaultyHub`: sends and broadcasts (one copy per member, each with its
    own fate) go in flight; this rank's `progress` delivers what is due."""

    name = "faulty in-process"
    delivers_later = True

    def __init__(self, hub: FaultyHub, rank: int) -> None:
        super().__init__(hub, rank)
        self.hub: FaultyHub = hub
        self.closed = False

    def progress(self) -> bool:
        return self.hub.deliver_due(self.rank)

    @property
    def busy(self) -> bool:
        return self.hub.in_flight(self.rank) > 0

    def close(self, timeout: float | None = None) -> None:
        """Deliver everything in flight to this rank (what was dropped stays dropped)."""
        for _ in range(100):  # deliveries may send to this rank again (acks to a local node)
            if not self.hub.in_flight(self.rank):
                break
            self.hub.deliver_due(self.rank, everything=True)
        self.closed = True

    def describe(self) -> str:
        return f"{self.name} transport, rank {self.rank} of {self.size}: {self.hub.faults}"


def describe_counts(counts: Counter[str] | dict[str, Any]) -> str:
    """The hub's counters as one sorted line (for assertion messages)."""
    return ", ".join(f"{key}={counts[key]}" for key in sorted(counts))
