"""What priorities and ttls cost in one process: a queue of N messages drained by receive(),
sent plain (the baseline), with a ttl, with priorities, and with one high-priority message.

Run as ``python benchmarks/priority.py`` (embedded world, no MPI). CPU time of this thread
(``time.thread_time``) per message, sends and receives together: the queue is filled, then
drained. A queue that holds any message with a priority or a ttl scans itself on each take, so
the cost per message grows with the queue's length; the baseline shows where it starts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hotpath import per_message

from geode_mpi import Geode

Send = Callable[[Geode, int], Any]

KINDS: dict[str, Send] = {
    "plain": lambda geode, k: geode.isend(k, "node0", "node1"),
    "ttl": lambda geode, k: geode.isend(k, "node0", "node1", ttl=3600),
    "priorities": lambda geode, k: geode.isend(k, "node0", "node1", priority=k % 4),
    "one high": lambda geode, k: geode.isend(k, "node0", "node1", priority=int(k == 0)),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="1,16,256,4096", help="queue lengths (1,16,256,4096)")
    parser.add_argument("--messages", type=int, default=8192, help="per timed loop, about (8192)")
    parser.add_argument("--repeats", type=int, default=7, help="timed loops per case (7)")
    parser.add_argument("--deep", type=int, default=100_000, help="deep queue's length (100000)")
    parser.add_argument("--takes", type=int, default=2000, help="takes timed from it (2000)")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    options = parser.parse_args(argv)
    lengths = [int(text) for text in options.lengths.split(",") if text]
    geode = Geode()
    results: dict[str, dict[str, float]] = {}
    print(f"{'queue':>6} " + " ".join(f"{kind + ' us':>14}" for kind in KINDS) + "  x plain")
    for length in lengths:
        row = {}
        for kind, send in KINDS.items():

            def fill_and_drain(n: int, send: Send = send, length: int = length) -> None:
                for _ in range(max(1, n // length)):
                    for k in range(length):
                        send(geode, k)
                    for _ in range(length):
                        geode.receive("node1")

            times = per_message(fill_and_drain, options.messages, options.repeats)
            row[kind] = statistics.median(times)
        results[str(length)] = row
        ratios = " ".join(f"{row[kind] / row['plain']:.2f}" for kind in KINDS if kind != "plain")
        print(f"{length:>6} " + " ".join(f"{row[kind]:>14.2f}" for kind in KINDS) + f"  {ratios}")
    geode.close()
    deep = deep_queue(options.deep, options.takes) if options.deep else {}
    if options.json is not None:
        found = {"benchmark": "priority", "us_per_message": results, "deep": deep}
        options.json.write_text(json.dumps(found))
    return 0


def deep_queue(length: int, takes: int) -> dict[str, float]:
    """A queue of ``length`` messages with priorities 0, 1 and 2 in turn: wall time per
    message of filling it, and takes per second of its first ``takes`` receives (each takes
    the oldest of the highest priority, the queue still about ``length`` deep)."""
    geode = Geode()
    started = time.perf_counter()
    for k in range(length):
        geode.isend(k, "node0", "node1", priority=k % 3)
    filled = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(takes):
        geode.receive("node1")
    took = time.perf_counter() - started
    geode.close()  # (the rest stays queued: draining it is not what is measured)
    found = {"length": length, "fill_us": filled / length * 1e6, "takes_per_s": takes / took}
    print(
        f"deep queue of {length} (priorities 0,1,2 in turn): fill {found['fill_us']:.2f} us a "
        f"message, {found['takes_per_s']:.0f} takes/s (the first {takes})"
    )
    return found


if __name__ == "__main__":
    raise SystemExit(main())
