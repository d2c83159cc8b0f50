"""Other MPIs than the MPICH wheel: which one a launch is, the path --info reports, and that the
CMA workaround and the wrong-PMI check treat Open MPI right (issue 16)."""

from __future__ import annotations

import pytest

from geode_mpi.base.launch import (
    CMA_VARIABLE,
    OSC_CHOICE,
    OSC_VARIABLE,
    WrongPMIError,
    check_slurm_pmi,
    library_family,
    mpi_family,
    prepare_mpi_environment,
    spans_hosts,
)
from geode_mpi.runner.info import open_mpi_shared_memory, transport_path, workarounds

MPICH = "MPICH Version: 4.0.2"
OPEN_MPI = "Open MPI v5.0.11, package: Open MPI builder Distribution, ident: 5.0.11"
# What Open MPI's mpirun sets in each of 4 ranks on one host.
OMPI_RANK = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "4", "PMIX_RANK": "1"}


def test_the_launcher_names_the_family() -> None:
    assert mpi_family(OMPI_RANK) == "openmpi"
    assert mpi_family({"MPI_LOCALNRANKS": "4", "PMI_RANK": "0"}) == "mpich"  # hydra


def test_the_library_version_names_the_family_whatever_launched_it() -> None:
    """What the transport reads once MPI is up (an mpi4py built on a site's Open MPI has no
    module name to tell it by, and its launcher may be srun)."""
    assert library_family(OPEN_MPI) == "openmpi"
    assert library_family(MPICH) == "mpich"
    assert library_family("MPICH Version:      5.0.2\nMPICH Release date: ...") == "mpich"
    assert library_family("Intel(R) MPI Library 2021.13 for Linux* OS") == "mpich"
    assert library_family("MVAPICH Version: 3.0") == "mpich"
    assert library_family("Cray MPICH version 8.1.28") == "mpich"
    assert library_family("Spectrum MPI 10.4") is None
    assert library_family("") is None


def test_without_a_launcher_the_module_mpi4py_would_load_names_it() -> None:
    # This venv has the mpich wheel, so mpi4py's ABI finder picks its MPICH module.
    assert mpi_family({"PMI_RANK": "0", "PMI_SIZE": "4"}) == "mpich"


def test_cma_stays_on_under_open_mpi_even_when_ranks_outnumber_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("geode_mpi.base.launch.usable_cores", lambda: 2)
    env = dict(OMPI_RANK)
    info = prepare_mpi_environment(env)
    assert CMA_VARIABLE not in env and not info.cma_disabled_by_geode
    assert info.local_ranks == 4 and info.under_launcher
    env = {"MPI_LOCALNRANKS": "4", "PMI_RANK": "0"}
    assert prepare_mpi_environment(env).cma_disabled_by_geode and env[CMA_VARIABLE] == "0"


@pytest.mark.parametrize(
    ("library", "hosts", "environ", "expected"),
    [
        (MPICH, 1, {}, "shared memory within a host"),
        (
            MPICH,
            3,
            {"MPIR_CVAR_CH4_NETMOD": "ofi"},
            "shared memory within a host, network between hosts (netmod ofi)",
        ),
        (
            MPICH,
            2,
            {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"},
            "network within a host too (MPIR_CVAR_NOLOCAL=1, netmod ofi, FI_PROVIDER=tcp)",
        ),
        (
            MPICH,
            1,
            {"MPICH_NOLOCAL": "1"},
            "network within a host too (MPICH_NOLOCAL=1, netmod default)",
        ),
        (MPICH, 1, {"MPICH_NOLOCAL": "1", "MPIR_CVAR_NOLOCAL": "0"}, "shared memory within a host"),
        (OPEN_MPI, 1, {}, "shared memory within a host (Open MPI's default components)"),
        (
            OPEN_MPI,
            2,
            {"OMPI_MCA_btl": "^sm"},
            "network within a host too (MCA btl=^sm), network between hosts",
        ),
        ("Some MPI 1.0", 1, {}, "not known for this library"),
    ],
)
def test_transport_path_follows_the_library_and_its_settings(
    library: str, hosts: int, environ: dict[str, str], expected: str
) -> None:
    assert transport_path(library, hosts, environ) == expected


@pytest.mark.parametrize(
    ("environ", "shared"),
    [
        ({}, True),
        ({"OMPI_MCA_btl": "self,vader,tcp"}, True),
        ({"OMPI_MCA_btl": "self,tcp"}, False),
        ({"OMPI_MCA_btl": "^vader"}, False),
        ({"OMPI_MCA_btl": "^openib"}, True),
        ({"OMPI_MCA_pml": "ucx", "OMPI_MCA_btl": "self,tcp"}, True),  # UCX's own shared memory
    ],
)
def test_open_mpi_shared_memory_reads_the_btl_list(environ: dict[str, str], shared: bool) -> None:
    assert open_mpi_shared_memory(environ) is shared


def test_workarounds_name_the_cma_setting_and_whether_it_matters() -> None:
    assert workarounds(MPICH, False) == "none"
    assert workarounds(MPICH, True) == (
        f"{CMA_VARIABLE}=0, MPICH's single copy off (ranks outnumber cores)"
    )
    assert workarounds(OPEN_MPI, True).endswith("(no effect: not MPICH)")
    assert workarounds(OPEN_MPI, False, True) == (
        f"{OSC_VARIABLE}={OSC_CHOICE}, Open MPI's UCX one-sided component left out (its "
        "error line at the shared segment)"
    )
    assert workarounds(MPICH, True, True).endswith("(no effect: not Open MPI)")


def test_open_mpi_leaves_out_its_ucx_one_sided_component_on_one_host() -> None:
    """Its query of UCX prints an error line on every rank when the shared segment is made."""
    env = dict(OMPI_RANK)
    assert prepare_mpi_environment(env).osc_chosen_by_geode and env[OSC_VARIABLE] == OSC_CHOICE
    mine = {**OMPI_RANK, OSC_VARIABLE: "ucx"}  # the user's choice stays
    assert not prepare_mpi_environment(mine).osc_chosen_by_geode and mine[OSC_VARIABLE] == "ucx"
    # Ranks on several hosts: a site's UCX may serve the user's own windows there.
    wide = {**OMPI_RANK, "OMPI_COMM_WORLD_SIZE": "8"}
    assert not prepare_mpi_environment(wide).osc_chosen_by_geode and OSC_VARIABLE not in wide
    hydra = {"MPI_LOCALNRANKS": "4", "PMI_RANK": "0", "PMI_SIZE": "4"}  # MPICH: not set
    assert not prepare_mpi_environment(hydra).osc_chosen_by_geode and OSC_VARIABLE not in hydra
    alone: dict[str, str] = {}  # the embedded world: MPI does not start, nothing is asked
    assert not prepare_mpi_environment(alone).osc_chosen_by_geode and alone == {}


@pytest.mark.parametrize(
    ("environ", "wide"),
    [
        ({}, False),
        (OMPI_RANK, False),
        ({**OMPI_RANK, "OMPI_COMM_WORLD_SIZE": "8"}, True),
        ({"MPI_LOCALNRANKS": "2", "PMI_SIZE": "4"}, True),
        ({"MPI_LOCALNRANKS": "4", "PMI_SIZE": "4"}, False),
        ({"SLURM_STEP_NUM_NODES": "2", "PMIX_RANK": "0"}, True),
        ({"SLURM_STEP_NUM_NODES": "1", "PMIX_RANK": "0"}, False),
    ],
)
def test_spans_hosts_reads_the_launchers_counts(environ: dict[str, str], wide: bool) -> None:
    assert spans_hosts(environ) is wide


def test_open_mpi_ranks_pass_the_wrong_pmi_check() -> None:
    # srun --mpi=pmix starting Open MPI ranks: the world is the step's size.
    pmix = {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "1", "PMIX_RANK": "1"}
    check_slurm_pmi(pmix, 4)
    # Open MPI's mpirun inside an allocation: its ranks inherit the daemons' step (2 tasks).
    check_slurm_pmi({**OMPI_RANK, "SLURM_STEP_NUM_TASKS": "2"}, 4)


def test_open_mpi_singletons_under_a_foreign_srun_are_refused() -> None:
    # An Open MPI built without SLURM's PMI, under srun --mpi=pmi2: each task is a world of 1.
    pmi2 = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0", "PMI_RANK": "0", "PMI_SIZE": "2"}
    with pytest.raises(WrongPMIError, match="found SLURM_STEP_NUM_TASKS=2, MPI world size 1"):
        check_slurm_pmi(pmi2, 1)


@pytest.mark.parametrize(
    ("environ", "warned"),
    [
        ({"PRTE_LAUNCHED": "1", "OMPI_COMM_WORLD_SIZE": "2"}, True),
        ({"PMI_SIZE": "2"}, False),
        ({}, False),
    ],
)
def test_info_warns_of_open_mpis_sigkill_after_sigterm(
    environ: dict[str, str], warned: bool
) -> None:
    from geode_mpi.runner.info import signal_warning

    warning = signal_warning(environ)
    assert (warning is not None) is warned
    if warning is not None:
        assert warning.startswith("SIGTERM: ") and "0.25 s later" in warning
        assert "srun --mpi=pmix" in warning and "docs/mpis.md" in warning
