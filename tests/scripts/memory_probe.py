"""Memory of a rank, for tests/test_memory.py: rank 0 prints one JSON line (maxima over ranks).

python memory_probe.py raw          imports mpi4py, Dups COMM_WORLD, barrier: the baseline
python memory_probe.py geode        the same, then a Geode() and its close()
python memory_probe.py nodes N      the peak memory that Geode() of N named nodes adds
python memory_probe.py cycles K     resident memory after each of K Geode() / close() cycles
"""

import json
import re
import resource
import sys

from mpi4py import MPI


def resident_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        match = re.search(r"VmRSS:\s+(\d+)", status.read())
    assert match is not None
    return int(match.group(1)) / 1024


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(mode: str, count: int) -> None:
    comm = MPI.COMM_WORLD.Dup()
    comm.Barrier()
    result: dict[str, object] = {}
    if mode != "raw":
        from geode_mpi import Geode

        if mode == "geode":
            Geode().close()
            # h5py's submodules load only once h5py itself runs (its name alone may be there)
            result["h5py"] = any(name.startswith("h5py.") for name in sys.modules)
        elif mode == "nodes":
            before = peak_mb()
            geode = Geode([f"n{k}" for k in range(count)])
            result["peak_growth"] = max(comm.allgather(peak_mb() - before))
            geode.close()
        else:
            cycles = []
            for _ in range(count):
                Geode().close()
                cycles.append(max(comm.allgather(resident_mb())))
            result["cycles"] = cycles
    comm.Barrier()
    result["resident"] = max(comm.allgather(resident_mb()))
    if comm.Get_rank() == 0:
        print(json.dumps(result), flush=True)
    comm.Free()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
