"""maybe_checkpoint(timeout=) bounds its wait for the other ranks, as checkpoint() does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mpirun import load_slack, mpirun

pytestmark = pytest.mark.mpi


def test_maybe_checkpoint_times_out_waiting_for_the_other_ranks(tmp_path: Path) -> None:
    """The vote was a blocking reduction without a deadline: rank 0 waited until the other
    rank called it (20 s in the reviewer's probe), whatever its timeout."""
    script = "tests/scripts/maybe_checkpoint_alone.py"
    result = mpirun(2, [script, str(tmp_path / "ck")], timeout=60)
    assert not result.timed_out, result.explain()
    found = re.search(r"raised after ([0-9.]+) s: (.*)", result.stdout)
    assert found is not None, result.explain()
    assert found.group(2) == (
        "maybe_checkpoint() on rank 0 timed out after 1 s waiting for the other ranks to call it"
    )
    assert 1.0 <= float(found.group(1)) < 1.0 + 2.0 * load_slack(), result.explain()
