"""The transport contract (tests/transport_contract.py) on the in-process transport, and on
the fault-injecting one (tests/faulty.py) with its faults off and on, at 1 and 3 ranks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faulty import Faults, FaultyHub
from transport_contract import TransportContract, World

from geode_mpi.transport import InProcHub


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
