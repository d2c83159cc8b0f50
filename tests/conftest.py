"""Shared fixtures for the unit tier (no launcher) and the tests that launch mpiexec."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpirun import ROOT, load_slack


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Scale each test's pytest-timeout by the load when it starts, as `mpirun` scales its
    launches' timeouts, so that a launch's own timeout (which kills its process group and
    says what the job printed) fires before pytest-timeout's does."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        base = float(marker.args[0])
    else:  # pytest-timeout's own order: --timeout, PYTEST_TIMEOUT, then the ini file
        config = item.config
        chosen = config.getvalue("timeout") or os.environ.get("PYTEST_TIMEOUT")
        base = float(chosen or config.getini("timeout") or 0)
    if base > 0:
        item.add_marker(pytest.mark.timeout(base * load_slack()), append=False)
    yield


@pytest.fixture
def root() -> Path:
    return ROOT
