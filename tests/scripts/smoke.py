"""The CI smoke at scale: every capability once, at any rank count (64 in .ci/run).

Run as ``mpiexec -n 64 python -m geode_mpi tests/scripts/smoke.py --dir DIR`` (one node per
rank), or with plain python (the embedded world). Each part checks what arrived; any failure
raises, the runner aborts the job, and the exit status is non-zero. ``--fail PART`` makes the
last node fail that part on purpose (the test that the smoke can fail). On success rank 0
prints one line: ``smoke OK: N nodes on P ranks: hello 0.01 s, ...``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from geode_mpi import Geode, Message

PARTS = ("hello", "all-to-all", "topic", "work queue", "checkpoint", "restart")
TIMEOUT = 120.0  # seconds any one receive may wait: far above what 64 oversubscribed ranks need


class Result(Message):
    """A work-queue task's result, sent back to the dispatcher's node."""


def expect(condition: bool, part: str, what: str) -> None:
    if not condition:
        raise RuntimeError(f"smoke: {part} failed: {what}")


def hello(geode: Geode) -> None:
    """Each node greets the next one (node k -> node k+1, around the ring)."""
    nodes = geode.nodes
    for k, node in enumerate(nodes):
        geode.send(f"hello from {node}", node, nodes[(k + 1) % len(nodes)])
    for node in geode.local_nodes:
        before = nodes[(nodes.index(node) - 1) % len(nodes)]
        got = geode.receive(node, source=before, timeout=TIMEOUT)
        expect(got.data == f"hello from {before}", "hello", f"{node} got {got.data!r}")


def all_to_all(geode: Geode) -> None:
    """Every node sends an array to every other node; each gets one from each, intact."""
    nodes = geode.nodes
    for k, source in enumerate(nodes):
        for dest in nodes:
            if dest != source and geode.hosts(source):
                geode.send(np.full(16, k, dtype=np.int64), source, dest)
    for node in geode.local_nodes:
        seen = set()
        for _ in range(len(nodes) - 1):
            got = geode.receive(node, timeout=TIMEOUT)
            k = nodes.index(got.source)
            expect(bool(np.all(got.data == k)), "all-to-all", f"{node} got {got.data} from {k}")
            seen.add(got.source)
        expect(len(seen) == len(nodes) - 1, "all-to-all", f"{node} heard from {len(seen)}")


def topic(geode: Geode) -> None:
    """node0 publishes three messages; every other node gets all three, in order."""
    nodes = geode.nodes
    news = geode.topic("news", publishers=[nodes[0]], subscribers=nodes[1:])
    handles = [news.publish(np.arange(step, step + 4), source=nodes[0]) for step in range(3)]
    for handle in handles:
        handle.wait(timeout=TIMEOUT)
    for node in geode.local_nodes:
        if node != nodes[0]:
            got = [geode.receive(node, topic="news", timeout=TIMEOUT).data[0] for _ in range(3)]
            expect(got == [0, 1, 2], "topic", f"{node} got {got}")


def work_queue(geode: Geode) -> None:
    """node0 puts two tasks per consumer; each is done once, and the results come back."""
    nodes = geode.nodes
    consumers = nodes[1:] or nodes
    tasks = geode.work_queue("tasks", consumers, dispatcher=nodes[0], producers=nodes[:1])
    count = 2 * len(consumers)
    if geode.hosts(nodes[0]):
        for task in range(count):
            tasks.put(task, source=nodes[0])
    tasks.finish(source=nodes[0])
    busy = [node for node in consumers if geode.hosts(node)]
    while busy:  # by turns: in one process, a consumer that waited alone would wait forever
        for node in list(busy):
            task = tasks.get(node, timeout=TIMEOUT)
            if task is None:
                busy.remove(node)
            else:
                geode.send(Result(task.data), node, nodes[0])
    tasks.serve(timeout=TIMEOUT)  # on node0's rank: until every consumer heard it is over
    if geode.hosts(nodes[0]):
        done = sorted(
            geode.receive(nodes[0], type=Result, timeout=TIMEOUT).data for _ in range(count)
        )
        expect(done == list(range(count)), "work queue", f"results {done}")


def checkpoint(geode: Geode) -> None:
    """Each node leaves one message queued at the next, then the job checkpoints."""
    nodes = geode.nodes
    for k, node in enumerate(nodes):
        geode.send(Message(k), node, nodes[(k + 1) % len(nodes)])
    epoch = geode.checkpoint(state={"nodes": len(nodes)}, timeout=TIMEOUT)
    expect(epoch == 1, "checkpoint", f"epoch {epoch}")
    received(geode, "checkpoint")  # processed after the checkpoint: the restart has them again


def received(geode: Geode, part: str) -> None:
    """Each local node has exactly the message its ring neighbour left before the checkpoint."""
    nodes = geode.nodes
    for node in geode.local_nodes:
        before = nodes[(nodes.index(node) - 1) % len(nodes)]
        got = geode.receive(node, source=before, timeout=TIMEOUT)
        expect(got.data == nodes.index(before), part, f"{node} got {got.data!r}")
        expect(geode.try_receive(node) is None, part, f"{node} got a message twice")


def restart(directory: str) -> Geode:
    """A new Geode from the checkpoint: its state back, each queued message there once."""
    geode = Geode(checkpoint_dir=directory, restart=True)
    nodes = geode.nodes
    state = geode.restored_state or {}
    expect(state.get("nodes") == len(nodes), "restart", f"restored state {state}")
    received(geode, "restart")
    return geode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the checkpoint directory (shared)")
    parser.add_argument("--fail", choices=PARTS, default=None, help="fail this part on purpose")
    args = parser.parse_args()
    start = time.perf_counter()
    geode = Geode(checkpoint_dir=args.dir)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("hello", lambda: hello(geode)),
        ("all-to-all", lambda: all_to_all(geode)),
        ("topic", lambda: topic(geode)),
        ("work queue", lambda: work_queue(geode)),
        ("checkpoint", lambda: checkpoint(geode)),
    ]
    seconds = {}
    for part, step in steps:
        began = time.perf_counter()
        step()
        fail_on_purpose(geode, part, args.fail)
        seconds[part] = time.perf_counter() - began
    geode.close(timeout=TIMEOUT)
    began = time.perf_counter()
    again = restart(args.dir)
    fail_on_purpose(again, "restart", args.fail)
    again.close(timeout=TIMEOUT)
    seconds["restart"] = time.perf_counter() - began
    if geode.hosts(geode.nodes[0]):
        times = ", ".join(f"{part} {value:.2f} s" for part, value in seconds.items())
        ranks = len({geode.rank_of(node) for node in geode.nodes})
        print(
            f"smoke OK: {len(geode.nodes)} nodes on {ranks} rank(s): {times}; "
            f"total {time.perf_counter() - start:.1f} s",
            flush=True,
        )


def fail_on_purpose(geode: Geode, part: str, fail: str | None) -> None:
    expect(part != fail or not geode.hosts(geode.nodes[-1]), part, "failing on purpose")


if __name__ == "__main__":
    main()
