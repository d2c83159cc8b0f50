"""How this process was launched, and the MPI settings that must be made before MPI starts."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, MutableMapping

from geode_mpi.base.record import Frozen, fill
from geode_mpi.errors import WrongPMIError as WrongPMIError  # old import path still works

# Set by MPI launchers (MPICH hydra, Open MPI, PMIx, SLURM's PMI plugins) in every rank.
LAUNCHER_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "PMI_FD",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "HYDI_CONTROL_FD",
)
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_SIZE", "SLURM_NTASKS")
CMA_VARIABLE = "MPIR_CVAR_CH4_CMA_ENABLE"
# Open MPI's one-sided (RMA) components. Its UCX one, asked about every window (the node's
# shared segment, transport/shared.py), prints "OSC UCX component priority set inside component
# query failed" on each rank when UCX has no transport for RMA (the wheel on one host, TCP):
# harmless (open-mpi/ompi#14086), but users see it. Leaving UCX out of the choice avoids it;
# the segment is the shared-memory component's (sm) whatever is chosen.
OSC_VARIABLE = "OMPI_MCA_osc"
OSC_CHOICE = "^ucx"
MPICH_FAMILY = ("MPICH", "Intel", "MVAPICH")  # libraries that read MPICH's MPIR_CVAR_* settings
# Set in every rank by Open MPI's mpirun, and by MPICH's hydra: which MPI started the job.
OPEN_MPI_LAUNCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE")
HYDRA_LAUNCH_VARIABLES = ("MPI_LOCALNRANKS", "HYDI_CONTROL_FD")
MODE_VARIABLE = "GEODE_TRANSPORT"  # "mpi" or "inproc" forces a choice; unset means detect
# Tasks srun started in this job step. Deliberately not SLURM_NTASKS: inside a batch script that
# is the allocation's task count, while the script itself is one process.
STEP_TASKS_VARIABLE = "SLURM_STEP_NUM_TASKS"
# Tasks per node of srun's job step ("2(x3),1"): under srun --mpi=pmi2/pmix no MPI variable
# says how many ranks share this host (PMI_SIZE is the whole world's).
STEP_TASKS_PER_NODE_VARIABLE = "SLURM_STEP_TASKS_PER_NODE"
# World sizes an MPI launcher hands each rank before it starts: PMI_SIZE from MPICH's hydra and
# from srun --mpi=pmi2, OMPI_COMM_WORLD_SIZE from Open MPI's mpirun.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
# (rank, size) as MPICH's hydra and srun --mpi=pmi2, and Open MPI's mpirun, set them.
LAUNCHER_RANK_VARIABLES = (
    ("PMI_RANK", "PMI_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
)


class LaunchInfo(Frozen):
    """What the environment says about this launch."""

    under_launcher: bool
    local_ranks: int | None
    cores: int
    cma_disabled_by_geode: bool
    osc_chosen_by_geode: bool
    __match_args__ = (
        "under_launcher",
        "local_ranks",
        "cores",
        "cma_disabled_by_geode",
        "osc_chosen_by_geode",
    )

    def __init__(
        self,
        under_launcher: bool,
        local_ranks: int | None,
        cores: int,
        cma_disabled_by_geode: bool,
        osc_chosen_by_geode: bool = False,
    ) -> None:
        fill(self, under_launcher, local_ranks, cores, cma_disabled_by_geode, osc_chosen_by_geode)

    @property
    def oversubscribed(self) -> bool:
        """More ranks on this host than cores for them (known only when the launcher says
        how many ranks share the host)."""
        return self.local_ranks is not None and self.local_ranks > self.cores

    @property
    def core_per_rank(self) -> bool:
        """Every rank on this host has a core of its own (as the launcher says)."""
        return self.local_ranks is not None and self.local_ranks <= self.cores


_info: LaunchInfo | None = None


def _local_ranks(environ: MutableMapping[str, str]) -> int | None:
    for name in LOCAL_SIZE_VARIABLES:
        if name == "PMI_SIZE":  # the world's size: srun's count per node first, if any
            per_node = slurm_tasks_per_node(environ.get(STEP_TASKS_PER_NODE_VARIABLE, ""))
            if per_node is not None:
                return per_node
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def slurm_tasks_per_node(value: str) -> int | None:
    """The most tasks srun put on one node of the step, from ``SLURM_STEP_TASKS_PER_NODE``
    ("2(x3),1": three nodes of 2 tasks and one of 1); None if ``value`` is not that."""
    most = 0
    for part in value.split(","):
        count, _, repeat = part.partition("(x")
        if not count.isdigit() or (repeat and not repeat.rstrip(")").isdigit()):
            return None
        most = max(most, int(count))
    return most or None


def launcher_rank(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """(rank, size) that an MPI launcher gave this process, read without starting MPI; None
    when no launcher did."""
    environ = os.environ if environ is None else environ
    for rank_name, size_name in LAUNCHER_RANK_VARIABLES:
        rank, size = environ.get(rank_name, ""), environ.get(size_name, "")
        if rank.isdigit():
            return int(rank), int(size) if size.isdigit() else 1
    return None


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: taskset, cpusets, SLURM's cgroups)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def mpi_family(environ: Mapping[str, str] | None = None) -> str | None:
    """ "openmpi" or "mpich" (MPICH and its derivatives), as far as it can be told before MPI
    starts; None when it cannot.

    The launcher says it first (Open MPI's mpirun, MPICH's hydra). Else (srun, no launcher)
    the module mpi4py would load does: the mpi4py wheel holds one per MPI ABI and finds the
    one of the library it can load (that loads the library; it does not initialise MPI). An
    mpi4py built on a site's MPI has a single module, which names no family.
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in OPEN_MPI_LAUNCH_VARIABLES):
        return "openmpi"
    if any(name in env for name in HYDRA_LAUNCH_VARIABLES):
        return "mpich"
    try:
        spec = importlib.util.find_spec("mpi4py.MPI")
    except (ImportError, RuntimeError, ValueError):  # no mpi4py, or no library it can load
        return None
    module = os.path.basename(spec.origin or "") if spec is not None else ""
    return next((name for name in ("openmpi", "mpich") if f".{name}." in module), None)


def library_family(version: str) -> str | None:
    """ "openmpi" or "mpich" (MPICH and its derivatives) from ``MPI.Get_library_version()``;
    None for another library. Read once MPI is up, this is surer than `mpi_family`, which
    guesses before it starts (and cannot tell what an mpi4py built on a site's MPI loads)."""
    if version.lstrip("\0 ").startswith("Open MPI"):
        return "openmpi"
    if any(name in version for name in MPICH_FAMILY):
        return "mpich"
    return None


def spans_hosts(environ: Mapping[str, str]) -> bool:
    """Whether the launcher says this job's ranks run on more than one host (False when it
    says they share one, or says nothing: a world of one)."""
    pairs = (
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_SIZE"),  # Open MPI's mpirun
        ("MPI_LOCALNRANKS", "PMI_SIZE"),  # MPICH's hydra
    )
    for local, world in pairs:
        here, everywhere = environ.get(local, ""), environ.get(world, "")
        if here.isdigit() and everywhere.isdigit():
            return int(here) < int(everywhere)
    nodes = environ.get("SLURM_STEP_NUM_NODES", "")  # srun --mpi=pmix
    return nodes.isdigit() and int(nodes) > 1


def under_launcher(environ: MutableMapping[str, str] | None = None) -> bool:
    """True when an MPI launcher started this process (or GEODE_TRANSPORT=mpi forces MPI)."""
    env = os.environ if environ is None else environ
    mode = env.get(MODE_VARIABLE, "").strip().lower()
    if mode in ("mpi", "inproc"):
        return mode == "mpi"
    if mode:
        raise ValueError(f"{MODE_VARIABLE} must be 'mpi' or 'inproc', got {mode!r}")
    return any(name in env for name in LAUNCHER_VARIABLES)


def prepare_mpi_environment(environ: MutableMapping[str, str] | None = None) -> LaunchInfo:
    """Make settings that MPI reads at initialisation; call before importing mpi4py.MPI.

    When more ranks share this machine than it has cores, MPICH's single-copy (CMA) path can
    hang (docs/debugging.md), so it is turned off unless the user chose a setting, or the MPI
    is known to be Open MPI (which has no such setting and was not seen to hang).

    Where MPI will start, unless the MPI is known to be MPICH (which ignores the setting), the
    user chose Open MPI's one-sided components, or the ranks span hosts (where a site's UCX may
    serve the user's own windows), Open MPI's UCX one-sided component is left out
    (`OSC_VARIABLE`): it prints an error line on every rank when the node's shared segment is
    made.
    """
    global _info
    if environ is None and _info is not None:
        return _info
    env = os.environ if environ is None else environ
    local = _local_ranks(env)
    cores = usable_cores()
    disable = (
        CMA_VARIABLE not in env
        and local is not None
        and local > cores
        and mpi_family(env) != "openmpi"
    )
    if disable:
        env[CMA_VARIABLE] = "0"
    launched = under_launcher(env)
    # Only where MPI will start (asking mpi_family may load the MPI library: not in the
    # embedded world).
    osc = (
        launched and OSC_VARIABLE not in env and not spans_hosts(env) and mpi_family(env) != "mpich"
    )
    if osc:
        env[OSC_VARIABLE] = OSC_CHOICE
    info = LaunchInfo(launched, local, cores, disable, osc)
    if environ is None:
        _info = info
    return info


def launch_info() -> LaunchInfo:
    """The LaunchInfo recorded when geode_mpi prepared MPI (or a fresh reading)."""
    return _info if _info is not None else prepare_mpi_environment({**os.environ})


def check_slurm_pmi(environ: Mapping[str, str], world_size: int) -> None:
    """Refuse a job that srun started with a PMI its MPI library does not speak.

    Such a job runs every task as rank 0 of a world of one, each doing the whole job alone.
    Nothing is refused outside an srun step of several tasks: not ``python job.py`` in a batch
    script (the batch step has no SLURM_STEP_NUM_TASKS), not ranks started by ``mpiexec``
    inside the allocation (their launcher says how many ranks it started), and not copies
    started on purpose with GEODE_TRANSPORT=inproc.

    Args:
        environ: the environment as the launcher left it, read before MPI initialised.
        world_size: the size of MPI_COMM_WORLD (1 when no MPI launcher started the process).

    Raises:
        WrongPMIError: srun started more than one task and ``world_size`` is 1.
    """
    tasks = environ.get(STEP_TASKS_VARIABLE, "")
    if world_size != 1 or not tasks.isdigit() or int(tasks) <= 1:
        return
    if environ.get(MODE_VARIABLE, "").strip().lower() == "inproc":
        return
    sizes = {name: environ[name] for name in LAUNCHER_SIZE_VARIABLES if name in environ}
    if sizes and all(value == "1" for value in sizes.values()):
        return  # mpiexec started one rank; the step's tasks are its per-node daemons
    said = "".join(f", {name}={value}" for name, value in sizes.items())
    if not any(name in environ for name in LAUNCHER_VARIABLES):
        said += ", no MPI launcher variables: each task would run the whole job alone"
    found = f"{STEP_TASKS_VARIABLE}={tasks}, MPI world size {world_size}{said}"
    raise WrongPMIError(int(tasks), world_size, found)


def library_line(version: str) -> str:
    """The first line of ``MPI.Get_library_version()``, spaces and Open MPI's NUL byte
    dropped: "Open MPI v5.0.8, package: ...", "MPICH Version: 4.3.0"."""
    lines = version.replace("\0", "").splitlines() or [""]
    return " ".join(lines[0].split())


def launcher_name(environ: Mapping[str, str]) -> str:
    """Which launcher started this process, as far as its variables tell."""
    if any(name in environ for name in OPEN_MPI_LAUNCH_VARIABLES):
        return "Open MPI's mpirun"
    if any(name in environ for name in HYDRA_LAUNCH_VARIABLES):
        return "MPICH's mpiexec (hydra)"
    return "an MPI launcher"


def check_launch(environ: Mapping[str, str], world_size: int, library: str = "") -> None:
    """Refuse ranks that srun or an MPI launcher started but that MPI sees as worlds of one.

    `check_slurm_pmi` first (srun's wrong PMI); then any launcher: ``mpiexec -n 2`` of one
    MPI running a python whose mpi4py loads another (MPICH's hydra with the Open MPI wheel)
    starts ranks that each run the whole job alone. Nothing is refused when every size the
    launcher gave is 1, nor with GEODE_TRANSPORT=inproc.

    Args:
        environ: the environment as the launcher left it, read before MPI initialised.
        world_size: the size of MPI_COMM_WORLD (1 when no MPI launcher started the process).
        library: the MPI library mpi4py loaded (`library_line`), "" when MPI did not start.

    Raises:
        WrongPMIError: srun or the launcher started more than one rank and ``world_size``
            is 1; its ``launcher`` names the launcher (None for srun).
    """
    check_slurm_pmi(environ, world_size)
    if world_size != 1 or environ.get(MODE_VARIABLE, "").strip().lower() == "inproc":
        return
    sizes = {n: environ[n] for n in LAUNCHER_SIZE_VARIABLES if environ.get(n, "").isdigit()}
    started = max((int(value) for value in sizes.values()), default=1)
    if started <= 1:
        return
    said = ", ".join(f"{name}={value}" for name, value in sizes.items())
    loaded = f", MPI library {library}" if library else ""
    found = f"{said}, MPI world size {world_size}{loaded}"
    raise WrongPMIError(started, world_size, found, launcher=launcher_name(environ))


def reports_launch_error(environ: Mapping[str, str]) -> bool:
    """Whether this process prints a launch error for the job: srun's task 0 and the
    launcher's rank 0 (each of the others is rank 0 of a world of one too)."""
    rank = launcher_rank(environ)
    return environ.get("SLURM_PROCID", "0") == "0" and (rank is None or rank[0] == 0)
