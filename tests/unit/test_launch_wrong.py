"""A launcher of another MPI than the one mpi4py loaded (MPICH's mpiexec running the Open MPI
wheel's python): every rank is a world of one. Refused once, with the fix, not run N times."""

from __future__ import annotations

import importlib

import pytest

from geode_mpi import transport
from geode_mpi.base.launch import WrongPMIError, check_launch, reports_launch_error
from geode_mpi.runner import info

run = importlib.import_module("geode_mpi.runner.run")  # (the package's `run` is the function)

# What MPICH's hydra sets in rank 1 of `mpiexec -n 2` (MPICH 4.3), and Open MPI 5's mpirun.
HYDRA = {"PMI_RANK": "1", "PMI_SIZE": "2", "PMI_FD": "7", "MPI_LOCALNRANKS": "2"}
OPEN_MPI = {
    "OMPI_COMM_WORLD_RANK": "0",
    "OMPI_COMM_WORLD_SIZE": "3",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "3",
    "PMIX_RANK": "0",
}
LIBRARY = "Open MPI v5.0.8, package: Open MPI"


def test_hydra_ranks_that_mpi_sees_alone_are_refused_with_the_fix() -> None:
    with pytest.raises(WrongPMIError) as caught:
        check_launch(HYDRA, 1, LIBRARY)
    text = str(caught.value)
    assert text.startswith("MPICH's mpiexec (hydra) started 2 ranks but MPI sees 1 rank per")
    assert "mpi4py loaded another MPI library than the one this launcher is for" in text
    assert "`python -m mpi4py --mpi-library`" in text
    assert "set GEODE_TRANSPORT=inproc" in text
    assert text.endswith(f"(geode_mpi found PMI_SIZE=2, MPI world size 1, MPI library {LIBRARY})")
    assert (caught.value.step_tasks, caught.value.world_size) == (2, 1)
    assert caught.value.launcher == "MPICH's mpiexec (hydra)"


def test_open_mpi_launcher_is_named() -> None:
    with pytest.raises(WrongPMIError, match=r"^Open MPI's mpirun started 3 ranks .*"):
        check_launch(OPEN_MPI, 1, "MPICH Version: 4.3.0")


def test_worlds_of_the_launched_size_and_of_one_pass() -> None:
    check_launch(HYDRA, 2, LIBRARY)
    check_launch({**HYDRA, "PMI_SIZE": "1"}, 1, LIBRARY)  # mpiexec -n 1
    check_launch({**OPEN_MPI, "OMPI_COMM_WORLD_SIZE": "1"}, 1)
    check_launch({}, 1)  # python job.py
    check_launch({**HYDRA, "GEODE_TRANSPORT": "inproc"}, 1)  # copies on purpose
    with pytest.raises(WrongPMIError, match="PMI_SIZE=2"):
        check_launch({**HYDRA, "GEODE_TRANSPORT": "mpi"}, 1)


def test_srun_keeps_its_own_message() -> None:
    step = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0", **HYDRA}
    with pytest.raises(WrongPMIError, match="^SLURM started 2 tasks") as caught:
        check_launch(step, 1, LIBRARY)
    assert caught.value.launcher is None


def test_only_the_launchers_rank_0_reports() -> None:
    assert not reports_launch_error(HYDRA)
    assert reports_launch_error({**HYDRA, "PMI_RANK": "0"})
    assert reports_launch_error(OPEN_MPI) and reports_launch_error({})
    assert not reports_launch_error({**OPEN_MPI, "SLURM_PROCID": "1"})


@pytest.fixture
def world_of_one(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """MPI's answer under a foreign launcher (a world of one), with hydra's variables set."""
    for name in ("GEODE_TRANSPORT", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in HYDRA.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(run, "under_launcher", lambda: False)
    monkeypatch.setattr(transport, "under_launcher", lambda: False)
    return monkeypatch


def test_runner_prints_the_error_once_and_exits_2(
    world_of_one: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        run.world()
    assert caught.value.code == 2
    assert capsys.readouterr().err == "", "rank 1 of the launcher says nothing"
    world_of_one.setenv("PMI_RANK", "0")
    with pytest.raises(SystemExit):
        run.world()
    err = capsys.readouterr().err
    assert err.startswith("geode_mpi: error: MPICH's mpiexec (hydra) started 2 ranks")
    assert err.count("geode_mpi: error:") == 1


def test_open_world_refuses(world_of_one: pytest.MonkeyPatch) -> None:
    with pytest.raises(WrongPMIError, match="started 2 ranks but MPI sees 1"):
        transport.open_world()


def test_info_says_so_instead_of_the_embedded_world(world_of_one: pytest.MonkeyPatch) -> None:
    line = info.ranks_line(1, LIBRARY)
    assert line.startswith("ranks: 1 (geode_mpi: error: MPICH's mpiexec (hydra) started 2")
    assert "embedded world" not in line
    world_of_one.setenv("PMI_SIZE", "1")
    assert info.ranks_line(1, LIBRARY) == "ranks: 1 (embedded world: all nodes in this process)"
    assert info.ranks_line(2, LIBRARY) == "ranks: 2"
