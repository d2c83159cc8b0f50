"""Message subclasses holding attributes and headers, in a ping-pong: the express receive builds
the plain ones inline; the others (an array attribute, ``__slots__``, a class with its own
``__setattr__``, frozen dataclasses, a slotted mixin) keep the general path. Every reply is
checked, type, data and attributes (slots too)."""

from __future__ import annotations

import copyreg
import os
from typing import Any

import numpy as np
from conftest import TIMEOUT
from payloads import Reading, Sample, SlottedReading

from geode_mpi import Geode, Message

ROUNDS = 120


class Particle(Message):
    """A subclass as users write one: two attributes set in ``__init__``."""

    def __init__(self, pos: Any = None, step: int = 0) -> None:
        super().__init__(pos)
        self.step = step
        self.kind = "fluid"


class Weighted(Message):
    """A subclass with ``__slots__``."""

    __slots__ = ("weight",)


class Frozen(Message):
    """A subclass whose ``__setattr__`` refuses every attribute."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "__dict__":
            raise AttributeError(f"{name} is read-only")
        super().__setattr__(name, value)


def readings(k: int) -> np.ndarray[Any, Any]:
    """A structured array with datetime64 and timedelta64 fields (a pickled dtype)."""
    dtype = [("time", "M8[s]"), ("span", "m8[ms]"), ("days", "M8[D]", (2,)), ("v", "f8")]
    array = np.zeros(3, dtype)
    array["time"] = np.datetime64("2026-01-01T00:00:00") + np.arange(3) + k
    array["span"] = np.arange(3) * k
    array["v"] = k
    return array


class Spot:
    """A user class held as an attribute."""

    def __init__(self, where: int) -> None:
        self.where = where

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spot) and other.where == self.where

    __hash__ = None  # type: ignore[assignment]


def payload(k: int) -> Message:
    """The ``k``-th message of the ping-pong: a shape per ``k`` modulo 13."""
    shape = k % 13
    if shape == 9:
        return Reading(k, k / 4)
    if shape == 10:
        return SlottedReading(k)
    if shape == 11:
        return Sample(f"s {k}", f"t{k}")
    if shape == 12:
        return Particle(readings(k), k)
    if shape == 0:
        return Particle(f"pos {k}", k)
    if shape == 1:
        return Particle({"x": k, "v": [k, 1.5]}, k)
    if shape == 2:
        message = Particle(np.arange(3.0) + k, k)  # a small array: inside its meta
        message.headers = {"k": k}
        return message
    if shape == 3:
        message = Particle(k, k)
        message.spot = Spot(k)  # type: ignore[attr-defined]
        return message
    if shape == 4:
        message = Particle(k, k)
        message.grid = np.full(4, float(k))  # type: ignore[attr-defined]  # an array: a frame
        return message
    if shape == 5:
        message = Particle(k, k)
        message.big = np.full(40_000, k)  # type: ignore[attr-defined]  # a large frame
        return message
    if shape == 6:
        weighted = Weighted(f"w {k}")
        weighted.weight = k / 2
        return weighted
    if shape == 7:
        frozen = Frozen.__new__(Frozen)
        frozen.__dict__.update(data=k, note=f"n {k}")
        return frozen
    return Message(f"m {k}", headers={"k": k, "tags": ("a", None)})


def check(got: Message, sent: Message) -> None:
    assert type(got) is type(sent), (got, sent)
    for key, value in vars(sent).items():
        if isinstance(value, np.ndarray):
            assert vars(got)[key].dtype == value.dtype, (key, got)
            assert np.array_equal(vars(got)[key], value), (key, got)
        else:
            assert vars(got)[key] == value, (key, got)
    for key in copyreg._slotnames(type(sent)):  # type: ignore[attr-defined]
        assert getattr(got, key) == getattr(sent, key), (key, got)


def test_subclasses_with_attributes_round_trip() -> None:
    with Geode(max(2, 2 * _size())) as geode:
        size, rank = geode.size, geode.rank
        if size == 1:  # one process: node0 asks node1
            for k in range(ROUNDS):
                geode.send(payload(k), "node0", "node1")
                got = geode.receive("node1", timeout=TIMEOUT)
                check(got, payload(k))
                geode.send(payload(k + 1), "node1", "node0")
                check(geode.receive("node0", timeout=TIMEOUT), payload(k + 1))
            return
        peer = rank ^ 1
        if peer >= size:
            return
        other = f"node{peer}"
        # Counted: replies with attributes the express take built as they arrived
        engine = geode._runtime.engine
        express = engine.take_express
        inline = [0]

        def counted(*args: Any) -> Any:
            got = express(*args)
            if isinstance(got, Particle) and "step" in vars(got):
                inline[0] += 1
            return got

        engine.take_express = counted  # type: ignore[method-assign]
        for k in range(ROUNDS):
            if rank < peer:
                geode.send(payload(k), dest=other)
                reply = geode.receive()  # (the plain receive: the express take's)
                check(reply, payload(k + 1))
                assert reply.seq == k and reply.source == other
            else:
                got = geode.receive()
                check(got, payload(k))
                assert got.seq == k and got.source == other
                geode.send(payload(k + 1), dest=other)
        stats = geode.stats(f"node{rank}")
        assert stats.received == stats.sent == ROUNDS and stats.duplicates == 0
        print(f"rank {rank}: {inline[0]} taken inline with their attributes")
        # (a reply may come after the spin every time on a loaded machine: see
        # test_direct_receive; tests/unit/test_attribute_take.py checks the path itself)
        # (over the network path every arrival goes through the sink: no express take; and
        # Debian's Open MPI 4 delivered every reply through it too, in CI: the path is
        # checked on the bundled MPICH wheel's shared memory, and whatever the MPI by the
        # unit tests, tests/unit/test_attribute_take.py)
        network = any(map(geode._runtime.path.network, range(size)))
        wheel = _mpich_wheel()
        if size == 2 and wheel and not network and os.getloadavg()[0] < (os.cpu_count() or 1):
            assert inline[0] > 0


def _size() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_size()


def _mpich_wheel() -> bool:
    """Whether the MPI is the bundled `mpich` wheel (the CI's default leg)."""
    import importlib.metadata

    try:
        importlib.metadata.version("mpich")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_a_slotted_mixin_subclass_in_a_long_ping_pong() -> None:
    # Only `Sample`s, both ways: before, a reply the express take caught made the receive
    # raise a bare TypeError (in 4 of 9 runs of 200 rounds on MPICH's shared memory, every
    # run over its network path), that message lost and the next receive timed out.
    with Geode(max(2, 2 * _size())) as geode:
        size, rank = geode.size, geode.rank
        peer = rank ^ 1
        if size == 1:  # one process: node0 and node1 on it (no express take; the codec's)
            for k in range(20):
                geode.send(Sample(k, f"t{k}"), "node0", "node1")
                check(geode.receive("node1", timeout=TIMEOUT), Sample(k, f"t{k}"))
            return
        if peer >= size:
            return
        other = f"node{peer}"
        for k in range(2 * ROUNDS):
            if rank < peer:
                geode.send(Sample(k, f"t{k}"), dest=other)
                check(geode.receive(timeout=TIMEOUT), Sample(-k, f"r{k}"))
            else:
                check(geode.receive(timeout=TIMEOUT), Sample(k, f"t{k}"))
                geode.send(Sample(-k, f"r{k}"), dest=other)
        stats = geode.stats(f"node{rank}")
        assert stats.received == stats.sent == 2 * ROUNDS and not geode.dead_letters()
