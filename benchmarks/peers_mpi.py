"""peers.py's MPI peers: raw mpi4py (the baseline), geode_mpi and mpi4py.futures.

Launched by peers.py, not by hand: ``mpiexec -n N python benchmarks/peers_mpi.py --peer mpi4py
...`` (or ``geode``), and ``mpiexec -n N python -m mpi4py.futures benchmarks/peers_mpi.py --peer
mpi4py.futures ...``, where rank 0 runs this file and the other ranks are the pool's workers.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from peers_common import (
    GROUP,
    STARTUP_WORKERS,
    TIMEOUT,
    array,
    check_array,
    child_args,
    farm_figures,
    farm_rounds,
    identity,
    payload_bytes,
    sleep_task,
    small_dict,
    take,
    timed_loops,
    windowed,
    write_figures,
)

RAW, GEODE, FUTURES = "mpi4py", "geode", "mpi4py.futures"


def raw_pair(comm: Any, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    """Rank 0 and rank 1: lowercase send/recv of the dict, Send/Recv of arrays into a buffer
    allocated once, isend of dicts with at most ``args.window`` unfinished."""
    from mpi4py import MPI

    rank, other = comm.Get_rank(), 1 - comm.Get_rank()
    nbytes = payload_bytes(workload, args)
    data, buf = array(nbytes), array(nbytes) * 0

    def loop(n: int) -> float:
        start = barrier_wtime(comm)
        got: Any = None
        if workload == "pingpong_dict":
            for step in range(n):
                if rank == 0:
                    comm.send(small_dict(step), dest=1)
                    got = comm.recv(source=1)
                else:
                    comm.send(comm.recv(source=0), dest=0)
            if rank == 0 and got != small_dict(n - 1):
                raise RuntimeError(f"raw dict round trip returned {got!r}")
        elif workload == "rate":
            if rank == 0:
                windowed(
                    lambda s: comm.isend(small_dict(s), dest=1), MPI.Request.wait, n, args.window
                )
                comm.recv(source=1)
            else:
                for _ in range(n):
                    got = comm.recv(source=0)
                if got != small_dict(n - 1):
                    raise RuntimeError(f"raw rate's last message was {got!r}")
                comm.send(n, dest=0)
        else:
            for _ in range(n):
                if rank == 0:
                    comm.Send(data, dest=other)
                    comm.Recv(buf, source=other)
                else:
                    comm.Recv(buf, source=other)
                    comm.Send(buf, dest=other)
            check_array(buf, nbytes, f"raw Send/Recv on rank {rank}")
        return MPI.Wtime() - start

    return timed_loops(loop, args, comm_agree(comm), rate=workload == "rate", least=loops(workload))


def geode_pair(geode: Any, comm: Any, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    """The same with a Geode: send/receive of the dict or the array, isend of dicts."""
    from mpi4py import MPI

    rank = comm.Get_rank()
    other = geode.nodes[1 - rank]
    nbytes = payload_bytes(workload, args)
    data = array(nbytes)

    def loop(n: int) -> float:
        start = barrier_wtime(comm)
        got: Any = None
        if workload == "rate":
            if rank == 0:
                windowed(lambda s: geode.isend(small_dict(s), dest=other), wait, n, args.window)
                geode.receive(timeout=TIMEOUT)
            else:
                for _ in range(n):
                    got = geode.receive(timeout=TIMEOUT).data
                if got != small_dict(n - 1):
                    raise RuntimeError(f"geode rate's last message was {got!r}")
                geode.send(n, dest=other)
        else:
            first = small_dict if workload == "pingpong_dict" else (lambda _: data)
            for step in range(n):
                if rank == 0:
                    geode.send(first(step), dest=other)
                got = geode.receive(timeout=TIMEOUT).data
                if rank == 1:
                    geode.send(got, dest=other)
                    got = None
            if rank == 0 and workload == "pingpong_dict" and got != small_dict(n - 1):
                raise RuntimeError(f"geode dict round trip returned {got!r}")
            if rank == 0 and nbytes:
                check_array(got, nbytes, "geode round trip")
        return MPI.Wtime() - start

    return timed_loops(loop, args, comm_agree(comm), rate=workload == "rate", least=loops(workload))


def wait(handle: Any) -> None:
    handle.wait(timeout=TIMEOUT)


def loops(workload: str) -> int:
    """Operations in the warm-up loop that also sets the count."""
    return {"rate": 500, "pingpong_dict": 20}.get(workload, 1)


def barrier_wtime(comm: Any) -> float:
    from mpi4py import MPI

    comm.Barrier()
    return float(MPI.Wtime())


def comm_agree(comm: Any) -> Any:
    return lambda count: comm.bcast(count, root=0)


def mpi_group(
    peer: str, comm: Any, workload: str, args: argparse.Namespace
) -> dict[str, Any] | None:
    """4 ranks: the fan-out (raw ``Bcast``, or a geode topic, then a ``Barrier`` as the
    receivers' acknowledgement) and the task farm (raw master/worker or a geode work queue,
    the code of workqueue.py)."""
    import workqueue as wq
    from mpi4py import MPI

    if workload == "farm":
        geodes, queues = {}, {}
        if peer == GEODE:
            geode = geodes[wq.GEODE] = _geode()
            queues[wq.GEODE] = geode.work_queue(
                "sweep", consumers=geode.nodes[1:], dispatcher="node0", prefetch=1
            )
        run = wq.Run(comm, comm.Get_rank(), comm.Get_size() - 1, geodes, queues)
        for geode in geodes.values():
            geode.on(wq.Task)(lambda msg: wq.work(run, msg.data))
        method = wq.GEODE if peer == GEODE else wq.MASTER_WORKER

        def sweep(tasks: list[float]) -> list[float] | None:
            found = wq.timed(run, method, tasks)
            if found is None:
                return None
            return [found["makespan_s"], sum(found["busy_s"]) / run.workers]

        figures = farm_rounds(sweep, args)
        for geode in geodes.values():
            geode.close()
        return figures
    rank = comm.Get_rank()
    nbytes = payload_bytes(workload, args)
    data = array(nbytes) if rank == 0 else array(nbytes) * 0
    geode = _geode() if peer == GEODE else None
    topic = geode.topic("fan", publishers=["node0"], subscribers=geode.nodes[1:]) if geode else None

    def loop(n: int) -> float:
        start = barrier_wtime(comm)
        got: Any = data
        for _ in range(n):
            if geode is None:
                comm.Bcast(data, root=0)
            elif rank == 0:
                topic.publish(data, source="node0").wait(timeout=TIMEOUT)
            else:
                got = None
                got = geode.receive(topic="fan", timeout=TIMEOUT).data
            comm.Barrier()
        check_array(got, nbytes, f"{peer} fan-out on rank {rank}")
        return MPI.Wtime() - start

    figures = timed_loops(loop, args, comm_agree(comm))
    if geode is not None:
        geode.close()
    return figures


def _geode() -> Any:
    from geode_mpi import Geode

    return Geode()


def mpi_startup(peer: str, comm: Any) -> float | None:
    """Rank 0 sends the dict to every other rank and waits for each to send it back."""
    if peer == GEODE:
        geode = _geode()
        if comm.Get_rank() == 0:
            for node in geode.nodes[1:]:
                geode.send(small_dict(0), dest=node)
            for _ in geode.nodes[1:]:
                geode.receive(timeout=TIMEOUT)
            stamp = time.time()
        else:
            geode.send(geode.receive(timeout=TIMEOUT).data, dest="node0")
        geode.close()
    elif comm.Get_rank() == 0:
        for rank in range(1, comm.Get_size()):
            comm.send(small_dict(0), dest=rank)
        for rank in range(1, comm.Get_size()):
            comm.recv(source=rank)
        stamp = time.time()
    else:
        comm.send(comm.recv(source=0), dest=0)
    return stamp if comm.Get_rank() == 0 else None


def spmd(args: argparse.Namespace) -> int:
    """raw mpi4py or geode: every rank runs this."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    figures: dict[str, Any] = {}
    if args.workloads == ["startup"]:
        stamp = mpi_startup(args.peer, world)
        figures["startup"] = {"first_round_trip": stamp}
    else:
        comm = world.Dup()
        geode = _geode() if args.peer == GEODE and world.Get_size() == 2 else None
        for workload in args.workloads:
            if workload in GROUP:
                figures[workload] = mpi_group(args.peer, comm, workload, args)
            elif geode is not None:
                figures[workload] = geode_pair(geode, comm, workload, args)
            else:
                figures[workload] = raw_pair(comm, workload, args)
        if geode is not None:
            geode.close()
        comm.Free()
    if world.Get_rank() == 0:
        write_figures(args, figures, versions(RAW if args.peer == RAW else GEODE))
    return 0


def versions(peer: str) -> dict[str, str]:
    import mpi4py
    from mpi4py import MPI

    found = {"mpi4py": mpi4py.__version__}
    found["mpi_library"] = MPI.Get_library_version().strip().splitlines()[0].strip()
    if peer == GEODE:
        from geode_mpi import __version__

        found["geode_mpi"] = __version__
    return found


# -- mpi4py.futures: this file runs on rank 0 only, the other ranks are the pool's workers -------


def futures_main(args: argparse.Namespace) -> int:
    from mpi4py.futures import MPIPoolExecutor

    figures: dict[str, Any] = {}
    with MPIPoolExecutor() as pool:
        if args.workloads == ["startup"]:
            list(pool.map(identity, [small_dict(0)] * STARTUP_WORKERS, timeout=TIMEOUT))
            figures["startup"] = {"first_round_trip": time.time()}
        pool.bootup()
        for workload in (w for w in args.workloads if w != "startup"):
            figures[workload] = futures_workload(pool, workload, args)
    write_figures(args, figures, versions(FUTURES))
    return 0


def futures_workload(pool: Any, workload: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """A submitted call per round trip or message; the fan-out as one call per receiver with
    the array (a pool has no broadcast); the farm as ``map``."""
    if workload == "farm":

        def sweep(tasks: list[float]) -> list[float]:
            start = time.time()
            spans = list(pool.map(sleep_task, tasks, timeout=TIMEOUT))
            return farm_figures(start, spans, pool.num_workers)

        return farm_rounds(sweep, args)
    nbytes = payload_bytes(workload, args)
    data = array(nbytes)

    def loop(n: int) -> float:
        start = time.perf_counter()
        if workload == "rate":
            windowed(lambda s: pool.submit(take, small_dict(s)), result, n, args.window)
        elif workload == "fanout":
            for _ in range(n):
                for call in [pool.submit(take, data) for _ in range(pool.num_workers)]:
                    result(call)
        else:
            for step in range(n):
                got = pool.submit(identity, small_dict(step) if not nbytes else data).result(
                    TIMEOUT
                )
            if nbytes:
                check_array(got, nbytes, "mpi4py.futures round trip")
        return time.perf_counter() - start

    return timed_loops(loop, args, rate=workload == "rate", least=loops(workload))


def result(future: Any) -> Any:
    return future.result(TIMEOUT)


def main(argv: Sequence[str] | None = None) -> int:
    args = child_args(argv, "One MPI peer's workloads for peers.py (launched by it).")
    return futures_main(args) if args.peer == FUTURES else spmd(args)


if __name__ == "__main__":
    sys.exit(main())
