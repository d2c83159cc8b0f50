"""Launch detection, and the MPICH single-copy setting for oversubscribed jobs."""

from __future__ import annotations

import pytest

from geode_mpi.base.launch import (
    CMA_VARIABLE,
    launcher_rank,
    prepare_mpi_environment,
    under_launcher,
)
from geode_mpi.transport import Backoff


def test_no_launcher_variables_means_embedded() -> None:
    assert not under_launcher({})
    assert under_launcher({"PMI_RANK": "0"})
    assert under_launcher({"GEODE_TRANSPORT": "mpi"})
    assert not under_launcher({"PMI_RANK": "0", "GEODE_TRANSPORT": "inproc"})
    with pytest.raises(ValueError, match="GEODE_TRANSPORT must be 'mpi' or 'inproc', got 'tcp'"):
        under_launcher({"GEODE_TRANSPORT": "tcp"})


def test_cma_is_turned_off_only_when_ranks_outnumber_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("geode_mpi.base.launch.usable_cores", lambda: 2)
    env: dict[str, str] = {"MPI_LOCALNRANKS": "4", "PMI_RANK": "0"}
    info = prepare_mpi_environment(env)
    assert env[CMA_VARIABLE] == "0" and info.cma_disabled_by_geode
    env = {"MPI_LOCALNRANKS": "2", "PMI_RANK": "0"}
    prepare_mpi_environment(env)
    assert CMA_VARIABLE not in env
    env = {"MPI_LOCALNRANKS": "8", CMA_VARIABLE: "1"}
    prepare_mpi_environment(env)
    assert env[CMA_VARIABLE] == "1", "a user's own choice is kept"


def test_backoff_sleeps_longer_when_idle_and_resets() -> None:
    backoff = Backoff(spin=0, yield_time=0, min_sleep=1e-5, max_sleep=4e-5)
    for _ in range(5):
        backoff.pause()
    assert backoff._sleep == 4e-5
    backoff.reset()
    assert backoff._sleep == 1e-5


def test_cores_follow_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    from geode_mpi.base import launch

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert launch.usable_cores() == 1
    env: dict[str, str] = {"MPI_LOCALNRANKS": "2"}
    prepare_mpi_environment(env)
    assert env[CMA_VARIABLE] == "0", "2 ranks pinned to 1 core are oversubscribed"


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({}, None),
        ({"PMI_RANK": "3", "PMI_SIZE": "8"}, (3, 8)),  # MPICH's hydra, srun --mpi=pmi2
        ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4"}, (1, 4)),  # Open MPI
        ({"PMI_RANK": "2"}, (2, 1)),  # a size the launcher did not give counts as 1
        ({"PMI_RANK": "x", "OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "6"}, (5, 6)),
        ({"SLURM_PROCID": "4", "SLURM_NTASKS": "8"}, None),  # srun without a PMI: not MPI's
    ],
)
def test_launcher_rank_reads_what_launchers_set(
    environ: dict[str, str], expected: tuple[int, int] | None
) -> None:
    assert launcher_rank(environ) == expected


def test_idle_waits_yield_longer_with_a_core_per_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    from geode_mpi.base import backoff, launch

    monkeypatch.setattr("geode_mpi.base.launch.usable_cores", lambda: 2)
    for local, own_core, yield_time in (
        ("2", True, backoff.OWN_CORE_YIELD),
        ("4", False, backoff.IDLE_YIELD),
        (None, False, backoff.IDLE_YIELD),  # nothing says: as if oversubscribed
    ):
        env = {"PMI_RANK": "0"} if local is None else {"MPI_LOCALNRANKS": local}
        info = prepare_mpi_environment(env)
        assert info.core_per_rank is own_core
        assert info.oversubscribed is (local == "4")
        monkeypatch.setattr(launch, "_info", info)
        monkeypatch.setattr(backoff, "_idle_yield", None)
        assert Backoff().yield_time == yield_time
        assert Backoff(yield_time=0.5).yield_time == 0.5
    assert backoff.OWN_CORE_YIELD > 10 * backoff.IDLE_YIELD


def test_srun_steps_count_ranks_per_node_not_the_world(monkeypatch: pytest.MonkeyPatch) -> None:
    """srun --mpi=pmi2 sets PMI_SIZE to the world's size; its tasks per node say how many share
    this host (64 nodes of 2 tasks on 2 cores each: a core per rank, not oversubscribed)."""
    from geode_mpi.base.launch import slurm_tasks_per_node

    monkeypatch.setattr("geode_mpi.base.launch.usable_cores", lambda: 2)
    assert slurm_tasks_per_node("2(x3),1") == 2
    assert slurm_tasks_per_node("4") == 4
    assert slurm_tasks_per_node("") is None
    assert slurm_tasks_per_node("2(xz)") is None
    step = {"PMI_RANK": "0", "PMI_SIZE": "128", "SLURM_STEP_TASKS_PER_NODE": "2(x64)"}
    assert prepare_mpi_environment(step).core_per_rank
    step["SLURM_STEP_TASKS_PER_NODE"] = "3(x42),2"
    assert prepare_mpi_environment(step).oversubscribed
    del step["SLURM_STEP_TASKS_PER_NODE"]
    assert prepare_mpi_environment(step).oversubscribed, "the world's size, without srun's"
