"""Fixtures of the unit tier (one process, no launcher)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from geode_mpi.core import registry


@pytest.fixture(autouse=True)
def close_leftover_geodes() -> Iterator[None]:
    """Close the Geodes a test left open: an open Geode stays registered until the process
    exits, and later tests would see it (``progress()`` and log labels take its rank and node)."""
    before = {id(entry.geode) for entry in registry._open}
    yield
    for entry in [e for e in registry._open if id(e.geode) not in before]:
        entry.end(10)
    registry._closed_early.clear()  # no warning at exit for what a test left queued
