"""The CPU time of the single-threaded hot path in one process: send + receive, isend + receive.

Run as ``python benchmarks/hotpath.py`` (embedded world, no MPI). It times with
``time.thread_time`` (this thread's CPU time), so other processes' load does not count: on a
busy machine it resolves differences of a few percent that a two-rank ping-pong cannot. It
measures geode_mpi's own Python work per message (the part a change to the call path moves),
not MPI.

``mpiexec -n 2 python benchmarks/hotpath.py --steps`` instead times each step of a small
message's path over MPI, each row a layer lower (see `steps`), beside raw mpi4py: 1,000
messages a row, best and median of 5 repeats. Its wall time follows the load, since a waiting
rank spins: 1.5 s at load 6-9 on 2 cores (2,000 a row took 3.5-5.8 s, once 50 s at load 8; the
old default of 20,000 a row did not finish in 300 s). ``--quick`` runs either mode small, as a
smoke test (tests/test_bench_steps.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from geode_mpi import Geode


def per_message(loop: Callable[[int], None], messages: int, repeats: int) -> list[float]:
    """CPU microseconds per message of ``loop(messages)``, once per repeat."""
    times = []
    for _ in range(repeats):
        started = time.thread_time()
        loop(messages)
        times.append((time.thread_time() - started) / messages * 1e6)
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, help="per timed loop (2000), per row with --steps (1000); quick 200"
    )
    parser.add_argument(
        "--repeats", type=int, help="timed loops per method (40; with --steps 5; quick 3)"
    )
    parser.add_argument("--json", type=Path, help="write the numbers here")
    parser.add_argument(
        "--steps", action="store_true", help="under mpiexec -n 2: CPU time of each step"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test: few messages")
    options = parser.parse_args(argv)
    messages = options.messages or (200 if options.quick else 1000 if options.steps else 2000)
    if options.steps:
        import steps

        repeats = options.repeats or (3 if options.quick else 5)
        return steps.main(messages, repeats, options.json)
    repeats = options.repeats or (3 if options.quick else 40)
    geode = Geode()

    def send_receive(n: int) -> None:
        for k in range(n):
            geode.send(k, "node0", "node1")
            geode.receive("node1")

    def isend_receive(n: int) -> None:
        for k in range(n):
            geode.isend(k, "node0", "node1")
        for _ in range(n):
            geode.receive("node1")

    results = {}
    for name, loop in (("send+receive", send_receive), ("isend+receive", isend_receive)):
        times = per_message(loop, messages, repeats)
        results[name] = {"median_us": statistics.median(times), "best_us": min(times)}
        print(f"{name:14} median {statistics.median(times):7.3f} us  best {min(times):7.3f} us")
    geode.close()
    if options.json is not None:
        options.json.write_text(json.dumps({"benchmark": "hotpath", "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
