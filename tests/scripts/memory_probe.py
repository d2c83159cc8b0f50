"""Memory of a rank, for tests/test_memory.py: rank 0 prints one JSON line (maxima over ranks).

python memory_probe.py raw          imports mpi4py, Dups COMM_WORLD, barrier: the baseline
python memory_probe.py geode        the same, then a Geode(), a dict around the ring, close();
                                    and which of the modules loaded only on demand it loaded
python memory_probe.py nodes N      the peak memory that Geode() of N named nodes adds
python memory_probe.py cycles K     resident memory after each of K Geode() / close() cycles
python memory_probe.py arrays K     the same, each cycle passing 2 MiB arrays around the ring
"""

import json
import re
import resource
import sys
from typing import Any

from mpi4py import MPI

# What a Geode passing builtins loads only on demand: numpy (arrays), OpenSSL (hashlib's, for
# a checkpoint's sha256 and HMAC), h5py (checkpoints), shutil and socket (the checkpoint
# directory), concurrent.futures (the checkpoint's parallel fsyncs); and dataclasses (with
# inspect and ast) and logging, which it never loads.
ON_DEMAND = ("numpy", "_hashlib", "hmac", "shutil", "socket", "concurrent.futures")
ON_DEMAND += ("dataclasses", "inspect", "ast", "logging", "traceback")


def on_demand_loaded() -> list[str]:
    """The on-demand modules loaded; h5py's submodules load only once h5py itself runs (its
    name alone may be there, as a lazy module)."""
    h5py = [name for name in sys.modules if name.startswith("h5py.")][:1]
    return [name for name in ON_DEMAND if name in sys.modules] + h5py


def ring(geode: Any, data: object) -> None:
    """Pass ``data`` to the next rank's node, receive the previous rank's."""
    geode.send(data, geode.node, geode.nodes[(geode.rank + 1) % geode.size])
    geode.receive(timeout=60)


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
            geode = Geode()
            ring(geode, {"step": 1, "values": [1.5, 2.5], "name": "a dict of builtins"})
            geode.close()
            result["loaded"] = sorted(set().union(*comm.allgather(on_demand_loaded())))
        elif mode == "nodes":
            before = peak_mb()
            geode = Geode([f"n{k}" for k in range(count)])
            result["peak_growth"] = max(comm.allgather(peak_mb() - before))
            geode.close()
        else:
            import numpy as np

            cycles = []
            for _ in range(count):
                geode = Geode()
                if mode == "arrays":  # received into the transport's pooled buffers
                    ring(geode, np.ones(2**18))
                geode.close()
                del geode
                cycles.append(max(comm.allgather(resident_mb())))
            result["cycles"] = cycles
    comm.Barrier()
    result["resident"] = max(comm.allgather(resident_mb()))
    if comm.Get_rank() == 0:
        print(json.dumps(result), flush=True)
    comm.Free()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
