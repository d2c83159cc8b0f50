"""SPMD tests: every rank runs each test; tests/test_mpi_suite.py launches them at 1, 2, 4 ranks."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from geode_mpi import Geode

TIMEOUT = 60.0  # every receive in these tests waits at most this long


@pytest.fixture
def geode() -> Iterator[Geode]:
    g = Geode()
    yield g
    g.close(timeout=TIMEOUT)


@pytest.fixture
def directory() -> Iterator[Path]:
    """A fresh checkpoint directory every rank shares, removed after the test."""
    from test_checkpoints import barrier, shared_directory

    with Geode() as probe:
        size = probe.size
    path = shared_directory(size)
    yield path
    barrier(size)
    shutil.rmtree(path, ignore_errors=True)
