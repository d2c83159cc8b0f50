"""The transport contract: capability protocols, and the base class of every transport.

A transport moves one *envelope* at a time: ``meta`` (bytes the layer above made) and
``frames`` (numpy arrays whose elements travel in C order as raw memory). It delivers what
arrives to a sink, per source in the order sent, and never drops or duplicates.

The contract is three small capabilities, each a `typing.Protocol`:

- `PointToPoint`: ``attach`` a sink, ``send`` to a rank (a `SendTicket`), ``flush``,
  ``progress``, ``spin``, ``wait``, ``busy``, ``close``, ``describe``;
- `BroadcastStreams`: ``open_streams``, ``broadcast`` from the stream's root to its member
  ranks, ``close_stream`` (topic streams: bookkeeping, no communicator of their own);
- `Collectives`: ``check_same``, ``allgather``, ``drain``, ``all_entered``, ``private_comm``.

`Transport` is all three: what a Geode needs. `TransportBase` holds the behaviour every
transport shares (the gate, the sink, the wait loop). Code that needs only one capability asks
for it with `require`, which names what is missing. tests/unit/test_transport_contract.py and
tests/mpi/test_transport_contract.py check every transport against this contract.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from geode_mpi.base.backoff import Backoff
from geode_mpi.base.gate import Gate
from geode_mpi.base.interrupts import interruptible
from geode_mpi.base.ondemand import on_first_use

if TYPE_CHECKING:  # importing mpi4py.MPI at run time would initialise MPI
    import numpy as np
    from mpi4py import MPI
else:  # used only for frames (arrays); a job of Python objects sends none
    np = on_first_use("numpy", globals(), "np")

Frame: TypeAlias = "np.ndarray[Any, Any]"  # (a string: numpy is imported on first use)


# Called once per arrival, per source in the order sent: (source rank, meta, frames, nbytes).
# Frames are writable: uint8 arrays, or memoryviews of small ones inside the envelope; except
# a large topic frame from a rank of this node: a read-only view of its shared segment
# (transport/shared.py).
Sink = Callable[[int, memoryview, Sequence[Any], int], None]
# Optional, for speed: a run of frame-less arrivals from one source rank, in the order sent;
# the same as calling the sink on each (meta, (), len(meta)) in turn.
RunSink = Callable[[int, list[memoryview]], None]


class SendTicket:
    """A send in progress. ``done`` turns True once the caller's buffers may be reused."""

    __slots__ = ("dest", "done", "held", "nbytes", "state")

    def __init__(
        self, dest: int, nbytes: int, done: bool = False, held: bool = False, state: Any = None
    ) -> None:
        self.dest = dest
        self.nbytes = nbytes
        self.done = done
        self.held = held  # waiting in a batch that has not gone out yet
        # Transport-private state: requests, buffers kept alive, datatypes to free.
        self.state = state

    def __repr__(self) -> str:
        shown = f"dest={self.dest}, nbytes={self.nbytes}, done={self.done}, held={self.held}"
        return f"SendTicket({shown})"


def frame_bytes(frame: Frame) -> Frame:
    """A C-contiguous uint8 view of a frame's elements (a copy only if it is strided).

    A received frame may be a memoryview (an inline frame: a slice of its envelope's or
    batch's receive buffer) rather than an array: viewed as uint8 all the same.
    """
    if frame.__class__ is memoryview:
        frame = np.frombuffer(frame, np.uint8) if frame.nbytes else np.empty(0, np.uint8)
    contiguous = frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)
    if contiguous.nbytes == 0:
        return np.empty(0, np.uint8)
    flat: Frame = contiguous.reshape(-1).view(np.uint8)
    return flat


def copy_frame(frame: Frame) -> Frame:
    """A private writable uint8 copy of a frame's elements in C order (one copy, always): of
    an array, or of a memoryview (an inline frame as received)."""
    if frame.__class__ is memoryview or frame.flags.c_contiguous:
        copied: Frame = frame_bytes(frame).copy()
        return copied
    return frame_bytes(frame)  # ascontiguousarray already made a fresh copy


@runtime_checkable
class PointToPoint(Protocol):
    """Move envelopes to one rank; deliver arrivals to the sink. One transport serves one rank."""

    rank: int
    size: int
    name: str
    # False when everything is delivered inside send() itself (one thread, one process):
    # then a receive that finds nothing would wait forever, and says so at once instead.
    delivers_later: bool
    gate: Gate  # the lock of this transport and everything above it (see `Gate`)

    def attach(self, sink: Sink, sink_run: RunSink | None = None) -> None:
        """Set the function that receives every delivery (called from `progress`), and
        optionally a faster one for a run of frame-less arrivals from one rank."""

    def send(
        self, dest: int, meta: bytes, frames: Sequence[Frame], batch: bool = False
    ) -> SendTicket:
        """Start sending one envelope to rank ``dest``; return at once.

        The caller must not modify the frames until the ticket is done. With ``batch`` the
        transport may hold a small message briefly to send it together with the next ones to
        the same rank; every `progress`, `spin`, `flush` and `close` sends what it holds.
        """
        ...

    def flush(self) -> None:
        """Send at once whatever `send` holds back to batch."""

    def progress(self) -> bool:
        """Move data: complete sends, receive arrivals and pass them to the sink.

        Returns:
            True if anything happened (so a wait loop can reset its back-off).
        """
        ...

    def spin(self, seconds: float) -> bool:
        """Poll for up to ``seconds``, returning as soon as anything happens."""
        ...

    def wait(
        self, done: Callable[[], bool], deadline: float | None, gate: Gate | None = None
    ) -> bool:
        """Drive progress until ``done()`` or the deadline; True if ``done()`` became true."""
        ...

    @property
    def busy(self) -> bool:
        """True while data is moving (sends or frame receives in flight)."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Finish: complete every send and receive everything sent to this rank.

        Collective: every rank of the job calls it; a second call does nothing. Deliveries
        made while closing go to the sink.
        """

    def describe(self) -> str:
        """One line for diagnostics."""
        ...

    def sent_count(self, rank: int) -> int | None:
        """How many envelopes this rank sent ``rank`` so far, what was batched sent first
        (None: not counted; then `arrived_count` is never True)."""
        ...

    def arrived_count(self, rank: int, count: int) -> bool:
        """Whether ``count`` envelopes (a `sent_count` of ``rank``'s) have arrived from
        ``rank`` and reached the sink, none half received."""
        ...


@runtime_checkable
class BroadcastStreams(Protocol):
    """Topic streams: one root rank sends, every member rank receives, in order.

    A stream costs nothing to hold open: no communicator, nothing polled while idle. What the
    root broadcasts reaches each member's sink (not the root's own) from ``root``, in the order
    broadcast, and in order with the root's point-to-point sends to that member.
    """

    def open_streams(self, streams: Sequence[tuple[int, int]], members: Sequence[int]) -> None:
        """Open each of ``streams``, (key, root): stream ``key`` from rank ``root`` to the
        ranks in ``members`` (which may list the root), the same for them all. No
        communication: the root and each member call it (other ranks may, and it does nothing
        there), before the root broadcasts on it. A topic opens all its streams in one call: a
        transport keeps no copy of ``members`` per stream."""

    def broadcast(self, key: int, meta: bytes, frames: Sequence[Frame]) -> SendTicket:
        """Send one envelope to every member of stream ``key`` (on its root only); the ticket
        is done once the frames may be reused."""
        ...

    def zero_copy_array(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray[Any, Any]:
        """A writable array that a broadcast hands to this rank's node without a copy, and
        that turns read-only when it is published (transport/sealed.py)."""
        ...

    def close_stream(
        self, key: int, timeout: float | None = None, joining: Sequence[int] = ()
    ) -> None:
        """End stream ``key``. The root returns at once (its broadcasts' tickets complete as
        usual); a member returns once everything the root broadcast before its close has
        reached the sink. The root and every member call it (other ranks return); the key
        may then be opened again, with other members. ``joining``: the ranks that will be
        members when it is opened again and are not now (the same on every rank); each
        waits as a member does, and what the root sends them after its close waits until
        they open it again (not handed to a sink that does not yet know the new members)."""


@runtime_checkable
class Collectives(Protocol):
    """Steps every rank takes together."""

    def check_same(self, value: bytes, what: str) -> None:
        """Raise `WorldMismatchError` if ``value`` differs between ranks."""

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, by rank (picklable values)."""
        ...

    def drain(
        self, timeout: float | None = None, pending: Callable[[], bool] | None = None
    ) -> bool:
        """Return once everything sent so far reached its destination's sink: whether
        ``pending()``, asked once nothing moves any more, was True on any rank (False
        without it). The caller's own question rides on the drain's last collective."""

    def all_entered(self) -> Callable[[], bool]:
        """Say this rank has arrived; return a test that turns True once every rank has (a
        nonblocking barrier: wait on it with `wait`, again after a timeout)."""
        ...

    def private_comm(self) -> MPI.Intracomm | None:
        """A communicator of its own over every rank (for the hang watchdog's messages), or
        None on transports without MPI."""
        ...


@runtime_checkable
class Transport(PointToPoint, BroadcastStreams, Collectives, Protocol):
    """Every capability: what a Geode needs of its transport."""


T = TypeVar("T")
# what Geode() agrees on (`check_same`)
SETTINGS = "the node names, the delivery settings and whether a checkpoint_dir is set"


def require(transport: T, capability: type, needed_for: str) -> T:
    """``transport`` itself if it has ``capability`` (one of the protocols above), else a clear
    error. (``capability`` is a plain ``type``: mypy refuses a protocol for a ``type[C]``.)

    Raises:
        TypeError: the transport lacks a member of that capability (named in the message).
    """
    if isinstance(transport, capability):
        return transport
    missing = sorted(name for name in protocol_members(capability) if not hasattr(transport, name))
    kind = getattr(transport, "name", type(transport).__name__)
    raise TypeError(
        f"{needed_for} needs a transport with {capability.__name__}; the {kind} transport "
        f"lacks {', '.join(missing)}"
    )


def protocol_members(capability: type) -> set[str]:
    """The public names a capability protocol asks for (methods, properties, attributes)."""
    names: set[str] = set()
    for cls in capability.__mro__:
        if cls in (object, Protocol) or cls.__module__ == "typing":
            continue
        names.update(vars(cls).get("__annotations__", {}))
        names.update(vars(cls))
    return {name for name in names if not name.startswith("_")}


class TransportBase:
    """What every transport shares: the gate, the sink, the polling wait, a description.

    Subclasses set ``rank``, ``size`` and ``name``, and provide the capabilities they have.
    """

    rank: int
    size: int
    name: str = "transport"
    delivers_later: bool = True

    def __init__(self) -> None:
        self.gate = Gate()
        self._sink: Sink = self._no_sink
        self._sink_run: RunSink = self._one_by_one

    def _no_sink(self, source: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> None:
        raise RuntimeError(f"{self.name} transport received a message before attach()")

    def _one_by_one(self, source: int, metas: list[memoryview]) -> None:
        for meta in metas:
            self._sink(source, meta, (), len(meta))

    def attach(self, sink: Sink, sink_run: RunSink | None = None) -> None:
        """See `PointToPoint.attach`."""
        self._sink = sink
        self._sink_run = self._one_by_one if sink_run is None else sink_run

    def deliver(self, source: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> None:
        """Hand an arrival to the sink (`attach` sets it; before that, arrivals are errors)."""
        self._sink(source, meta, frames, nbytes)

    def batch_meta(self, dest: int, meta: bytes) -> SendTicket:
        """``send(dest, meta, (), batch=True)``, the commonest small isend, in one call (a
        transport may do it faster; optional: the send path falls back to `send`)."""
        return self.send(dest, meta, (), True)  # type: ignore[attr-defined,no-any-return]

    def flush(self) -> None:
        """Send at once whatever `send` holds back to batch (nothing, by default)."""

    def progress(self) -> bool:
        """Nothing to move, by default: transports that deliver inside send() keep it."""
        return False

    @property
    def busy(self) -> bool:
        """Nothing in flight, by default."""
        return False

    def sent_count(self, rank: int) -> int | None:
        """Not counted, by default (see `PointToPoint.sent_count`)."""
        return None

    def arrived_count(self, rank: int, count: int) -> bool:
        """Never, by default: nothing is counted (see `PointToPoint.arrived_count`)."""
        return False

    def spin(self, seconds: float) -> bool:
        """Poll in a tight loop for up to ``seconds``, returning as soon as anything happens.

        The lowest-latency wait; transports without a cheaper check just progress once.
        """
        return self.progress()

    @interruptible  # (between its looks at done())
    def wait(
        self,
        done: Callable[[], bool],
        deadline: float | None,
        gate: Gate | None = None,
        backoff: Backoff | None = None,
    ) -> bool:
        """Drive progress until ``done()`` (checked after every poll) or the deadline passes.

        Args:
            done: the condition waited for.
            deadline: a `time.monotonic()` instant, or None for no limit.
            gate: let other threads in at the pauses (see `Backoff`). Only for a wait between
                two operations: the transport's own waits (inside a broadcast, a drain) hold
                the gate throughout.
            backoff: the pauses between polls (None: `Backoff`'s defaults, with ``gate``).

        Returns:
            True if ``done()`` became true, False at the deadline.
        """
        if done():
            return True
        if backoff is None:
            backoff = Backoff(gate=gate)
        while True:
            if self.spin(backoff.slice(self.busy)):
                backoff.reset()
            if done():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            backoff.pause(self.busy)

    def describe(self) -> str:
        """One line for diagnostics."""
        return f"{self.name} transport, rank {self.rank} of {self.size}"
