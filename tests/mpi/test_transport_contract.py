"""The transport contract (tests/transport_contract.py) on the MPI transport, at every size
tests/test_mpi_suite.py launches (1 rank too: then every send is a loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mpi4py import MPI
from transport_contract import TransportContract, World

from geode_mpi.transport.mpi import MPITransport


@pytest.fixture
def world() -> Iterator[World]:
    made = World([MPITransport(MPI.COMM_WORLD)], processes=True)
    yield made
    made.close()


class TestContract(TransportContract):
    """Every test of the contract, on this rank's MPI transport."""


class TestContractFramesAfter(TransportContract):
    """The contract again with every large message sending its envelope before its frames
    (`MPITransport.frames_after`, the network path's order), on shared memory too."""

    @pytest.fixture
    def world(self) -> Iterator[World]:
        transport = MPITransport(MPI.COMM_WORLD)
        transport.frames_after = lambda rank: True
        made = World([transport], processes=True)
        yield made
        made.close()
