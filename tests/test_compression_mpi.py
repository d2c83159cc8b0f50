"""Compression's SPMD tests over MPICH's network path, where "auto" turns it on."""

from __future__ import annotations

import pytest
from mpirun import ROOT, clean_env, mpirun

pytestmark = pytest.mark.mpi

NETWORK = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}
TESTS = ["-m", "geode_mpi", "-m", "pytest", "tests/mpi/test_compression.py", "-x", "-q"]
TESTS += ["-p", "no:cacheprovider", "-o", "addopts=", "--timeout=120"]
# every test of the file runs (none skipped over the network path): as many as it defines
COUNT = (ROOT / "tests/mpi/test_compression.py").read_text().count("\ndef test_")


@pytest.mark.parametrize("ranks", [2, 3])
def test_compression_over_the_network_path(ranks: int) -> None:
    result = mpirun(ranks, TESTS, timeout=240, env=clean_env(**NETWORK))
    assert result.returncode == 0, result.explain()
    assert f"{COUNT} passed" in result.stdout, result.explain()
