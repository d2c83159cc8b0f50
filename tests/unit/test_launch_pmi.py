"""The wrong-PMI check: srun tasks that MPI sees as worlds of one rank are refused, nothing else."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mpirun import ROOT, clean_env

from geode_mpi import GeodeError
from geode_mpi.base.launch import WrongPMIError, check_slurm_pmi

# What srun sets in each task of `srun -n 4` (measured with SLURM 22.05), by --mpi= plugin.
SRUN_STEP = {"SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "4", "SLURM_PROCID": "2"}
SRUN_PMI2 = {**SRUN_STEP, "PMI_FD": "11", "PMI_RANK": "2", "PMI_SIZE": "4"}
# A batch script: the allocation's task count, but no step of several tasks.
BATCH = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_NPROCS": "4", "SLURM_PROCID": "0"}
# A rank that mpiexec (hydra) started inside an allocation: the step is hydra's proxies.
HYDRA_IN_STEP = {
    "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "0",
    "PMI_FD": "5",
    "PMI_RANK": "0",
    "MPI_LOCALNRANKS": "1",
}


def test_plain_srun_without_a_pmi_is_refused_with_the_fix() -> None:
    with pytest.raises(WrongPMIError) as caught:
        check_slurm_pmi(SRUN_STEP, 1)
    text = str(caught.value)
    assert text.startswith("SLURM started 4 tasks but MPI sees 1 rank per process: srun is using")
    assert "For MPICH use `srun --mpi=pmi2`, for Open MPI `srun --mpi=pmix`" in text
    assert "or launch with mpiexec inside the allocation" in text
    assert "(geode_mpi found SLURM_STEP_NUM_TASKS=4, MPI world size 1, no MPI launcher" in text
    assert (caught.value.step_tasks, caught.value.world_size) == (4, 1)
    assert isinstance(caught.value, GeodeError) and isinstance(caught.value, RuntimeError)


def test_a_pmi_the_library_ignores_is_refused() -> None:
    """srun --mpi=pmi2 with Open MPI: PMI says 4 ranks, the library started a singleton."""
    with pytest.raises(
        WrongPMIError, match=r"SLURM_STEP_NUM_TASKS=4, MPI world size 1, PMI_SIZE=4"
    ):
        check_slurm_pmi(SRUN_PMI2, 1)


def test_a_working_pmi_passes() -> None:
    check_slurm_pmi(SRUN_PMI2, 4)


def test_a_batch_script_running_python_alone_passes() -> None:
    check_slurm_pmi(BATCH, 1)


def test_a_one_task_step_passes() -> None:
    check_slurm_pmi({**SRUN_STEP, "SLURM_STEP_NUM_TASKS": "1"}, 1)


def test_mpiexec_starting_one_rank_over_several_proxies_passes() -> None:
    check_slurm_pmi({**HYDRA_IN_STEP, "PMI_SIZE": "1"}, 1)
    check_slurm_pmi({**SRUN_STEP, "OMPI_COMM_WORLD_SIZE": "1"}, 1)


def test_a_launcher_that_started_more_ranks_than_mpi_sees_is_refused() -> None:
    with pytest.raises(WrongPMIError, match="PMI_SIZE=3"):
        check_slurm_pmi({**HYDRA_IN_STEP, "PMI_SIZE": "3"}, 1)


def test_independent_copies_on_purpose_pass() -> None:
    check_slurm_pmi({**SRUN_STEP, "GEODE_TRANSPORT": "inproc"}, 1)
    with pytest.raises(WrongPMIError, match="set GEODE_TRANSPORT=inproc"):
        check_slurm_pmi({**SRUN_STEP, "GEODE_TRANSPORT": "mpi"}, 1)


def test_no_slurm_or_odd_values_pass() -> None:
    check_slurm_pmi({}, 1)
    check_slurm_pmi({"SLURM_STEP_NUM_TASKS": ""}, 1)
    check_slurm_pmi({"SLURM_STEP_NUM_TASKS": "x"}, 1)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_geode_refuses_in_a_step_of_several_tasks() -> None:
    result = _run("from geode_mpi import Geode; Geode()", **SRUN_STEP)
    assert result.returncode == 1
    assert "WrongPMIError: SLURM started 4 tasks but MPI sees 1 rank" in result.stderr


def test_runner_prints_the_error_once_and_exits_2() -> None:
    code = "import sys; from geode_mpi.runner import main; sys.exit(main(['jobs/hello.py']))"
    first = _run(code, **{**SRUN_STEP, "SLURM_PROCID": "0"})
    assert first.returncode == 2, first.stderr
    assert first.stderr.startswith("geode_mpi: error: SLURM started 4 tasks but MPI sees 1 rank")
    assert "Hello" not in first.stdout
    other = _run(code, **SRUN_STEP)
    assert (other.returncode, other.stderr) == (2, ""), "only task 0 prints the error"
    alone = _run(code, **BATCH)
    assert (alone.returncode, alone.stdout) == (0, "Hello, World!\n"), alone.stderr
