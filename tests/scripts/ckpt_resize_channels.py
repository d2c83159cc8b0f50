"""Topics and a work queue across a restart on another number of ranks
(tests/test_checkpoint_resize.py).

``save DIR``: two topics (one per-publisher, one total-order with a sequencer that moves) and
a work queue (its dispatcher moves too). Every publisher publishes ``PUB`` messages, the
producer queues ``TASKS`` tasks and finishes; before the checkpoint each subscriber receives a
few messages and each consumer takes one task, and saves which in its per-node state; the rest
is queued, held by the dispatcher or unacknowledged.
``load DIR``: restart (on any number of ranks): each subscriber gets every message it had not
received, once; every task is processed exactly once in all; a late subscriber gets the
retained messages; what is published after the restart continues each stream's numbers and
reaches every subscriber; every subscriber of the total-order topic sees one order.
A third argument goes before the names of the topics and the work queue (``sim/``: names that
hold a '/', which no checkpoint could save).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from geode_mpi import Geode, Message, ReceiveTimeout

NODES = [f"n{k}" for k in range(12)]
NEWS = {"publishers": ["n0", "n5", "n7"], "subscribers": NODES[:5] + NODES[6:], "retain": 2}
ORDERED = {"publishers": ["n2", "n3"], "subscribers": NODES[4:], "sequencer": "n3"}
JOBS = {"consumers": ["n1", "n2", "n4", "n6", "n9", "n11"], "dispatcher": "n3"}
PUB = 4  # messages per publisher per topic before the checkpoint
TASKS = 40
EARLY = 2  # news messages each subscriber receives before the checkpoint
TIMEOUT = 60.0
PREFIX = ""  # before the names of the topics and the work queue (``save DIR PREFIX``)


class Ready(Message):
    """A rank's part of a rendezvous (see `rendezvous`)."""


def open_job(directory: str, restart: bool) -> tuple[Geode, Any, Any, Any]:
    geode = Geode(NODES, checkpoint_dir=directory, restart=restart, resend_after=0.2)
    news = geode.topic(PREFIX + "news", **NEWS)  # type: ignore[arg-type]
    ordered = geode.topic(PREFIX + "ordered", total_order=True, **ORDERED)  # type: ignore[arg-type]
    jobs = geode.work_queue(PREFIX + "jobs", producers=["n0"], prefetch=2, **JOBS)  # type: ignore[arg-type]
    return geode, news, ordered, jobs


def local(geode: Geode, nodes: list[str]) -> list[str]:
    return [node for node in nodes if node in geode.local_nodes]


def receive(geode: Geode, node: str, topic: str, count: int) -> list[Any]:
    return [geode.receive(node, timeout=TIMEOUT, topic=PREFIX + topic).data for _ in range(count)]


def save(directory: str) -> None:
    geode, news, ordered, jobs = open_job(directory, restart=False)
    for k in range(PUB):
        for publisher in local(geode, NEWS["publishers"]):  # type: ignore[arg-type]
            news.publish((publisher, k), source=publisher)
        for publisher in local(geode, ORDERED["publishers"]):  # type: ignore[arg-type]
            ordered.publish((publisher, k), source=publisher)
    if "n0" in geode.local_nodes:
        for task in range(TASKS):
            jobs.put(("task", task), source="n0")
        jobs.finish("n0")
    seen: dict[str, dict[str, list[Any]]] = {}
    for node in geode.local_nodes:
        mine = seen[node] = {"news": [], "ordered": [], "tasks": []}
        if node in NEWS["subscribers"]:
            mine["news"] = receive(geode, node, "news", EARLY)
        if node in ORDERED["subscribers"]:
            mine["ordered"] = receive(geode, node, "ordered", 1)
        if node in JOBS["consumers"]:
            task = jobs.get(node, timeout=TIMEOUT)
            mine["tasks"] = [task.data[1]]
    rendezvous(geode)
    geode.checkpoint(node_state=seen, timeout=TIMEOUT)
    geode.close(timeout=TIMEOUT)
    if geode.rank == 0:
        print(f"saved on {geode.size} ranks")


def check_order(got: list[Any], publishers: list[str], count: int, what: str) -> None:
    """Each publisher's ``count`` messages, each once, in the order published."""
    for publisher in publishers:
        mine = [k for source, k in got if source == publisher]
        assert mine == list(range(count)), (what, publisher, got)
    assert len(got) == len(publishers) * count, (what, got)


def load(directory: str) -> None:
    geode, news, ordered, jobs = open_job(directory, restart=True)
    assert geode.restored_epoch == 1, geode.restored_epoch
    orders: dict[str, list[Any]] = {}
    tasks: list[int] = []
    for node in geode.local_nodes:
        saved = geode.restored_node_state(node)
        assert saved is not None, node
        if node in NEWS["subscribers"]:
            got = saved["news"] + receive(geode, node, "news", 3 * PUB - EARLY)
            check_order([tuple(item) for item in got], NEWS["publishers"], PUB, node)  # type: ignore[arg-type]
        if node in ORDERED["subscribers"]:
            got = saved["ordered"] + receive(geode, node, "ordered", 2 * PUB - 1)
            check_order([tuple(item) for item in got], ORDERED["publishers"], PUB, node)  # type: ignore[arg-type]
            orders[node] = got
        tasks += saved["tasks"]
        if node in JOBS["consumers"]:
            while (task := jobs.get(node, timeout=TIMEOUT)) is not None:
                tasks.append(task.data[1])
    rendezvous(geode)
    no_extras(geode, jobs)
    rendezvous(geode)  # no rank publishes the next messages while another checks for extras
    after(geode, news, ordered, orders)
    geode.close(timeout=TIMEOUT)
    everything = gather(geode, (tasks, orders))
    if geode.rank == 0:
        done = sorted(task for ranks_tasks, _ in everything for task in ranks_tasks)
        assert done == list(range(TASKS)), done
        seen = [order for _, rank_orders in everything for order in rank_orders.values()]
        assert all(order == seen[0] for order in seen), seen  # one total order
        print(f"restored on {geode.size} ranks")


def rendezvous(geode: Geode) -> None:
    """Wait until every rank is here, inside geode_mpi: unlike an MPI barrier, the waits keep
    the dispatcher and the sequencer serving the ranks that are not here yet."""
    geode.send(Ready(), geode.node, "n0")
    if geode.rank == 0:
        for _ in range(geode.size):
            geode.receive("n0", type=Ready, timeout=TIMEOUT)
        for rank in range(geode.size):
            geode.send(Ready(), "n0", NODES[rank])
    geode.receive(geode.node, type=Ready, timeout=TIMEOUT)


def no_extras(geode: Geode, jobs: Any) -> None:
    """Nothing comes twice: resends of what was unacknowledged at the checkpoint are dropped."""
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for node in geode.local_nodes:
            for topic in ("news", "ordered"):
                extra = geode.try_receive(node, topic=PREFIX + topic)
                assert extra is None, (node, extra.data)
            if node in JOBS["consumers"]:
                try:  # None: the answer to a consumer's other open request (prefetch 2)
                    extra = jobs.get(node, timeout=0)
                except ReceiveTimeout:
                    continue
                assert extra is None, (node, extra.data)


def after(geode: Geode, news: Any, ordered: Any, orders: dict[str, list[Any]]) -> None:
    """A late subscriber gets the retained messages; new messages continue each stream's
    numbers and reach every subscriber."""
    news.subscribe("n5")
    for publisher in local(geode, NEWS["publishers"]):  # type: ignore[arg-type]
        news.publish(Message(("after", publisher)), source=publisher)
    for publisher in local(geode, ORDERED["publishers"]):  # type: ignore[arg-type]
        ordered.publish(Message(("after", publisher)), source=publisher)
    for node in geode.local_nodes:
        if node in NEWS["subscribers"] or node == "n5":
            late = 2 * 3 if node == "n5" else 0  # the retained ones, then the new ones
            got = [
                geode.receive(node, timeout=TIMEOUT, topic=PREFIX + "news") for _ in range(late + 3)
            ]
            new = [msg for msg in got if msg.data[0] == "after"]
            assert sorted(msg.data[1] for msg in new) == sorted(NEWS["publishers"]), got
            assert all(msg.seq == PUB for msg in new), [msg.seq for msg in new]
            retained = sorted(tuple(msg.data) for msg in got if msg.data[0] != "after")
            want = [(p, k) for p in NEWS["publishers"] for k in range(PUB - late // 3, PUB)]
            assert retained == sorted(want), got
        if node in ORDERED["subscribers"]:
            got = [geode.receive(node, timeout=TIMEOUT, topic=PREFIX + "ordered") for _ in range(2)]
            assert sorted(msg.seq for msg in got) == [2 * PUB, 2 * PUB + 1], got
            orders[node] += [msg.data for msg in got]


def gather(geode: Geode, value: Any) -> list[Any]:
    from mpi4py import MPI

    return list(MPI.COMM_WORLD.gather(value) or [])


if __name__ == "__main__":
    PREFIX = sys.argv[3] if len(sys.argv) > 3 else ""
    if sys.argv[1] == "save":
        save(sys.argv[2])
    else:
        load(sys.argv[2])
