"""The transport contract as one test suite, for every transport (see transport/base.py).

`TransportContract` holds the tests; a test module binds it to transports by subclassing it
and providing a ``world`` fixture (a `World`): tests/unit/test_transport_contract.py for the
in-process and the fault-injecting transports, tests/mpi/test_transport_contract.py for MPI at
1, 2 and 4 ranks. A `World` is the ranks this process drives: every simulated rank of a hub,
or this process's own rank under MPI. Tests are written so that both run them the same way:
each local rank sends, then every local rank receives (with a deadline).

A lossy world (the faulty transport with its faults on) may drop, duplicate and reorder, which
the contract forbids: there, the tests check what still holds (what arrives is intact and was
sent, from that source, to that rank; tickets complete; closing twice is safe; errors named).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from geode_mpi.errors import WorldMismatchError
from geode_mpi.transport.base import (
    BroadcastStreams,
    Collectives,
    Frame,
    PointToPoint,
    SendTicket,
    Transport,
    require,
)

TIMEOUT = 60.0  # seconds any wait in these tests may take
_META = struct.Struct("<4sHHHI")  # magic, key (0: point-to-point), source, dest, k
_MAGIC = b"TCON"  # meta[1] is not the codec's control kind: the faulty hub counts it as data


def meta_for(key: int, source: int, dest: int, k: int, pad: int = 0) -> bytes:
    """A meta that says where it comes from, padded to vary its size."""
    return _META.pack(_MAGIC, key, source, dest, k) + bytes([k % 251]) * pad


def read_meta(meta: bytes) -> tuple[int, int, int, int]:
    """(key, source, dest, k) of a `meta_for` meta."""
    magic, key, source, dest, k = _META.unpack_from(meta)
    assert magic == _MAGIC, f"meta not sent by this test: {meta[:16]!r}"
    return key, source, dest, k


def frames_for(source: int, k: int) -> list[Frame]:
    """The k-th frame set: none, empty, small, big, strided, Fortran, datetime, 0-d, mixed."""
    kind = k % 9
    if kind == 0:
        return []
    if kind == 1:
        return [np.zeros(0, np.float32)]
    if kind == 2:
        return [np.arange(5, dtype=np.int16) + k]
    if kind == 3:
        return [np.full(400_000, source * 100 + k, np.float64)]  # 3.2 MB: out of band
    if kind == 4:
        return [(np.arange(600_000, dtype=np.int32) + source).reshape(1000, 600)[:, ::3]]
    if kind == 5:
        return [np.asfortranarray(np.arange(12.0).reshape(3, 4) * (k + 1))]
    if kind == 6:
        return [(np.arange(70_000) + k).astype("M8[s]")]  # datetimes export no buffer
    if kind == 7:
        return [np.array(3.5 + k)]
    return [np.ones(10, bool), np.full(300_000, k, np.uint8), np.zeros(0, np.uint8), np.arange(3.0)]


def as_bytes(frame: Any) -> bytes:
    """A frame's elements in C order, as bytes (a sent array, or an arrived frame)."""
    if isinstance(frame, np.ndarray):
        return np.ascontiguousarray(frame).tobytes()
    return bytes(memoryview(frame))


@dataclass(frozen=True)
class Arrival:
    """One delivery to a sink, copied out of the transport's buffers."""

    source: int
    meta: bytes
    frames: tuple[bytes, ...]
    nbytes: int
    writable: bool  # every frame is writable memory
    plain: bool  # every frame is a uint8 array or a memoryview (what sinks are promised)
    raw: tuple[Any, ...]  # the frames themselves (a test may check them again later)


def _arrival(source: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> Arrival:
    return Arrival(
        source,
        bytes(meta),
        tuple(as_bytes(frame) for frame in frames),
        nbytes,
        all(not memoryview(frame).readonly for frame in frames),
        all(
            isinstance(frame, memoryview)
            or (isinstance(frame, np.ndarray) and frame.dtype == np.uint8)
            for frame in frames
        ),
        tuple(frames),
    )


class World:
    """The ranks this process drives, each with a recording sink.

    Args:
        transports: this process's endpoints (every rank of a hub, or its own MPI rank).
        processes: the ranks are separate processes (collectives across them work).
        lossy: the transport may drop, duplicate and reorder (faults injected on purpose).
        faults: what the lossy transport injected so far (event name to count).
    """

    def __init__(
        self,
        transports: Sequence[Transport],
        *,
        processes: bool,
        lossy: bool = False,
        faults: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.transports = list(transports)
        self.size = self.transports[0].size
        self.processes = processes
        self.lossy = lossy
        self.faults = faults
        self.got: dict[int, list[Arrival]] = {t.rank: [] for t in self.transports}
        for transport in self.transports:
            transport.attach(self._sink(transport.rank))

    def _sink(self, rank: int) -> Callable[[int, memoryview, Sequence[Any], int], None]:
        def sink(source: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> None:
            self.got[rank].append(_arrival(source, meta, frames, nbytes))

        return sink

    def pump(self) -> bool:
        """One `progress` of every local rank; True if any moved something."""
        moved = False
        for transport in self.transports:
            result = transport.progress()
            assert isinstance(result, bool), f"progress() returned {result!r}"
            moved = result or moved
        return moved

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        """Drive every local rank until ``done()``; fail, saying ``what``, at the deadline."""
        deadline = time.monotonic() + TIMEOUT
        if len(self.transports) == 1:
            assert self.transports[0].wait(done, deadline), f"timed out waiting for {what}"
            return
        while not done():
            self.pump()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"

    def sync(self) -> None:
        """Every rank gets here before any goes on (a nonblocking barrier, progressing)."""
        entered = [transport.all_entered() for transport in self.transports]
        self.wait_until(lambda: all(test() for test in entered), "every rank to arrive")

    def arrivals(self, rank: int, source: int, key: int = 0) -> list[Arrival]:
        """What local ``rank`` received from ``source`` on stream ``key`` (0: point-to-point)."""
        return [a for a in self.got[rank] if a.source == source and read_meta(a.meta)[0] == key]

    def check(
        self, rank: int, source: int, sent: list[tuple[bytes, list[Frame]]], key: int = 0
    ) -> None:
        """``rank`` received exactly ``sent`` from ``source``, in order (a lossy world: only
        envelopes that were sent, each intact)."""
        got = [(a.meta, a.frames) for a in self.arrivals(rank, source, key)]
        want = [(meta, tuple(as_bytes(f) for f in frames)) for meta, frames in sent]
        if self.lossy:
            unknown = [item[0][:16] for item in got if item not in want]
            assert not unknown, f"rank {rank} got envelopes never sent by {source}: {unknown}"
            return
        assert len(got) == len(want), f"rank {rank}: {len(got)} of {len(want)} from {source}"
        for k, (item, wanted) in enumerate(zip(got, want, strict=True)):
            assert item[0] == wanted[0], f"rank {rank}, from {source}: #{k} out of order"
            assert item[1] == wanted[1], f"rank {rank}, from {source}: #{k}'s frames differ"

    def close(self) -> None:
        for transport in self.transports:
            transport.close(timeout=TIMEOUT)


def _everything_arrived(world: World, expected: dict[int, int]) -> Callable[[], bool]:
    """A test: every local rank holds at least its expected number of arrivals (a lossy
    world: nothing is in flight any more)."""
    if world.lossy:
        return lambda: not any(transport.busy for transport in world.transports)
    return lambda: all(len(world.got[rank]) >= n for rank, n in expected.items())


def _send_to_all(world: World, count: int) -> Callable[[int, int], list[tuple[bytes, list[Frame]]]]:
    """Every local rank sends ``count`` messages of every frame set to every rank, half of
    them batched; returns what ``source`` sent to ``dest``."""

    def sent(source: int, dest: int) -> list[tuple[bytes, list[Frame]]]:
        return [(meta_for(0, source, dest, k), frames_for(source, k)) for k in range(count)]

    for transport in world.transports:
        for dest in range(world.size):
            for k, (meta, frames) in enumerate(sent(transport.rank, dest)):
                transport.send(dest, meta, frames, batch=k % 2 == 1)
    return sent


class TransportContract:
    """What every transport must do. Subclasses provide a ``world`` fixture (a `World`)."""

    def test_it_has_every_capability(self, world: World) -> None:
        for transport in world.transports:
            for capability in (PointToPoint, BroadcastStreams, Collectives, Transport):
                assert require(transport, capability, "the contract") is transport

    def test_each_source_arrives_in_order_exactly_once(self, world: World) -> None:
        count = 40

        def message(source: int, dest: int, k: int) -> tuple[bytes, list[Frame]]:
            frames = [np.full(k % 3, k, np.int64)] if k % 5 else []
            return meta_for(0, source, dest, k, pad=k % 4 * 700), frames

        tickets: list[SendTicket] = []
        for transport in world.transports:
            for k in range(count):
                for dest in range(world.size):
                    meta, frames = message(transport.rank, dest, k)
                    tickets.append(transport.send(dest, meta, frames, batch=k % 2 == 0))
            transport.flush()
        expected = {t.rank: count * world.size for t in world.transports}
        world.wait_until(_everything_arrived(world, expected), "every message")
        world.wait_until(lambda: all(t.done for t in tickets), "every ticket")
        for transport in world.transports:
            for source in range(world.size):
                sent = [message(source, transport.rank, k) for k in range(count)]
                world.check(transport.rank, source, sent)
        if world.lossy:  # else this world tested nothing the others do not
            struck = world.faults()
            assert struck.get("data dropped") and struck.get("data duplicated"), struck
        world.sync()

    def test_frames_arrive_intact_writable_and_counted(self, world: World) -> None:
        count = 18  # every frame set twice

        def sent_by(me: int) -> list[tuple[bytes, list[Frame]]]:
            dest = (me + 1) % world.size
            return [(meta_for(0, me, dest, k), frames_for(me, k)) for k in range(count)]

        tickets = []
        reused: list[Frame] = []  # the frames sent, which the senders overwrite once done
        for transport in world.transports:
            dest = (transport.rank + 1) % world.size
            for meta, frames in sent_by(transport.rank):
                tickets.append(transport.send(dest, meta, frames))
                reused += frames
        if world.size > 1 and world.transports[0].delivers_later:  # MB still on their way
            assert any(transport.busy for transport in world.transports), "busy is False"
        expected = {t.rank: count for t in world.transports}
        world.wait_until(_everything_arrived(world, expected), "every message")
        world.wait_until(lambda: all(t.done for t in tickets), "every ticket")
        for frame in reused:  # done: the sender may reuse its buffers
            frame[...] = np.zeros_like(frame)
        for transport in world.transports:
            source = (transport.rank - 1) % world.size
            world.check(transport.rank, source, sent_by(source))
            later = [tuple(as_bytes(f) for f in a.raw) for a in world.got[transport.rank]]
            assert later == [a.frames for a in world.got[transport.rank]], "frames changed"
            for arrival in world.got[transport.rank]:
                assert arrival.writable, f"read-only frame from {source}"
                assert arrival.plain, f"a frame from {source} is neither uint8 nor memoryview"
                assert arrival.nbytes >= len(arrival.meta) + sum(map(len, arrival.frames))
        world.sync()

    def test_progress_returns_and_goes_quiet(self, world: World) -> None:
        for transport in world.transports:
            transport.send(transport.rank, meta_for(0, transport.rank, transport.rank, 0), [])
        world.wait_until(_everything_arrived(world, dict.fromkeys(world.got, 1)), "loopback")
        world.sync()
        deadline = time.monotonic() + TIMEOUT
        while world.pump() or any(t.busy for t in world.transports):  # asserts bool results
            assert time.monotonic() < deadline, "progress() never stopped reporting activity"
        for transport in world.transports:
            assert transport.spin(0.001) is False
            assert transport.describe().startswith(transport.name)
        world.sync()

    def test_streams_broadcast_to_their_members_only_in_order(self, world: World) -> None:
        size = world.size
        odd = [rank for rank in range(size) if rank % 2]
        streams = {11: (0, odd), 12: (size - 1, list(range(size)))}  # members may list the root
        count = 9
        for transport in world.transports:
            for key, (root, members) in streams.items():
                transport.open_streams([(key, root)], members)

        def sent_on(key: int) -> list[tuple[bytes, list[Frame]]]:
            root = streams[key][0]
            return [
                (meta_for(key, root, 0, k, pad=k * 900), frames_for(root, k)) for k in range(count)
            ]

        tickets = []
        for transport in world.transports:
            for key, (root, _) in streams.items():
                if transport.rank == root:
                    tickets += [transport.broadcast(key, *message) for message in sent_on(key)]
        want = {
            t.rank: count * sum(t.rank in m and t.rank != root for root, m in streams.values())
            for t in world.transports
        }
        world.wait_until(_everything_arrived(world, want), "every broadcast")
        world.wait_until(lambda: all(ticket.done for ticket in tickets), "every ticket")
        for transport in world.transports:
            for key in streams:
                transport.close_stream(key, timeout=TIMEOUT)
        for transport in world.transports:
            rank = transport.rank
            for key, (root, members) in streams.items():
                if rank in members and rank != root:
                    world.check(rank, root, sent_on(key), key)
                else:
                    got = world.arrivals(rank, root, key)
                    assert not got, f"rank {rank} is not a member of stream {key}, got {got}"
        world.sync()

    def test_only_a_streams_root_broadcasts(self, world: World) -> None:
        for transport in world.transports:
            transport.open_streams([(21, 0)], range(world.size))
        for transport in world.transports:
            if transport.rank != 0:
                with pytest.raises(ValueError, match=f"rank {transport.rank} is not the root"):
                    transport.broadcast(21, meta_for(21, transport.rank, 0, 0), [])
            with pytest.raises(ValueError, match="broadcast stream 22"):
                transport.broadcast(22, meta_for(22, transport.rank, 0, 0), [])
        for transport in world.transports:
            transport.close_stream(21, timeout=TIMEOUT)

    def test_a_members_close_stream_returns_once_everything_before_the_end_arrived(
        self, world: World
    ) -> None:
        key, count = 31, 6
        sent = [(meta_for(key, 0, 0, k, pad=k * 700), frames_for(0, k)) for k in range(count)]
        for transport in world.transports:
            transport.open_streams([(key, 0)], range(world.size))
        for transport in world.transports:  # rank 0 first, in a world of one process
            if transport.rank == 0:
                for message in sent:
                    transport.broadcast(key, *message)
            transport.close_stream(key, timeout=TIMEOUT)
            if transport.rank != 0:  # no waiting here: close_stream waited
                world.check(transport.rank, 0, sent, key)
        world.sync()

    def test_ten_thousand_streams_open_at_once_and_reopen(self, world: World) -> None:
        size, keys = world.size, range(40_000, 50_000)
        for transport in world.transports:
            transport.open_streams([(key, key % size) for key in keys], range(size))
        last = keys[-1]
        sent = [(meta_for(last, last % size, 0, 0), frames_for(0, 1))]
        for transport in world.transports:
            if transport.rank == last % size:
                transport.broadcast(last, *sent[0])
        want = {t.rank: int(t.rank != last % size) for t in world.transports}
        world.wait_until(_everything_arrived(world, want), "the broadcast on the last stream")
        for transport in world.transports:  # (closing all 10,000 one by one: 16 s at 4 ranks)
            transport.close_stream(last, timeout=TIMEOUT)
        for transport in world.transports:  # a closed stream opens again, with other members
            transport.open_streams([(last, last % size)], [last % size])
            transport.close_stream(last, timeout=TIMEOUT)
        for transport in world.transports:
            if transport.rank != last % size:
                world.check(transport.rank, last % size, sent, last)
        world.sync()

    def test_collectives_agree(self, world: World) -> None:
        for transport in world.transports:
            transport.check_same(b"same everywhere", "the same value")
        for transport in world.transports:
            if world.processes or world.size == 1:
                assert transport.allgather(transport.rank * 10) == [
                    10 * r for r in range(world.size)
                ]
            else:
                with pytest.raises(RuntimeError, match="share one thread"):
                    transport.allgather(transport.rank)
        entered = [transport.all_entered() for transport in world.transports]
        world.wait_until(lambda: all(test() for test in entered), "all_entered()")
        for transport in world.transports:
            comm = transport.private_comm()
            if comm is not None:
                assert (comm.Get_rank(), comm.Get_size()) == (transport.rank, world.size)
                comm.Free()
        if world.size == 1:
            return
        for transport in world.transports:  # rank 0's value against every other's
            if transport.rank == 0 and not world.processes:
                transport.check_same(b"rank 0", "a value per rank")
                continue
            with pytest.raises(WorldMismatchError, match="about a value per rank"):
                transport.check_same(f"rank {transport.rank}".encode(), "a value per rank")

    def test_drain_delivers_everything_sent_before_it(self, world: World) -> None:
        sent = _send_to_all(world, 6)
        for transport in world.transports:
            transport.drain(timeout=TIMEOUT)
        for transport in world.transports:  # no wait: drain() returned after the deliveries
            assert not transport.busy
            for source in range(world.size):
                world.check(transport.rank, source, sent(source, transport.rank))

    def test_drain_says_whether_any_rank_had_something_pending(self, world: World) -> None:
        if world.size > 1 and not world.processes:
            return  # simulated ranks share one thread: no rank can wait for another's answer
        last = world.size - 1
        for transport in world.transports:
            is_last = transport.rank == last
            is_first = transport.rank == 0
            assert transport.drain(TIMEOUT, lambda: is_last) is True  # noqa: B023
            assert transport.drain(TIMEOUT, lambda: False) is False
            _send_to_all(world, 2)
            assert transport.drain(TIMEOUT, lambda: is_first) is True  # noqa: B023

    def test_close_delivers_everything_and_twice_is_safe(self, world: World) -> None:
        sent = _send_to_all(world, 9)
        world.close()
        world.close()
        for transport in world.transports:
            assert not transport.busy
            for source in range(world.size):
                world.check(transport.rank, source, sent(source, transport.rank))

    def test_errors_name_the_bad_value(self, world: World) -> None:
        for transport in world.transports:
            with pytest.raises(ValueError, match=f"dest must be a rank in 0..{world.size - 1}"):
                transport.send(world.size, meta_for(0, transport.rank, 0, 0), [])
            with pytest.raises(ValueError, match="got -1"):
                transport.send(-1, meta_for(0, transport.rank, 0, 0), [])
            for bad in (-1, world.size):  # a batched send checks too, whatever is batched
                with pytest.raises(ValueError, match=f"got {bad}"):
                    transport.send(bad, meta_for(0, transport.rank, 0, 0), [], batch=True)
        world.sync()
