"""tests/mpi/test_requests.py at 5 ranks (tests/test_mpi_suite.py runs the SPMD tier at 1 to 4):
an odd ring with more ranks than the other tests use."""

from __future__ import annotations

import pytest
from mpirun import mpirun

pytestmark = pytest.mark.mpi

SPMD = ["-m", "geode_mpi", "-m", "pytest", "tests/mpi/test_requests.py", "-x", "-q"]
SPMD += ["-p", "no:cacheprovider", "-o", "addopts=", "--timeout=120"]


def test_requests_at_5_ranks() -> None:
    result = mpirun(5, SPMD, timeout=240)
    assert result.returncode == 0, result.explain()
    assert " passed" in result.stdout and "failed" not in result.stdout, result.explain()
