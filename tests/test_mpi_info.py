"""``--info`` under mpiexec names the MPI, the path its messages take, and the workarounds."""

from __future__ import annotations

import pytest
from mpirun import clean_env, mpirun

pytestmark = pytest.mark.mpi

NETWORK = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}
# Settings that decide what --info reports, left out of the environment a test inherits: each
# test names its own. A shell that had exported one (MPIR_CVAR_CH4_CMA_ENABLE=0 for a
# benchmark, the network path's variables) made these tests fail, alone too: geode_mpi keeps a
# user's choice, and says so ("workarounds: none"; the network path).
CHOSEN = (*NETWORK, "MPIR_CVAR_CH4_CMA_ENABLE", "OMPI_MCA_osc")


def info(ranks: int, **environ: str) -> dict[str, str]:
    """``--info``'s lines at ``ranks`` ranks, as {label: value}."""
    env = {name: value for name, value in clean_env().items() if name not in CHOSEN}
    result = mpirun(ranks, ["-m", "geode_mpi", "--info"], timeout=120, env={**env, **environ})
    assert result.returncode == 0, result.explain()
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)


def test_info_over_shared_memory_at_2_ranks() -> None:
    lines = info(2)
    assert lines["MPI library"].startswith("MPICH Version: ")
    assert lines["ranks"] == "2" and lines["shared-memory groups"] == "1 (ranks in rank 0's: 2)"
    assert lines["transport path"] == "shared memory within a host"
    check_workarounds(lines, ranks=2)


def test_info_over_the_network_path_at_3_ranks() -> None:
    lines = info(3, **NETWORK)
    assert lines["transport path"] == (
        "network within a host too (MPIR_CVAR_NOLOCAL=1, netmod ofi, FI_PROVIDER=tcp)"
    )
    assert lines["shared-memory groups"] == "3 (ranks in rank 0's: 1)"  # no rank shares memory
    check_workarounds(lines, ranks=3)


def test_info_keeps_and_reports_a_users_own_single_copy_setting_at_3_ranks() -> None:
    lines = info(3, MPIR_CVAR_CH4_CMA_ENABLE="1")
    assert lines["MPIR_CVAR_CH4_CMA_ENABLE"] == "1" and lines["workarounds"] == "none"


def check_workarounds(lines: dict[str, str], ranks: int) -> None:
    """geode_mpi turns MPICH's single copy off only where ranks outnumber cores."""
    cores = int(lines["cores"].split(",")[0])
    assert lines["workarounds"] == (
        "MPIR_CVAR_CH4_CMA_ENABLE=0, MPICH's single copy off (ranks outnumber cores)"
        if ranks > cores
        else "none"
    )


def test_info_warns_where_mpirun_kills_the_ranks_right_after_a_sigterm() -> None:
    """Open MPI 5's mpirun (PRRTE) kills the ranks 0.25 s after passing a SIGTERM on: --info
    says so there (the .ci/other-mpi Open MPI legs), and nowhere else."""
    lines = info(2)
    if lines["MPI library"].startswith("Open MPI v5"):
        assert "0.25 s later" in lines["SIGTERM"] and "srun --mpi=pmix" in lines["SIGTERM"]
    else:
        assert "SIGTERM" not in lines


def test_info_without_shared_memory_counts_each_rank_alone_on_any_mpi() -> None:
    """MPICH's network path and Open MPI without its ``sm`` component (each ignores the
    other's settings): no rank shares memory with another, and --info says so alike (Open
    MPI said 1 group of 2 ranks); MPICH's single-copy setting is named under MPICH only."""
    lines = info(2, **NETWORK, OMPI_MCA_btl="^sm")
    assert lines["transport path"].startswith("network within a host too")
    assert lines["shared-memory groups"] == "2 (ranks in rank 0's: 1)"
    assert ("MPIR_CVAR_CH4_CMA_ENABLE" in lines) == lines["MPI library"].startswith("MPICH")
