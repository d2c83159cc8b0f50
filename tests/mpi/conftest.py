"""SPMD tests: every rank runs each test; tests/test_mpi_suite.py launches them at 1, 2, 4 ranks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from geode_mpi import Geode

TIMEOUT = 60.0  # every receive in these tests waits at most this long


@pytest.fixture
def geode() -> Iterator[Geode]:
    g = Geode()
    yield g
    g.close(timeout=TIMEOUT)
