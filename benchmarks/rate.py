"""Small-message rate of geode_mpi, with and without acks, beside raw mpi4py isend, interleaved.

Run as ``mpiexec -n 2 python benchmarks/rate.py`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import launch
import numpy as np
import reporting
from baseline import message_fields
from common import environment
from launch import Scaled
from timing import barrier_then_clock, paired, rotated

from geode_mpi import Geode, Message, ReceiveTimeout, SendHandle, __version__

RAW, NO_ACKS, ACKS = "raw isend", "geode no acks", "geode acks"
DICT_DATA = "geode dict data"  # no acks, a small dict as data: pickled, where a str is not
METHODS = (RAW, NO_ACKS, ACKS, DICT_DATA)
DATA = "hello world"
TAG = 7
ACKED_MIN = 0.5  # target: geode with acks keeps at least this fraction of the no-acks rate
UNACKED_MIN = 0.5  # target: geode without acks reaches at least this fraction of raw isend
RATE_MIN = 1.0  # issue 17's target: geode with acks at least as fast as raw isend
SCALED: Scaled = {
    "messages": (20000, 2000, "per timed loop"),
    "repeats": (7, 3, "timed loops per method"),
}
DRAIN_SECONDS = 10.0  # how long the producer waits for the last acks after a timed loop


class Tick(Message):
    """A Message subclass with an attribute of its own (``--payloads``' "subclass")."""

    def __init__(self, data: Any, step: int) -> None:
        super().__init__(data)
        self.step = step


# --payloads: what each kind's message holds (made afresh per send, as the raw dict is).
PAYLOADS: dict[str, Callable[[int], Any]] = {
    "str": lambda i: DATA,
    "int": lambda i: i,
    "dict": lambda i: {"step": i, "value": 0.5, "label": DATA},
    "tuple": lambda i: (i, 0.5, DATA),
    "array": lambda i: np.full(4, i, np.float64),
    "subclass": lambda i: Tick(DATA, i),
}
# isend_many (a tree that has it): batches of MANY_BATCH, or the loop's n in one call; the
# consumer takes with receive(), or receive_many() ("bulk")
MANY_BATCH = 64
MANY = ("geode many 64", "geode many 64 bulk", "geode many all", "geode many all bulk")
MANY = MANY if hasattr(Geode, "isend_many") else ()  # (ab.py runs this file on older trees)
PAYLOAD_METHODS = ("geode", "geode bulk", "geode loop", *MANY, "raw object", "raw fields")
# bulk: the consumer takes with receive_many; loop: the producer keeps no handles
# (``for x in xs: geode.isend(x, dest=...)``, then ``flush()``), the consumer calls receive()
GEODES = ("geode", "geode bulk", "geode loop", *MANY)
BARE_KINDS = ("str", "int", "dict", "tuple")  # target (4): the worst of them against raw isend
RAWS = ("raw object", "raw fields")


@dataclass
class Run:
    """Both ranks' state: a private raw communicator, the two Geodes, the seq each method is at."""

    comm: Any
    rank: int
    wtime: Callable[[], float]
    geodes: dict[str, Geode]
    window: int
    next_seq: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METHODS, 0))
    acks: list[dict[str, Any]] = field(default_factory=list)
    # --payloads: (kind, method) -> each loop's CPU us a message on (producer, consumer)
    cpu: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    acks_sent: int = 0  # the consumer's ack records so far


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Small-message rate (messages/s, a window of outstanding sends) of geode_mpi "
        "without and with acks, beside raw mpi4py isend/recv of dicts. Run with exactly 2 ranks: "
        "mpiexec -n 2 python benchmarks/rate.py",
    )
    parser.add_argument("--window", type=int, default=64, help="sends outstanding at most (64)")
    launch.scaled_options(parser, SCALED, "a smoke test of a second or two")
    parser.add_argument(
        "--payloads",
        default="",
        help="also time geode's isend of these kinds of data (comma-separated, of "
        f"{','.join(PAYLOADS)}; 'all') beside raw isend of the same object and of a dict of "
        "a Message's fields holding it",
    )
    launch.json_option(parser, "rate")
    args = launch.parse_scaled(parser, argv, SCALED)
    args.payloads = (
        list(PAYLOADS) if args.payloads == "all" else [*filter(None, args.payloads.split(","))]
    )
    for kind in args.payloads:
        if kind not in PAYLOADS:
            parser.error(f"--payloads: unknown kind {kind!r}, of {','.join(PAYLOADS)}")
    launch.at_least_one(parser, args, ("window",))
    return args


# -- the timed loops: rank 0 produces, rank 1 consumes and times ---------------------------------
# Both ranks leave a barrier; the consumer's clock runs from there until it holds all n messages.


def raw_loop(run: Run, n: int) -> tuple[float, str | None]:
    from mpi4py import MPI

    comm, first = run.comm, run.next_seq[RAW]
    bad = None
    start = barrier_then_clock(comm, run.wtime)
    if run.rank == 0:
        requests: list[Any] = []
        for seq in range(first, first + n):
            requests.append(
                comm.isend(message_fields(seq, "node0", "node1", DATA), dest=1, tag=TAG)
            )
            if len(requests) >= run.window:
                MPI.Request.Waitall(requests)
                requests.clear()
        MPI.Request.Waitall(requests)
    else:
        for seq in range(first, first + n):
            got = comm.recv(source=0, tag=TAG)
            if bad is None and (got["seq"] != seq or got["data"] != DATA):
                bad = f"expected seq {seq}, got {got!r}"
    return run.wtime() - start, bad


def geode_loop(run: Run, method: str, n: int) -> tuple[float, str | None]:
    geode, first = run.geodes[method], run.next_seq[method]
    bad = None
    start = barrier_then_clock(run.comm, run.wtime)
    if run.rank == 0:
        handles: deque[SendHandle] = deque()
        for step in range(n):
            data = DATA if method != DICT_DATA else {"step": step, "value": 0.5, "label": DATA}
            handle = geode.isend(Message(data), dest="node1")
            assert handle is not None
            handles.append(handle)
            while handles and handles[0].done():
                handles.popleft()
            if len(handles) >= run.window:
                handles.popleft().wait()
        for handle in handles:
            handle.wait()
    else:
        for seq in range(first, first + n):
            got = geode.receive()
            data = got.data if method != DICT_DATA else got.data["label"]
            if bad is None and (got.seq != seq or data != DATA or got.source != "node0"):
                bad = f"expected seq {seq} from node0, got {got!r}"
    return run.wtime() - start, bad


def payload_loop(run: Run, kind: str, method: str, n: int) -> float:
    """One loop of ``--payloads``: n messages of ``kind``, from rank 0 to rank 1, by
    ``method``; the consumer's seconds (the same on both ranks). The geode methods use the
    Geode with acks: "geode" and "geode bulk" keep the handles as `geode_loop` does, "geode
    loop" keeps none and flushes at the end; the raw ones run as `raw_loop`."""
    from mpi4py import MPI

    make, comm, geode = PAYLOADS[kind], run.comm, run.geodes[ACKS]
    start = barrier_then_clock(comm, run.wtime)
    cpu = time.thread_time()
    if run.rank == 0 and method == "geode loop":
        for step in range(n):
            geode.isend(make(step), dest="node1")
        geode.flush()
    elif run.rank == 0 and method in MANY:
        many_loop(run, geode, make, n, n if " all" in method else MANY_BATCH)
    elif run.rank == 0 and method in GEODES:
        handles: deque[SendHandle] = deque()
        for step in range(n):
            handles.append(geode.isend(make(step), dest="node1"))
            while handles and handles[0].done():
                handles.popleft()
            if len(handles) >= run.window:
                handles.popleft().wait()
        for handle in handles:
            handle.wait()
    elif run.rank == 0:
        requests: list[Any] = []
        for step in range(n):
            item = make(step)
            if method == "raw fields":
                item = message_fields(step, "node0", "node1", item)
            requests.append(comm.isend(item, dest=1, tag=TAG))
            if len(requests) >= run.window:
                MPI.Request.Waitall(requests)
                requests.clear()
        MPI.Request.Waitall(requests)
    elif method in ("geode", "geode loop", "geode many 64", "geode many all"):
        for _ in range(n):
            geode.receive()
    elif method in GEODES:  # (the bulk ones)
        got = 0
        while got < n:
            got += len(geode.receive_many())
    else:
        for _ in range(n):
            comm.recv(source=0, tag=TAG)
    cpu = (time.thread_time() - cpu) / n * 1e6
    seconds = float(comm.bcast(run.wtime() - start, root=1))
    run.cpu.setdefault((kind, method), []).append(tuple(comm.allgather(cpu)))  # type: ignore[arg-type]
    if method in GEODES:
        drain_acks(run, n)  # (untimed, as after a loop with acks)
    return seconds


def least_work(n: int) -> tuple[float, float]:
    """The floor of a run's per-message work in this process, CPU us a message: a producer's
    (the bare value and a timestamp appended, a seq and a counter stepped, a handle of the run
    and index made and checked) and a consumer's (the next of a run's messages, each built
    with its fields in one pass, handed out with its seq checked and counted)."""
    from geode_mpi.codec.runs import build

    class Handle:
        __slots__ = ("at", "run")

        def __init__(self, run: list[Any], at: int) -> None:
            self.run = run
            self.at = at

    class Counters:  # (a pair's next seq, a node's count of messages sent)
        __slots__ = ("next_seq", "sent")

        def __init__(self) -> None:
            self.next_seq = self.sent = 0

    payloads: list[Any] = []
    stamps: list[float] = []
    clock = time.time
    handles: deque[Handle] = deque()
    counters = Counters()
    start = time.thread_time()
    for _ in range(n):
        if len(payloads) >= 64:
            payloads, stamps = [], []
        handles.append(Handle(payloads, len(payloads)))
        payloads.append(DATA)
        stamps.append(clock())
        counters.next_seq += 1
        counters.sent += 1
        if len(handles) >= 64:
            handles.popleft()
    producer = (time.thread_time() - start) / n * 1e6
    runs = n // 64
    start = time.thread_time()
    processed = done_below = 0
    for first in range(0, runs * 64, 64):
        built = build(Message, [DATA] * 64, [0.0] * 64, first, first, "node0", "node1")
        for at in range(64):
            if first + at == done_below:
                done_below += 1
                processed += 1
            built[at]
    return producer, (time.thread_time() - start) / (runs * 64) * 1e6


def least_work_called(n: int, window: int) -> float:
    """The producer's floor through the calls the API asks for, CPU us a message: the
    benchmark's own loop (a handle kept per send, the oldest's ``done()`` checked after each
    send, one waited for when ``window`` are kept) over an ``isend`` with `Geode.isend`'s
    signature that does only a run's least work (`least_work`'s producer: the value and a
    timestamp appended, a seq and a counter stepped) and returns a handle of the run and
    index; no MPI, no sealing, no polls, no acks. What no Python isend with a handle per
    message can go below (raw ``isend`` does all its work in C)."""

    class Lane:  # (a pair's open run: its payloads, stamps, next seq; a node's sent count)
        __slots__ = ("next_seq", "payloads", "sent", "stamps", "went")

        def __init__(self) -> None:
            self.payloads: list[Any] = []
            self.stamps: list[float] = []
            self.next_seq = self.sent = 0
            self.went = False

    class Handle:
        __slots__ = ("at", "lane")

        def __init__(self, lane: Lane, at: int) -> None:
            self.lane = lane
            self.at = at

        def done(self) -> bool:
            return self.lane.went

        def wait(self) -> None:
            self.lane.went = True

    lanes = {"node1": Lane()}
    clock = time.time

    def isend(
        message: Any,
        source: str | None = None,
        dest: str | None = None,
        *,
        ack: bool = False,
        timeout: float | None = None,
        compress: str | None = None,
        priority: int = 0,
        ttl: float | None = None,
    ) -> Handle:
        if compress is None and not priority and ttl is None and source is None and not ack:
            lane = lanes[dest]  # type: ignore[index]
            payloads = lane.payloads
            at = len(payloads)
            if at >= 64:  # (full: the next run; sealing and sending it is not counted)
                lane.went = True
                lane = lanes[dest] = Lane()  # type: ignore[index]
                payloads, at = lane.payloads, 0
            payloads.append(message)
            lane.stamps.append(clock())
            lane.next_seq += 1
            lane.sent += 1
            return Handle(lane, at)
        raise NotImplementedError

    handles: deque[Handle] = deque()
    start = time.thread_time()
    for _ in range(n):
        handles.append(isend(DATA, dest="node1"))
        while handles and handles[0].done():
            handles.popleft()
        if len(handles) >= window:
            handles.popleft().wait()
    return (time.thread_time() - start) / n * 1e6


def least_work_received(n: int) -> float:
    """The consumer's floor through the call the API asks for, CPU us a message: a loop of
    ``receive()`` with `Geode.receive`'s signature that checks its arguments ask for the
    plain case and hands out the next message of a run built in one pass (`codec.runs.build`,
    each run's 64 built at its first take), with its pair's processed seq and its node's
    count stepped; no MPI, no unpickle, no polls, no acks."""
    from geode_mpi.codec.runs import build

    class Cursor:  # (a queued run: its messages once built, the next to hand out)
        __slots__ = ("at", "built", "first")

        def __init__(self, first: int) -> None:
            self.first = first
            self.at = 0
            self.built: list[Message] | None = None

    class Counters:  # (a pair's seq processed below, a node's count of messages processed)
        __slots__ = ("done_below", "processed")

        def __init__(self) -> None:
            self.done_below = self.processed = 0

    queue = deque(Cursor(first) for first in range(0, n - n % 64, 64))
    counters = Counters()
    payloads, stamps = [DATA] * 64, [0.0] * 64

    def receive(
        node: str | None = None,
        *,
        source: str | None = None,
        type: Any = None,
        timeout: float | None = None,
        order: str | None = None,
        topic: str | None = None,
    ) -> Message:
        if node is None and source is None and type is None and order is None and topic is None:
            cursor = queue[0]
            built = cursor.built
            if built is None:
                built = cursor.built = build(
                    Message, payloads, stamps, cursor.first, cursor.first, "node0", "node1"
                )
            at = cursor.at
            cursor.at = at + 1
            if at == 63:
                queue.popleft()
            if cursor.first + at == counters.done_below:
                counters.done_below += 1
                counters.processed += 1
            return built[at]
        raise NotImplementedError

    count = len(queue) * 64
    start = time.thread_time()
    for _ in range(count):
        receive()
    return (time.thread_time() - start) / count * 1e6


def many_loop(run: Run, geode: Geode, make: Callable[[int], Any], n: int, batch: int) -> None:
    """The producer of an isend_many method: n items in calls of ``batch``, each building its
    items as the other loops do (one ``make`` a message), at most the window's messages
    (rounded up to whole batches) in flight."""
    handles: deque[Any] = deque()
    most = max(1, -(-run.window // batch))
    for first in range(0, n, batch):
        handles.append(
            geode.isend_many([make(s) for s in range(first, min(n, first + batch))], dest="node1")
        )
        while handles and handles[0].done():
            handles.popleft()
        if len(handles) >= most:
            handles.popleft().wait()
    for handle in handles:
        handle.wait()


def measure_payloads(run: Run, kinds: list[str], n: int, repeats: int) -> dict[str, Any]:
    """``--payloads``: each kind's rate by each method, every repeat (the methods rotating),
    and geode's paired ratio to each raw method."""
    rates: dict[str, dict[str, list[float]]] = {}
    for kind in kinds:
        for method in PAYLOAD_METHODS:  # warm up
            payload_loop(run, kind, method, min(n, 2000))
        found = rates[kind] = {method: [] for method in PAYLOAD_METHODS}
        for repeat in range(repeats):
            for method in rotated(PAYLOAD_METHODS, repeat):
                found[method].append(n / payload_loop(run, kind, method, n))
    ratios = {
        kind: {
            f"{mine.replace(' ', '_')}_over_{raw.replace(' ', '_')}": statistics.median(
                paired(found[mine], found[raw])
            )
            for mine in GEODES
            for raw in RAWS
        }
        for kind, found in rates.items()
    }
    cpu = {
        f"{kind} {method}": [statistics.median(side) for side in zip(*loops, strict=True)]
        for (kind, method), loops in run.cpu.items()
    }
    floor = [least_work(n) for _ in range(repeats)] if kinds else []
    least = [min(side) for side in zip(*floor, strict=True)] if floor else []
    called = min(least_work_called(n, run.window) for _ in range(repeats)) if kinds else 0.0
    received = min(least_work_received(n) for _ in range(repeats)) if kinds else 0.0
    return {
        "rates_per_s": rates,
        "median_ratios": ratios,
        "cpu_us": cpu,
        "least_work_us": least,
        "least_work_called_us": called,
        "least_work_received_us": received,
    }


def payload_lines(payloads: dict[str, Any]) -> list[str]:
    """The ``--payloads`` table."""
    lines = [
        "",
        "by payload (geode with acks, the consumer taking with receive() / receive_many();",
        "raw isend of the same object, and of a dict of a Message's fields holding it;",
        "loop: the producer keeps no handles, isend in a loop then flush()):",
        f"{'payload':<10}{'geode msgs/s':>14}{'/ raw object':>14}{'/ raw fields':>14}"
        f"{'bulk / object':>15}{'bulk / fields':>15}{'loop / object':>15}",
    ]
    for kind, found in payloads["rates_per_s"].items():
        ratios = payloads["median_ratios"][kind]
        lines.append(
            f"{kind:<10}{statistics.median(found['geode']):>14,.0f}"
            f"{ratios['geode_over_raw_object']:>14.2f}{ratios['geode_over_raw_fields']:>14.2f}"
            f"{ratios['geode_bulk_over_raw_object']:>15.2f}"
            f"{ratios['geode_bulk_over_raw_fields']:>15.2f}"
            f"{ratios['geode_loop_over_raw_object']:>15.2f}"
        )
    if MANY:
        lines += [
            "",
            f"isend_many (batches of {MANY_BATCH}, or the loop's messages in one call), over raw",
            "isend of the same object; the consumer taking with receive() / receive_many():",
            f"{'payload':<10}{'64 / object':>14}{'64 bulk':>10}"
            f"{'all / object':>14}{'all bulk':>10}",
        ]
        for kind in payloads["rates_per_s"]:
            ratios = payloads["median_ratios"][kind]
            lines.append(
                f"{kind:<10}{ratios['geode_many_64_over_raw_object']:>14.2f}"
                f"{ratios['geode_many_64_bulk_over_raw_object']:>10.2f}"
                f"{ratios['geode_many_all_over_raw_object']:>14.2f}"
                f"{ratios['geode_many_all_bulk_over_raw_object']:>10.2f}"
            )
    lines += [
        "",
        "CPU us a message while timed (median of the loops), producer / consumer (a side",
        "that waits for the other spins: the busier side's figure is its work):",
    ]
    for kind in payloads["rates_per_s"]:
        cells = [
            f"{method} {payloads['cpu_us'][f'{kind} {method}'][0]:.2f} / "
            f"{payloads['cpu_us'][f'{kind} {method}'][1]:.2f}"
            for method in PAYLOAD_METHODS
        ]
        lines.append(f"{kind:<10}" + "; ".join(cells))
    producer, consumer = payloads["least_work_us"]
    lines.append(
        f"least work of a run (this process, a str): producer {producer:.2f}, consumer "
        f"{consumer:.2f} us a message; the producer's through isend's call, a handle "
        f"and the loop's done() checks (no MPI): {payloads['least_work_called_us']:.2f}; "
        f"the consumer's through receive()'s call: {payloads['least_work_received_us']:.2f}"
    )
    return lines


def drain_acks(run: Run, n: int) -> dict[str, Any]:
    """After a loop with acks (untimed): wait until the producer's outbox is empty."""
    geode = run.geodes[ACKS]
    if run.rank == 1:
        # Acks go out per 64 messages, or once a receive has waited a little: wait 1 ms, so
        # the last partial batch goes out (nothing else is coming: this times out).
        try:
            geode.receive(timeout=0.001)
            raise RuntimeError("the consumer received a message nobody sent")
        except ReceiveTimeout:
            pass
    start = time.perf_counter()
    while run.rank == 0 and time.perf_counter() - start < DRAIN_SECONDS:
        stats = geode.stats()
        if stats.acked == stats.sent:
            break
        geode.pending()
    seconds = time.perf_counter() - start
    stats = geode.stats()
    total = run.comm.bcast(stats.acks_sent, root=1)
    records, run.acks_sent = total - run.acks_sent, total
    record = {"messages": n, "ack_records": records, "drain_s": seconds}
    return record | {"sent": stats.sent, "acked": stats.acked, "unacked": stats.unacked}


def timed(run: Run, method: str, n: int) -> float:
    """Run one loop; return the consumer's messages per second (the same on both ranks)."""
    seconds, bad = raw_loop(run, n) if method == RAW else geode_loop(run, method, n)
    run.next_seq[method] += n
    seconds, bad = run.comm.bcast((seconds, bad), root=1)
    if bad is not None:
        raise RuntimeError(f"rank {run.rank}: {method} delivered a wrong message: {bad}")
    if method == ACKS:
        run.acks.append(drain_acks(run, n))
    return float(n / seconds)


def measure(run: Run, n: int, repeats: int) -> dict[str, list[float]]:
    for method in METHODS:  # warm up and check each method once
        timed(run, method, min(n, 2000))
    run.acks.clear()
    rates: dict[str, list[float]] = {method: [] for method in METHODS}
    for repeat in range(repeats):
        for method in rotated(METHODS, repeat):
            rates[method].append(timed(run, method, n))
    return rates


# -- reporting -----------------------------------------------------------------------------------


def bare_worst(payloads: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """Target (4)'s figures: for each geode method, the kind of `BARE_KINDS` (of those timed)
    with the lowest paired ratio to raw ``isend`` of the same bare object, and that ratio."""
    found = {kind: payloads["median_ratios"][kind] for kind in BARE_KINDS}
    return {
        method: min(
            (
                (kind, ratios[f"{method.replace(' ', '_')}_over_raw_object"])
                for kind, ratios in found.items()
            ),
            key=lambda item: item[1],
        )
        for method in GEODES
    }


def report(
    args: argparse.Namespace,
    rates: dict[str, list[float]],
    acks: list[dict[str, Any]],
    payloads: dict[str, Any],
) -> tuple[list[str], dict[str, Any], list[dict[str, Any]]]:
    """The table's lines, the numbers for the JSON file, and the targets."""
    ratios = {
        "no_acks_over_raw": paired(rates[NO_ACKS], rates[RAW]),
        "acks_over_raw": paired(rates[ACKS], rates[RAW]),
        "acks_over_no_acks": paired(rates[ACKS], rates[NO_ACKS]),
        "dict_data_over_raw": paired(rates[DICT_DATA], rates[RAW]),
    }
    medians = {name: statistics.median(values) for name, values in ratios.items()}
    targets = [
        (f"(1) acked >= {ACKED_MIN} x unacked", "acks_over_no_acks", ACKED_MIN),
        (f"(2) unacked >= {UNACKED_MIN} x raw isend", "no_acks_over_raw", UNACKED_MIN),
        (f"(3) acked >= {RATE_MIN} x raw isend of a fields dict (issue 17)", "acks_over_raw",
         RATE_MIN),
    ]  # fmt: skip
    if all(kind in args.payloads for kind in BARE_KINDS):
        worst = bare_worst(payloads)
        for method, (_, ratio) in worst.items():
            medians[f"bare_object_worst_{method.replace(' ', '_')}"] = ratio
        kind = worst["geode"][0]
        text = (
            f"(4) acked >= {RATE_MIN} x raw isend of the same bare object, the worst of "
            f"{'/'.join(BARE_KINDS)} ({kind}; receive_many {worst['geode bulk'][1]:.2f} "
            f"({worst['geode bulk'][0]}), no handles kept {worst['geode loop'][1]:.2f} "
            f"({worst['geode loop'][0]})) (issue 17)"
        )
        targets.append((text, "bare_object_worst_geode", RATE_MIN))
        if MANY:
            kind, _ = worst["geode many 64 bulk"]
            text = (
                f"(5) isend_many (batches of {MANY_BATCH}, receive_many) >= {RATE_MIN} x raw "
                f"isend of the same bare object, the worst of {'/'.join(BARE_KINDS)} ({kind}; "
                f"with receive() {worst['geode many 64'][1]:.2f} ({worst['geode many 64'][0]}), "
                f"the loop's messages in one call {worst['geode many all bulk'][1]:.2f} "
                f"({worst['geode many all bulk'][0]})) (issue 17)"
            )
            targets.append((text, "bare_object_worst_geode_many_64_bulk", RATE_MIN))
    results = [
        {"target": text, "ratio": medians[key], "result": "PASS" if medians[key] >= low else "FAIL"}
        for text, key, low in targets
    ]
    lines = [f"{'method':<16}{'msgs/s':>12}{'ratio to raw':>14}{'acked/unacked':>15}", "-" * 57]
    cells = {RAW: ("1.00", ""), NO_ACKS: (f"{medians['no_acks_over_raw']:.2f}", "")}
    cells[ACKS] = (f"{medians['acks_over_raw']:.2f}", f"{medians['acks_over_no_acks']:.2f}")
    cells[DICT_DATA] = (f"{medians['dict_data_over_raw']:.2f}", "")
    for method in METHODS:
        rate = statistics.median(rates[method])
        lines.append(f"{method:<16}{rate:>12,.0f}{cells[method][0]:>14}{cells[method][1]:>15}")
    records = statistics.median(r["ack_records"] for r in acks)
    drained = all(r["unacked"] == 0 and r["acked"] == r["sent"] for r in acks)
    lines.append(
        f"acks: {records:.0f} ack records per loop of {args.messages} (median); the outbox "
        + ("drained after every loop" if drained else "did NOT drain: see the JSON file")
        + f", the slowest in {max(r['drain_s'] for r in acks) * 1e3:.1f} ms"
    )
    lines.append(
        f"data: '{DATA}' (a str travels as UTF-8 text); {DICT_DATA}: a 3-key dict (pickled)"
    )
    lines.append("ratios are paired: the median over repeats of the two rates in the same repeat")
    lines.append("targets:")
    lines += [f"  {item['result']}  {item['target']}: {item['ratio']:.2f}" for item in results]
    return lines, {"rates_per_s": rates, "ratios": ratios, "median_ratios": medians}, results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    MPI = launch.start_mpi("rate.py", exactly=True)
    if MPI is None:
        return 2
    # collective, in this order
    geodes = {NO_ACKS: Geode(acks=False), ACKS: Geode(acks=True), DICT_DATA: Geode(acks=False)}
    comm = MPI.COMM_WORLD.Dup()
    run = Run(comm, comm.Get_rank(), MPI.Wtime, geodes, args.window)
    env = environment(MPI)
    if run.rank == 0:
        print(
            f"geode_mpi {__version__} small-message rate, 2 ranks, {env['cores']} cores, "
            f"{args.messages} messages per loop, window {args.window}, median of "
            f"{args.repeats} interleaved repeats" + (" (quick)" if args.quick else "")
        )
        print(f"MPI library: {env['mpi_library']} (mpi4py {env['mpi4py']})", flush=True)
    began = reporting.started()
    clock = time.perf_counter()
    rates = measure(run, args.messages, args.repeats)
    payloads = measure_payloads(run, args.payloads, args.messages, args.repeats)
    elapsed = time.perf_counter() - clock
    for geode in geodes.values():
        geode.close()
    run.comm.Free()
    if run.rank != 0:
        return 0
    lines, numbers, targets = report(args, rates, run.acks, payloads)
    print("\n".join(lines + (payload_lines(payloads) if args.payloads else [])))
    settings = {"messages": args.messages, "window": args.window, "repeats": args.repeats}
    settings |= {"quick": args.quick, "payloads": args.payloads}
    numbers |= {"acks": run.acks, "targets": targets, "payloads": payloads}
    reporting.finish(args.json, "rate", (began, elapsed, settings, env), numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
