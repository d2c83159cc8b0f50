"""The transport contract (tests/transport_contract.py) on the in-process transport, and on
the fault-injecting one (tests/faulty.py) with its faults off and on, at 1 and 3 ranks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from faulty import Faults, FaultyHub
from transport_contract import TransportContract, World

from geode_mpi.transport import (
    BroadcastStreams,
    InProcHub,
    PointToPoint,
    SendTicket,
    Transport,
    TransportBase,
    require,
)
from geode_mpi.transport.base import Frame


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
        "broadcast, close_stream, open_stream"
    )
    with pytest.raises(TypeError) as caught:
        require(transport, Transport, "a Geode")
    assert str(caught.value).endswith(
        "lacks all_entered, allgather, broadcast, check_same, close_stream, drain, open_stream, "
        "private_comm"
    )
