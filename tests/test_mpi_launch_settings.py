"""Settings geode_mpi makes before MPI starts, seen from outside: what a launch prints."""

from __future__ import annotations

import pytest
from mpirun import clean_env, mpirun

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_shared_segment_is_made_without_error_lines(ranks: int) -> None:
    """Open MPI's wheel printed "OSC UCX component priority set inside component query failed"
    from every rank when the segment was made, until geode_mpi left UCX out of its one-sided
    components (OMPI_MCA_osc, base/launch.py). On MPICH nothing is set and nothing printed."""
    script = ["-m", "geode_mpi", "tests/scripts/shared_segment_quiet.py"]
    env = clean_env()
    env.pop("OMPI_MCA_osc", None)  # geode_mpi's choice is tested, not one a shell exported
    result = mpirun(ranks, script, timeout=120, env=env)
    assert result.returncode == 0, result.explain()
    assert all(f"rank {r}: done" in result.stdout for r in range(ranks)), result.explain()
    assert "Error" not in result.stderr and "OSC" not in result.stderr, result.explain()
