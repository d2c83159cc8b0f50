"""What a receive's timeout costs: the rate and the round trip with ``receive()`` and with
``receive(timeout=...)``, beside raw mpi4py in the same run.

Users pass a timeout (the docs advise it: nothing should wait forever); the other benchmarks
call ``receive()``. Until 2026-12-06 a positive timeout sent every receive through the general
take: a third of the rate. Run with exactly 2 ranks:
``mpiexec -n 2 python benchmarks/receive_timeout.py``. Each repeat runs every method once,
in a rotating order; ratios are paired within a repeat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

import launch
from common import environment, write_json
from reporting import header
from timing import barrier_then_clock, paired_median, rotated

from geode_mpi import Geode

TIMEOUT_MIN = 0.8  # a timeout may cost this much of the rate or round trip at most


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="per rate loop (20000)")
    parser.add_argument("--trips", type=int, default=2000, help="per round-trip loop (2000)")
    parser.add_argument("--repeats", type=int, default=7, help="repeats (7)")
    parser.add_argument("--timeout", type=float, default=10.0, help="the timeout passed (10)")
    parser.add_argument("--quick", action="store_true", help="a smoke test of a second or two")
    launch.json_option(parser, "receive_timeout")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.trips, args.repeats = 2000, 200, 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    MPI = launch.start_mpi("receive_timeout.py", exactly=True)
    if MPI is None:
        return 2
    comm, wtime = MPI.COMM_WORLD, MPI.Wtime
    rank = comm.rank
    geode = Geode()
    waits: dict[str, dict[str, Any]] = {"receive()": {}, "receive(timeout)": {}}
    waits["receive(timeout)"]["timeout"] = args.timeout

    def raw_rate(n: int) -> float:
        start = barrier_then_clock(comm, wtime)
        if rank == 0:
            requests = []
            for i in range(n):
                requests.append(comm.isend(i, 1))
                if len(requests) >= 64:
                    MPI.Request.waitall(requests)
                    requests = []
            MPI.Request.waitall(requests)
            comm.recv(source=1)
        else:
            for _ in range(n):
                comm.recv(source=0)
            comm.send(None, 0)
        return n / (wtime() - start)

    def geode_rate(n: int, kwargs: dict[str, Any]) -> float:
        start = barrier_then_clock(comm, wtime)
        if rank == 0:
            for i in range(n):
                geode.isend(i, dest=1)
            geode.flush()
            geode.receive(**kwargs)
        else:
            for i in range(n):
                got = geode.receive(**kwargs)
                if got.data != i:
                    raise RuntimeError(f"rank 1 expected {i}, got {got!r}")
            geode.send(None, dest=0)
        return n / (wtime() - start)

    def raw_trip(n: int) -> float:
        start = barrier_then_clock(comm, wtime)
        for i in range(n):
            if rank == 0:
                comm.send(i, 1)
                comm.recv(source=1)
            else:
                comm.send(comm.recv(source=0), 0)
        return (wtime() - start) / n / 2 * 1e6

    def geode_trip(n: int, kwargs: dict[str, Any]) -> float:
        start = barrier_then_clock(comm, wtime)
        for i in range(n):
            if rank == 0:
                geode.send(i, dest=1)
                geode.receive(**kwargs)
            else:
                geode.send(geode.receive(**kwargs).data, dest=0)
        return (wtime() - start) / n / 2 * 1e6

    methods: dict[str, Callable[[], float]] = {
        "rate raw": lambda: raw_rate(args.messages),
        "trip raw": lambda: raw_trip(args.trips),
    }
    for name, kwargs in waits.items():
        methods[f"rate {name}"] = lambda kwargs=kwargs: geode_rate(args.messages, kwargs)
        methods[f"trip {name}"] = lambda kwargs=kwargs: geode_trip(args.trips, kwargs)
    for method in methods.values():  # warm up
        method()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(args.repeats):
        for name in rotated(list(methods), repeat):
            times[name].append(comm.bcast(methods[name](), root=1))
    geode.close()
    if rank != 0:
        return 0
    raws = {"rate": times["rate raw"], "trip": times["trip raw"]}
    lines = header(environment(MPI), "receive with and without a timeout", args.quick)
    lines.append(f"{'method':<24}{'median':>12}{'/ raw':>8}{'/ receive()':>13}")
    ratios: dict[str, float] = {}
    for name, values in times.items():
        kind = name.split()[0]
        # a rate's ratio is geode over raw; a trip's (one-way us) raw over geode: higher is better
        over_raw = (
            paired_median(values, raws[kind])
            if kind == "rate"
            else paired_median(raws[kind], values)
        )
        plain = times[f"{kind} receive()"]
        over_plain = (
            paired_median(values, plain) if kind == "rate" else paired_median(plain, values)
        )
        ratios[f"{name} / raw"], ratios[f"{name} / receive()"] = over_raw, over_plain
        unit = "msgs/s" if kind == "rate" else "us"
        lines.append(f"{name:<24}{statistics.median(values):>10,.1f} {unit:<6}"
                     f"{over_raw:>6.2f}{over_plain:>13.2f}")  # fmt: skip
    lines.append("ratios paired per repeat, speed over speed: above 1 is faster")
    failed = False
    for kind in ("rate", "trip"):
        ratio = ratios[f"{kind} receive(timeout) / receive()"]
        ok = ratio >= TIMEOUT_MIN
        failed |= not ok
        lines.append(
            f"{'PASS' if ok else 'FAIL'}  {kind} with timeout={args.timeout:g} >= "
            f"{TIMEOUT_MIN} x without: {ratio:.2f}"
        )
    print("\n".join(lines))
    report = {"settings": vars(args) | {"json": str(args.json)}, "times": times, "ratios": ratios}
    print(f"all numbers in {write_json(args.json, report, 'receive_timeout')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
