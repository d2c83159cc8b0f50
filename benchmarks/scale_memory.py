"""One job written twice, raw mpi4py/h5py and geode_mpi, for the memory rows of scale.py.

``mpiexec -n P python benchmarks/scale_memory.py JOB METHOD CYCLES DIR``; rank 0 prints one
JSON line: every rank's resident memory after its imports, after each cycle (and how much of
it is MPI's shared memory), its peak, and whether numpy was loaded.
benchmarks/memory_compare.py launches them all, before and after a change, in one run.

The fair baseline is the same job done with raw mpi4py and the same user imports: a job that
sends numpy arrays and checkpoints them imports numpy and h5py either way, one that sends
dicts imports neither. So each JOB runs as METHOD ``raw`` and as ``geode`` in its own launch
(never in one process, whose peak would hold both), beside ``bare`` (mpi4py imported, nothing
else run: what MPI itself costs).

JOB ``objects``: each cycle opens (``Dup`` / ``Geode()``), passes a dict around the ring of
ranks and closes (``Free`` / ``close()``); mpi4py the only import.
JOB ``arrays``: numpy and h5py imported; each cycle opens, passes a 1 MiB array around the
ring, checkpoints 1 MiB per rank (an h5py file made durable, then a barrier / ``checkpoint()``)
and closes. METHOD ``durable`` (arrays only): raw, plus what a checkpoint adds to the files
(`seal`: checksums gathered, a manifest, a broadcast).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

CMA_VARIABLE = "MPIR_CVAR_CH4_CMA_ENABLE"
ARRAY_BYTES = 2**20


def resident() -> tuple[int, int]:
    """This process's resident set size now and the shared memory in it (RssShmem: MPICH's
    shared-memory segment, as far as this rank has touched it), in bytes (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        fields = dict(line.split(":", 1) for line in status)
    total, shared = (int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "RssShmem"))
    return total, shared


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def raw_cycle(world: Any, job: str, directory: Path, durable: bool = False) -> None:
    comm = world.Dup()
    rank, size = comm.Get_rank(), comm.Get_size()
    ahead, behind = (rank + 1) % size, (rank - 1) % size
    if job == "objects":
        request = comm.isend({"from": rank, "step": 1}, ahead)
        comm.recv(source=behind)
        request.wait()
    else:
        import h5py
        import numpy as np

        out, into = np.full(ARRAY_BYTES // 8, float(rank)), np.empty(ARRAY_BYTES // 8)
        comm.Sendrecv(out, ahead, recvbuf=into, source=behind)
        path = directory / f"raw-{rank}.h5"
        with h5py.File(path, "w") as file:
            file.create_dataset("field", data=into)
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())
        if durable:
            seal(comm, path, directory)
    comm.Barrier()
    comm.Free()


def seal(comm: Any, path: Path, directory: Path) -> None:
    """What a checkpoint adds to the rank files, by hand: each file's SHA-256 gathered on rank
    0, which writes a manifest (fsynced, renamed), then a broadcast: the pickled collectives
    whose touches of MPICH's shared-memory segment grow it over cycles (geode's grow alike)."""
    import hashlib

    entry = {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    entries = comm.gather(entry)
    if comm.Get_rank() == 0:
        staged = directory / "manifest.json.tmp"
        with staged.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps({"files": entries}))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, directory / "manifest.json")
    comm.bcast(None)


def geode_cycle(world: Any, job: str, directory: Path) -> None:
    from geode_mpi import Geode

    geode = Geode(checkpoint_dir=directory / "geode" if job == "arrays" else None)
    ahead = geode.nodes[(geode.rank + 1) % geode.size]
    if job == "objects":
        geode.send({"from": geode.rank, "step": 1}, geode.node, ahead)
        geode.receive(timeout=120)
    else:
        import numpy as np

        geode.send(np.full(ARRAY_BYTES // 8, float(geode.rank)), geode.node, ahead)
        field = geode.receive(timeout=120).data
        geode.checkpoint(state={"field": field}, timeout=120)
    geode.close()


def main(job: str, method: str, cycles: int, directory: Path) -> None:
    if int(os.environ.get("PMI_SIZE", "1")) > (os.cpu_count() or 1):
        os.environ.setdefault(CMA_VARIABLE, "0")  # as geode_mpi does: see docs/debugging.md
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    if job == "arrays":  # the user's own imports, in both methods
        import h5py  # noqa: F401
        import numpy  # noqa: F401
    world.Barrier()
    record: dict[str, Any] = {"start": resident()[0], "cycles": [], "shared": []}
    durable = functools.partial(raw_cycle, durable=True)
    cycle = {"raw": raw_cycle, "durable": durable, "geode": geode_cycle}.get(method)
    for _ in range(cycles if cycle is not None else 0):
        cycle(world, job, directory)
        total, shared = resident()
        record["cycles"].append(total)
        record["shared"].append(shared)
    record["peak"] = peak()
    record["numpy"] = "numpy" in sys.modules  # (a job of dicts needs it neither way)
    records = world.gather(record)
    if world.Get_rank() == 0:
        print(json.dumps({key: [r[key] for r in records] for key in record}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
