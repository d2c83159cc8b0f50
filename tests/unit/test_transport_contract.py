"""The transport contract (tests/transport_contract.py) on the in-process transport, and on
the fault-injecting one (tests/faulty.py) with its faults off and on, at 1 and 3 ranks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from faulty import Faults, FaultyHub
from transport_contract import TransportContract, World

from geode_mpi import Geode
from geode_mpi.transport import (
    BroadcastStreams,
    InProcHub,
    PointToPoint,
    SendTicket,
    Transport,
    TransportBase,
    require,
)
from geode_mpi.transport.base import Frame, protocol_members


def make_world(kind: str, size: int) -> World:
    if kind == "inproc":
        return World(InProcHub(size).endpoints, processes=False)
    if kind == "faulty":
        return World(FaultyHub(size, seed=size).endpoints, processes=False)
    hub = FaultyHub(size, Faults.uniform(0.15), seed=size)
    return World(hub.endpoints, processes=False, lossy=True, faults=lambda: dict(hub.counts))


@pytest.fixture(params=["inproc", "faulty", "faulty-lossy"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[1, 3], ids=["1rank", "3ranks"])
def world(kind: str, request: pytest.FixtureRequest) -> Iterator[World]:
    made = make_world(kind, request.param)
    yield made
    made.close()


class TestContract(TransportContract):
    """Every test of the contract, on each world."""


class PointToPointOnly(TransportBase):
    """A transport with one capability: it sends (to itself) and nothing else."""

    name = "loopback"
    rank = 0
    size = 1

    def send(
        self, dest: int, meta: bytes, frames: Sequence[Frame], batch: bool = False
    ) -> SendTicket:
        self.deliver(self.rank, memoryview(meta), list(frames), len(meta))
        return SendTicket(dest, len(meta), done=True)

    def close(self, timeout: float | None = None) -> None:
        return None


def test_require_names_the_missing_capability_and_its_members() -> None:
    transport = PointToPointOnly()
    assert require(transport, PointToPoint, "sending") is transport
    with pytest.raises(TypeError) as caught:
        require(transport, BroadcastStreams, "a topic")
    assert str(caught.value) == (
        "a topic needs a transport with BroadcastStreams; the loopback transport lacks "
        "broadcast, close_stream, open_streams, zero_copy_array"
    )
    with pytest.raises(TypeError) as caught:
        require(transport, Transport, "a Geode")
    assert str(caught.value).endswith(
        "lacks all_entered, allgather, broadcast, check_same, close_stream, drain, open_streams, "
        "private_comm, zero_copy_array"
    )


class WithoutStreams:
    """An in-process endpoint that hides its broadcast streams (everything else passes on)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in protocol_members(BroadcastStreams):
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_geode_needs_collectives_and_says_so_when_created() -> None:
    with pytest.raises(TypeError) as caught:
        Geode(1, transport=PointToPointOnly())  # type: ignore[arg-type]
    assert str(caught.value) == (
        "Geode() needs a transport with Collectives; the loopback transport lacks "
        "all_entered, allgather, check_same, drain, private_comm"
    )


def test_a_topic_needs_broadcast_streams_and_a_work_queue_does_not() -> None:
    geode = Geode(["a", "b"], transport=WithoutStreams(InProcHub(1).endpoint(0)))
    try:
        with pytest.raises(TypeError) as caught:
            geode.topic("prices", ["a"], ["b"])
        assert str(caught.value) == (
            "Geode.topic('prices') needs a transport with BroadcastStreams; the in-process "
            "transport lacks broadcast, close_stream, open_streams, zero_copy_array"
        )
        queue = geode.work_queue("jobs", ["b"], producers=["a"])
        queue.put(7, source="a")
        queue.finish(source="a")
        task = queue.get("b", timeout=5)
        assert task is not None and task.data == 7
        assert queue.get("b", timeout=5) is None
    finally:
        geode.close(timeout=5)
