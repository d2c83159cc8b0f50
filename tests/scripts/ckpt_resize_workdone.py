"""A work queue whose consumers are at every stage of its end across a restart on another
number of ranks (tests/test_checkpoint_resize.py).

``save DIR``: the producer queues ``TASKS`` tasks and finishes; before the checkpoint ``n1``
takes tasks until its `get` returns None once ``n2`` and ``n3`` took one each (their next task or
WorkDone is in their queues, or held by the dispatcher); each says what it took in its
per-node state. ``load DIR``: restart: ``n1``'s `get` returns None at once, twice; the others
take the rest; every task is processed exactly once in all.
"""

from __future__ import annotations

import sys
from typing import Any

from geode_mpi import Geode, Message

NODES = ["n0", "n1", "n2", "n3"]
CONSUMERS = ["n1", "n2", "n3"]
TASKS = 6
TIMEOUT = 60.0


class Took(Message):
    """n2 or n3 holds its one task: n1 may take the rest."""


def open_job(directory: str, restart: bool) -> tuple[Geode, Any]:
    geode = Geode(NODES, checkpoint_dir=directory, restart=restart)
    jobs = geode.work_queue("jobs", consumers=CONSUMERS, dispatcher="n0", producers=["n0"])
    return geode, jobs


def gather(value: Any) -> list[Any]:
    from mpi4py import MPI

    return list(MPI.COMM_WORLD.gather(value) or [])


def save(directory: str) -> None:
    geode, jobs = open_job(directory, False)
    if geode.hosts("n0"):
        for k in range(TASKS):
            jobs.put(k, source="n0")
        jobs.finish(source="n0")
    took: dict[str, list[int]] = {}
    for node in ("n2", "n3"):
        if geode.hosts(node):
            task = jobs.get(node, timeout=TIMEOUT)
            assert task is not None, f"{node}: no task before the checkpoint"
            took[node] = [task.data]
            geode.send(Took(), node, "n1")
    if geode.hosts("n1"):
        # (n1 drains only once n2 and n3 hold theirs: else, on a loaded machine, it could
        # take every task before their first request reaches the dispatcher)
        for _ in ("n2", "n3"):
            geode.receive("n1", type=Took, timeout=TIMEOUT)
        took["n1"] = []
        while (task := jobs.get("n1", timeout=TIMEOUT)) is not None:
            took["n1"].append(task.data)
    geode.checkpoint(node_state=took)
    if geode.rank == 0:
        print(f"saved on {geode.size} ranks", flush=True)
    geode.close(timeout=TIMEOUT)


def load(directory: str) -> None:
    geode, jobs = open_job(directory, True)
    took: list[int] = []
    for node in geode.local_nodes:
        took += geode.restored_node_state(node) or []
    if geode.hosts("n1"):
        assert jobs.get("n1", timeout=TIMEOUT) is None, "n1 got a task after its None"
        assert jobs.get("n1", timeout=TIMEOUT) is None
    for node in ("n2", "n3"):
        if geode.hosts(node):
            while (task := jobs.get(node, timeout=TIMEOUT)) is not None:
                took.append(task.data)
    jobs.serve(timeout=TIMEOUT)
    every = [k for part in gather(took) for k in part]
    if geode.rank == 0:
        assert sorted(every) == list(range(TASKS)), f"tasks taken: {sorted(every)}"
        print(f"restored on {geode.size} ranks", flush=True)
    geode.close(timeout=TIMEOUT)


if __name__ == "__main__":
    if sys.argv[1] == "save":
        save(sys.argv[2])
    else:
        load(sys.argv[2])
