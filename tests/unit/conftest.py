"""Fixtures of the unit tier (one process, no launcher)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from geode_mpi.core import registry


@pytest.fixture(autouse=True)
def close_leftover_geodes() -> Iterator[None]:
    """Close the Geodes a test left open: an open Geode stays registered until the process
    exits, and later tests would see it (``progress()`` and log labels take its rank and node)."""
    before = set(map(id, registry._open))
    yield
    for geode in [g for g in registry._open if id(g) not in before]:
        geode.close(timeout=10)
    registry._closed_early.clear()  # no warning at exit for what a test left queued
