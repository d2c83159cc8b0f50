"""Where a small message's CPU time goes, step by step, over MPI (``hotpath.py --steps``).

Rank 0 sends ``Message("hello world")`` to rank 1, which drains them meanwhile; each row calls
one layer lower than the row before (each row includes the ones below it). The receiving rows
time rank 1 taking messages that already wait for it (sent before a barrier). Times are this
thread's CPU time per message (`time.thread_time`), so other processes' load counts little;
raw mpi4py's lowercase ``isend`` and ``recv`` of the same fields as a dict
(`baseline.message_fields`) are the baseline.

The round trip's rows (`round_trip_steps`) time the path of a ping-pong's message: a blocking
``send`` (its own MPI message, never batched) and a ``receive`` that takes it straight from
MPI (`MPITransport.spin_meta`, then `Engine.take_arrival`, which also decodes), layer by layer.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baseline import message_fields

from geode_mpi import Geode, Message, SendHandle, codec

DATA = "hello world"


def main(messages: int, repeats: int, json_path: Path | None) -> int:
    from mpi4py import MPI

    geode = Geode(acks=True)
    comm = MPI.COMM_WORLD.Dup()
    rank = comm.Get_rank()
    if comm.Get_size() != 2:
        raise SystemExit("hotpath.py --steps needs exactly 2 ranks: mpiexec -n 2")
    runtime = geode._runtime  # (a benchmark may look inside: it times the layers)
    path = runtime.path
    pair = runtime.engine.pair_out(0, 1)
    transport = runtime.transport
    batch_meta = transport.batch_meta
    msgs = [Message(DATA) for _ in range(messages)]
    geode.send(DATA, dest="node1")  # the route, and a first message for rank 1 to take

    def loop() -> None:  # what benchmarks/rate.py's producer does per message
        handles: deque[SendHandle] = deque()
        for _ in range(messages):
            handles.append(geode.isend(Message(DATA), dest="node1"))
            while handles and handles[0].done():
                handles.popleft()
            if len(handles) >= 64:
                handles.popleft().wait()
        for handle in handles:
            handle.wait()

    def isend() -> None:
        for message in msgs:
            geode.isend(message, dest="node1")

    def send_plain() -> None:
        for message in msgs:
            runtime.send_plain(message, "node1", None, True)

    def plain() -> None:
        for message in msgs:
            path.plain(message, 0, 1, 1, pair, True)

    metas: list[bytes] = []

    def encode() -> None:
        metas.clear()
        first = pair.next_seq
        for k, message in enumerate(msgs):
            stamp = codec.make_stamp(k, first + k, time.time(), 0, 1)
            metas.append(codec.encode(message, stamp, codec.FLAG_TRACKED)[0])

    def transport_only() -> None:  # the metas `encode` made, numbered as the next ones
        for meta in metas:
            batch_meta(1, meta)
        pair.next_seq += len(metas)

    def raw_isend() -> None:
        requests: list[Any] = []
        for seq in range(messages):
            requests.append(comm.isend(message_fields(seq, "node0", "node1", DATA), 1, 7))
            if len(requests) >= 64:
                MPI.Request.Waitall(requests)
                requests.clear()
        MPI.Request.Waitall(requests)

    sending: list[tuple[str, Callable[[], None], bool]] = [
        ("the benchmark's loop (isend, keeping 64 handles)", loop, True),
        ("Geode.isend", isend, True),
        ("Runtime.send_plain", send_plain, True),
        ("SendPath.plain (id, stamp, seq, outbox, counters)", plain, True),
        ("codec.encode (and a stamp)", encode, False),
        ("MPITransport.batch_meta (of those bytes)", transport_only, True),
        ("raw isend of the dict (window 64)", raw_isend, False),
    ]
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, step, sends in sending:
            comm.Barrier()  # rank 1 drains while rank 0 sends, as in benchmarks/rate.py
            if rank == 0:
                started = time.thread_time()
                step()
                times.setdefault(name, []).append((time.thread_time() - started) / messages)
                geode.flush()
            elif step is raw_isend:
                for _ in range(messages):
                    comm.recv(source=0, tag=7)
            elif sends:
                for _ in range(messages):
                    geode.receive(timeout=30)
            comm.Barrier()
        if rank == 1:
            geode.receive(timeout=30)  # the first message, sent before the loops
        for name, taken in (("Geode.receive", geode_receive), ("raw recv", raw_recv)):
            times.setdefault(name, []).append(taken(comm, geode, rank, messages))
        for name, value in round_trip_steps(comm, geode, rank, messages).items():
            times.setdefault(name, []).append(value)
        if rank == 0:
            geode.send(DATA, dest="node1")
    gathered = comm.gather(times, root=0)
    geode.close()
    comm.Free()
    if rank != 0 or gathered is None:
        return 0
    merged = {name: values for part in gathered for name, values in part.items() if values}
    results = {}
    print(f"CPU time per message, {messages} messages, best and median of {repeats}:")
    for name, values in merged.items():
        best, median = min(values) * 1e6, statistics.median(values) * 1e6
        results[name] = {"best_us": best, "median_us": median}
        print(f"  {name:52} {best:6.2f} {median:6.2f} us")
    if json_path is not None:
        json_path.write_text(json.dumps({"benchmark": "hotpath steps", "results": results}))
    return 0


def geode_receive(comm: Any, geode: Geode, rank: int, messages: int) -> float:
    """Rank 1's CPU seconds per message to receive what rank 0 sent before a barrier."""
    comm.Barrier()
    if rank == 0:
        for _ in range(messages):
            geode.isend(DATA, dest="node1")
        geode.flush()
    comm.Barrier()
    taken = 0.0
    if rank == 1:
        started = time.thread_time()
        for _ in range(messages):
            geode.receive()
        taken = (time.thread_time() - started) / messages
    comm.Barrier()
    return taken if rank == 1 else float("nan")


def raw_recv(comm: Any, geode: Geode, rank: int, messages: int) -> float:
    """The same for raw ``recv`` of dicts sent with raw ``isend``."""
    from mpi4py import MPI

    comm.Barrier()
    if rank == 0:
        requests = [
            comm.isend(message_fields(seq, "node0", "node1", DATA), 1, 8) for seq in range(messages)
        ]
    comm.Barrier()
    taken = 0.0
    if rank == 1:
        started = time.thread_time()
        for _ in range(messages):
            comm.recv(source=0, tag=8)
        taken = (time.thread_time() - started) / messages
    if rank == 0:
        MPI.Request.Waitall(requests)
    comm.Barrier()
    return taken if rank == 1 else float("nan")


def round_trip_steps(comm: Any, geode: Geode, rank: int, messages: int) -> dict[str, float]:
    """CPU seconds per message of each step of a ping-pong's message, sent with ``send``
    (rank 0) and received one by one as it arrives (rank 1), each step over its own batch of
    ``messages`` (rank 1 takes them only once all were sent: what it times is its own work)."""
    from mpi4py import MPI

    runtime = geode._runtime
    transport = runtime.transport
    engine = runtime.engine
    found: dict[str, float] = {}

    def timed(name: str, on: int, step: Callable[[], None]) -> None:
        comm.Barrier()
        if rank == on:
            started = time.thread_time()
            step()
            found[name] = (time.thread_time() - started) / messages
        comm.Barrier()

    def sent(name: str, step: Callable[[], None], count: int = 0) -> None:
        timed(name, 0, step)
        if rank == 1:  # take what the row sent (untimed), so the next rows start empty
            for _ in range(count):
                geode.receive(timeout=30)
        comm.Barrier()

    def received(name: str, send: Callable[[], None], take: Callable[[], None]) -> None:
        comm.Barrier()
        if rank == 0:
            send()
        timed(name, 1, take)

    def geode_sends() -> None:
        for _ in range(messages):
            geode.send(Message(DATA), dest="node1")

    def raw_sends() -> None:
        requests = [
            comm.isend(message_fields(seq, "node0", "node1", DATA), 1, 9) for seq in range(messages)
        ]
        MPI.Request.Waitall(requests)

    metas: list[bytes] = []

    def encode() -> None:
        metas.clear()
        pair = engine.pair_out(0, 1)
        first = pair.next_seq
        for k in range(messages):
            stamp = codec.make_stamp(k, first + k, time.time(), 0, 1)
            metas.append(codec.encode(Message(DATA), stamp, codec.FLAG_TRACKED)[0])

    def transport_sends() -> None:  # the metas `encode` made, numbered as the next ones
        for meta in metas:
            transport.send(1, meta, ())
        engine.pair_out(0, 1).next_seq += len(metas)

    sent("send: Geode.send (Message, blocking, its own MPI message)", geode_sends, messages)

    def receive_all() -> None:
        for _ in range(messages):
            geode.receive()

    def raw_recv_all() -> None:
        for _ in range(messages):
            comm.recv(source=0, tag=9)

    received("receive: Geode.receive (each taken as it arrives)", geode_sends, receive_all)
    sent("send: codec.encode (and a stamp, Message)", encode)
    sent("send: MPITransport.send (of those bytes)", transport_sends, messages)
    arrivals: list[tuple[int, bytearray]] = []

    def spin() -> None:
        while len(arrivals) < messages:
            got = transport.spin_meta(1.0)
            if got is False:
                raise RuntimeError("hotpath.py --steps: a message sent before the barrier is late")
            if got is not True:  # (True: something else, an ack, went its usual way)
                arrivals.append(got)

    received("receive: MPITransport.spin_meta (probe, Recv)", geode_sends, spin)
    views = [memoryview(buffer) for _, buffer in arrivals]
    taken = []

    def admit() -> None:
        for view in views:
            taken.append(engine.take_arrival(0, view, 1))

    received("receive: Engine.take_arrival (of those: taken, decoded)", lambda: None, admit)
    sent("send: raw isend of the dict", raw_sends)
    received("receive: raw recv of the dict", raw_sends, raw_recv_all)
    return found
