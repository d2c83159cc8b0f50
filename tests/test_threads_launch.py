"""Threads at an MPI thread level too low for them: refused at once, with the rule."""

from __future__ import annotations

import pytest
from mpirun import mpirun

pytestmark = pytest.mark.mpi


def test_a_call_from_another_thread_is_refused_at_thread_level_funneled() -> None:
    result = mpirun(2, ["tests/scripts/threads_funneled.py"], timeout=120)
    assert result.returncode == 0, result.explain()
    if "is enough: nothing to refuse" in result.stdout:
        pytest.skip("this MPI library gives more than 'funneled' when asked for it")
    for rank in (0, 1):
        assert (
            f"rank {rank}: a geode_mpi call from thread 'worker': MPI was started at thread "
            "level 'funneled', so only the main thread may call geode_mpi"
        ) in result.stdout, result.explain()
    # The main thread's calls still work: both messages arrived.
    assert "rank 1 received ['from the main thread', 'from the main thread']" in result.stdout


def test_geodes_in_threads_share_one_gate_at_thread_level_serialized() -> None:
    # 'serialized' lets one thread into MPI at a time in the whole process: each Geode
    # with its own gate let two threads in at once (MPICH: invalid requests, garbled or lost
    # messages, hangs).
    result = mpirun(3, ["tests/scripts/threads_serialized.py"], timeout=120)
    assert result.returncode == 0, result.explain()
    if "is not 'serialized'" in result.stdout:
        pytest.skip("this MPI library gives another level than 'serialized' when asked for it")
    for rank in (0, 1, 2):
        assert f"rank {rank}: one gate: True" in result.stdout, result.explain()
        assert f"rank {rank}: [(0, 'ok'), (1, 'ok'), (2, 'ok')]" in result.stdout, result.explain()
