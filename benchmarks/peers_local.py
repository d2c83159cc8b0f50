"""peers.py's local peers: pyzmq, multiprocessing, Ray and Dask, their workers local processes.

Launched by peers.py, not by hand: ``python benchmarks/peers_local.py --peer ray ...``. This
process is the root (it sends, and times); its workers are processes of the peer's own kind.
On SIGTERM (peers.py's timeout) the peer is shut down before exiting: no Ray or Dask process
is left behind.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from peers_common import (
    RECEIVERS,
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
)
from peers_common import write_figures as write

# peer -> its distribution (for the version) and the module peers.py checks is importable
MODULES = {
    "pyzmq": "zmq",
    "multiprocessing": "multiprocessing",
    "ray": "ray",
    "dask": "distributed",
}
IDLE_EXIT = 600.0  # seconds a channel worker waits for a command before it gives up


# -- pyzmq and multiprocessing: a worker process per channel, serving commands -------------------


class PipeChannel:
    """A multiprocessing ``Pipe`` end: objects pickled by ``Connection.send``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, obj: Any) -> None:
        self.conn.send(obj)

    def recv(self, timeout: float = TIMEOUT) -> Any:
        if not self.conn.poll(timeout):
            raise TimeoutError(f"no reply in {timeout:g} s")
        return self.conn.recv()

    def close(self) -> None:
        self.conn.close()


class ZmqChannel:
    """A zmq ``PAIR`` socket: pickle protocol 5, its buffers as their own frames (sent without
    a copy, received as views of the frames)."""

    def __init__(self, endpoint: str, bind: bool) -> None:
        import zmq

        self.socket = zmq.Context.instance().socket(zmq.PAIR)
        self.socket.setsockopt(zmq.LINGER, 0)
        (self.socket.bind if bind else self.socket.connect)(endpoint)

    def send(self, obj: Any) -> None:
        buffers: list[pickle.PickleBuffer] = []
        head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        self.socket.send_multipart([head, *(b.raw() for b in buffers)], copy=False)

    def recv(self, timeout: float = TIMEOUT) -> Any:
        if not self.socket.poll(timeout * 1000):
            raise TimeoutError(f"no reply in {timeout:g} s")
        frames = self.socket.recv_multipart(copy=False)
        return pickle.loads(frames[0].buffer, buffers=[f.buffer for f in frames[1:]])

    def close(self) -> None:
        self.socket.close()


def serve(channel: Any) -> None:
    """A worker: answer the root's commands until told to stop (or left idle too long)."""
    while True:
        command, obj = channel.recv(IDLE_EXIT)
        if command == "stop":
            break
        if command == "echo":
            channel.send(obj)
        elif command == "hold":
            channel.send(obj.nbytes)
        elif command == "done":
            channel.send(obj)
        elif command == "task":
            channel.send(sleep_task(obj))
        # "take": a streamed message, held and dropped
    channel.close()


def default_sigterm() -> None:
    """In a forked worker (a channel's or the farm's ``Pool``): SIGTERM ends the process again.

    A fork inherits the root's handler (`stop`, which raises SystemExit), and a Python handler
    does not reliably end a process blocked in C: a pool worker waiting for its queue's lock
    took ``Pool.terminate()``'s SIGTERM without dying, and ``terminate()`` then joined it for
    ever (2 launches in 30 hung so; 1 of 40 for a bare ``Pool`` with such a handler, 0 of 150
    without it)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def zmq_worker(endpoint: str) -> None:
    default_sigterm()
    serve(ZmqChannel(endpoint, bind=False))


def pipe_worker(conn: Connection) -> None:
    default_sigterm()
    serve(PipeChannel(conn))


class ChannelPeer:
    """pyzmq or multiprocessing: worker processes, each with its own channel to the root; the
    farm as a ``multiprocessing.Pool`` (``imap_unordered``), or for zmq the root handing the
    next task to whichever worker answers first."""

    def __init__(self, kind: str, workers: int) -> None:
        self.kind, self.processes, self.pool = kind, [], None
        self.channels: list[Any] = []
        # workers fork before this process makes a zmq context (contexts do not survive fork)
        ends = [multiprocessing.Pipe() for _ in range(workers)] if kind != "pyzmq" else []
        points = [f"ipc:///tmp/geode-peers-{os.getpid()}-{k}" for k in range(workers)]
        for k in range(workers):
            target, arg = (zmq_worker, points[k]) if kind == "pyzmq" else (pipe_worker, ends[k][1])
            self.processes.append(multiprocessing.Process(target=target, args=(arg,), daemon=True))
            self.processes[-1].start()
        if kind == "pyzmq":
            self.channels = [ZmqChannel(point, bind=True) for point in points]
        else:
            self.channels = [PipeChannel(parent) for parent, _ in ends]

    def roundtrip(self, obj: Any) -> Any:
        self.channels[0].send(("echo", obj))
        return self.channels[0].recv()

    def stream(self, n: int, window: int) -> None:
        """The channel's own buffering is the window: the sends do not wait for the receiver."""
        for step in range(n):
            self.channels[0].send(("take", small_dict(step)))
        self.channels[0].send(("done", n))
        if self.channels[0].recv() != n:
            raise RuntimeError(f"{self.kind}: the stream's end came back wrong")

    def fanout(self, data: np.ndarray[Any, Any]) -> None:
        for channel in self.channels[:RECEIVERS]:
            channel.send(("hold", data))
        for channel in self.channels[:RECEIVERS]:
            if channel.recv() != data.nbytes:
                raise RuntimeError(f"{self.kind}: a receiver got the wrong array")

    def farm(self, tasks: list[float]) -> list[tuple[float, float]]:
        if self.kind != "pyzmq":
            if self.pool is None:
                self.pool = multiprocessing.Pool(RECEIVERS, initializer=default_sigterm)
            return list(self.pool.imap_unordered(sleep_task, tasks))
        import zmq

        poller, spans, todo = zmq.Poller(), [], list(reversed(tasks))
        for channel in self.channels[:RECEIVERS]:
            poller.register(channel.socket, zmq.POLLIN)
            channel.send(("task", todo.pop()))
        busy = RECEIVERS
        while busy:
            ready = dict(poller.poll(TIMEOUT * 1000))
            if not ready:
                raise TimeoutError(f"pyzmq farm: no worker answered in {TIMEOUT:g} s")
            for channel in self.channels[:RECEIVERS]:
                if channel.socket in ready:
                    spans.append(channel.recv())
                    if todo:
                        channel.send(("task", todo.pop()))
                    else:
                        busy -= 1
        return spans

    def first(self) -> None:
        for channel in self.channels:
            channel.send(("echo", small_dict(0)))
        for channel in self.channels:
            channel.recv()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
        for channel in self.channels:
            try:
                channel.send(("stop", None))
            finally:
                channel.close()
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()


# -- Ray: actors as the receivers, remote functions as the farm's tasks --------------------------


class Receiver:
    """A Ray actor: echoes, takes, or holds (fan-out) what it is given."""

    def echo(self, obj: Any) -> Any:
        return obj

    def take(self, obj: Any) -> None:
        del obj

    def hold(self, data: np.ndarray[Any, Any]) -> int:
        return int(data.nbytes)


class RayPeer:
    """``ray.init`` with a CPU per worker; actors (num_cpus=0) as the receivers; a fan-out
    puts the array in the object store once (``ray.put``) and passes its reference."""

    def __init__(self, workers: int) -> None:
        import ray

        self.ray = ray
        try:
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self.actors = [ray.remote(num_cpus=0)(Receiver).remote() for _ in range(workers)]
            self.task = ray.remote(num_cpus=1)(sleep_task)
        except BaseException:
            ray.shutdown()
            raise

    def get(self, refs: Any) -> Any:
        return self.ray.get(refs, timeout=TIMEOUT)

    def roundtrip(self, obj: Any) -> Any:
        return self.get(self.actors[0].echo.remote(obj))

    def stream(self, n: int, window: int) -> None:
        windowed(lambda s: self.actors[0].take.remote(small_dict(s)), self.get, n, window)

    def fanout(self, data: np.ndarray[Any, Any]) -> None:
        ref = self.ray.put(data)
        if self.get([a.hold.remote(ref) for a in self.actors[:RECEIVERS]]) != [data.nbytes] * 3:
            raise RuntimeError("ray: a receiver got the wrong array")

    def farm(self, tasks: list[float]) -> list[tuple[float, float]]:
        return list(self.get([self.task.remote(t) for t in tasks]))

    def first(self) -> None:
        self.get([a.echo.remote(small_dict(0)) for a in self.actors])

    def close(self) -> None:
        self.ray.shutdown()


# -- Dask: a LocalCluster of single-threaded worker processes -----------------------------------


class DaskPeer:
    """``LocalCluster(processes=True, threads_per_worker=1)``; a round trip is a ``submit`` to
    the first worker (an array ``scatter``-ed to it first), a fan-out ``scatter(broadcast=True)``
    and a call on each receiver that holds it."""

    def __init__(self, workers: int) -> None:
        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        try:
            self.client = Client(self.cluster)
            self.workers = sorted(self.client.scheduler_info()["workers"])
        except BaseException:
            self.cluster.close()
            raise

    def submit(self, function: Callable[..., Any], obj: Any, worker: int = 0) -> Any:
        where = [self.workers[worker]]
        return self.client.submit(function, obj, workers=where, pure=False)

    def roundtrip(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            obj = self.client.scatter(obj, workers=self.workers[:1], hash=False)
        return self.submit(identity, obj).result(TIMEOUT)

    def stream(self, n: int, window: int) -> None:
        windowed(lambda s: self.submit(take, small_dict(s)), result, n, window)

    def fanout(self, data: np.ndarray[Any, Any]) -> None:
        shared = self.client.scatter(data, broadcast=True, hash=False)
        held = [self.submit(nbytes, shared, w) for w in range(RECEIVERS)]
        if self.client.gather(held) != [data.nbytes] * RECEIVERS:
            raise RuntimeError("dask: a receiver got the wrong array")

    def farm(self, tasks: list[float]) -> list[tuple[float, float]]:
        return list(self.client.gather(self.client.map(sleep_task, tasks, pure=False)))

    def first(self) -> None:
        self.client.gather(
            [self.submit(identity, small_dict(0), w) for w in range(len(self.workers))]
        )

    def close(self) -> None:
        self.client.close()
        self.cluster.close()


def nbytes(data: np.ndarray[Any, Any]) -> int:
    return int(data.nbytes)


def result(future: Any) -> Any:
    return future.result(TIMEOUT)


# -- the workloads, the same loops for every peer -----------------------------------------------


def figures_of(peer: Any, workload: str, args: argparse.Namespace) -> dict[str, Any] | None:
    if workload == "farm":

        def sweep(tasks: list[float]) -> list[float]:
            start = time.time()
            return farm_figures(start, peer.farm(tasks), RECEIVERS)

        return farm_rounds(sweep, args)
    nbytes = payload_bytes(workload, args)
    data = array(nbytes)

    def loop(n: int) -> float:
        start = time.perf_counter()
        if workload == "rate":
            peer.stream(n, args.window)
        elif workload == "fanout":
            for _ in range(n):
                peer.fanout(data)
        elif nbytes:
            for _ in range(n):
                got = peer.roundtrip(data)
            check_array(got, nbytes, f"{args.peer} round trip")
        else:
            for step in range(n):
                got = peer.roundtrip(small_dict(step))
            if got != small_dict(n - 1):
                raise RuntimeError(f"{args.peer}: the dict came back as {got!r}")
        return time.perf_counter() - start

    least = {"rate": 500, "pingpong_dict": 20}.get(workload, 1)
    return timed_loops(loop, args, rate=workload == "rate", least=least)


def make(name: str, workers: int) -> Any:
    if name == "ray":
        return RayPeer(workers)
    if name == "dask":
        return DaskPeer(workers)
    return ChannelPeer(name, workers)


def versions(name: str) -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for dist in {"pyzmq": ["pyzmq"], "ray": ["ray"], "dask": ["dask", "distributed"]}.get(name, []):
        found[dist] = importlib.metadata.version(dist)
    return found


def stop(signum: int, frame: Any) -> None:
    """SIGTERM: exit through the ``finally`` that shuts the peer down."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = child_args(argv, "One local peer's workloads for peers.py (launched by it).")
    if args.peer not in MODULES:
        raise SystemExit(f"--peer must be one of {', '.join(MODULES)}, got {args.peer!r}")
    signal.signal(signal.SIGTERM, stop)
    startup = args.workloads == ["startup"]
    peer = make(args.peer, STARTUP_WORKERS if startup else RECEIVERS)
    try:
        if startup:
            peer.first()
            figures: dict[str, Any] = {"startup": {"first_round_trip": time.time()}}
        else:
            figures = {workload: figures_of(peer, workload, args) for workload in args.workloads}
    finally:
        peer.close()
    write(args, figures, versions(args.peer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
