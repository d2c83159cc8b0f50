"""Shared fixtures for the unit tier (no launcher) and the tests that launch mpiexec."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpirun import ROOT


@pytest.fixture
def root() -> Path:
    return ROOT
