"""A streaming pipeline with checkpoints: producer -> two filters -> reducer, restartable.

Four nodes: node0 produces, node1 and node2 filter, node3 reduces; run it on 1 to 4 ranks::

    mpiexec -n 4 python -m geode_mpi jobs/pipeline.py --dir ckpt --out result.json
    mpiexec -n 4 python -m geode_mpi --restart jobs/pipeline.py --dir ckpt --out result.json

Kill it at any moment and run the second command (again and again, on any of 1 to 4 ranks): it
finishes with the same result as an uninterrupted run, every item processed exactly once.
SIGTERM (what SLURM sends at a time limit) makes it write a last checkpoint and exit with
status 0.

The work goes in rounds, pipelined: in round r the producer sends round r's items, the filters
process round r - 1's, the reducer round r - 2's, and every rank then takes a checkpoint. So a
checkpoint always holds messages in flight, in the filters' and the reducer's queues, and a
restart picks them up where they were. What the job itself must keep (the round, the reducer's
count and sum) is each node's `node_state`, not the rank's `state`: a restart on another number
of ranks moves a node's state to its new rank, where a rank's state stays with its number.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from geode_mpi import Geode, Message, ProgressReport

WIDTH = 64  # numbers per item
NODES = 4  # node0 produces, node1 and node2 filter, node3 reduces


class Item(Message):
    """Item k: an array of WIDTH numbers, k, k + 1, ..."""


def item(k: int) -> np.ndarray:
    return np.arange(k, k + WIDTH, dtype=np.float64)


def expected(rounds: int, per_round: int) -> dict[str, float]:
    """The result the reducer must reach: every item once, squared, summed."""
    total = sum(float((item(k) ** 2).sum()) for k in range(rounds * per_round))
    return {"items": rounds * per_round, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the checkpoint directory")
    parser.add_argument("--out", required=True, help="where the reducer writes the result")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=8, help="items per round (even)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds to sleep per round")
    parser.add_argument(
        "--every", type=float, default=0.0, help="seconds between checkpoints (0: every round)"
    )
    args = parser.parse_args()
    with Geode(NODES, checkpoint_dir=args.dir, checkpoint_every=args.every) as geode:
        if geode.size > NODES:
            raise SystemExit(f"run on 1 to {NODES} ranks, not {geode.size}")
        run(geode, args)


def run(geode: Geode, args: argparse.Namespace) -> None:
    rounds, per_round = args.rounds, args.per_round
    producer, filters, reducer = "node0", ("node1", "node2"), "node3"
    # Each node's state, on whichever rank hosts it: the round (the same in all), and the
    # reducer's count and sum.
    fresh = {"round": 0, "items": 0, "total": 0.0}
    state = {node: geode.restored_node_state(node, dict(fresh)) for node in geode.local_nodes}
    start = state[geode.local_nodes[0]]["round"]
    if geode.restored_epoch is not None and geode.rank == 0:
        print(f"resuming at round {start} (checkpoint {geode.restored_epoch})")
    work = ProgressReport(rounds + 2 - start, "pipeline rounds", every=10)  # rank 0 prints
    for r in range(start, rounds + 2):
        if r < rounds:
            for k in range(r * per_round, (r + 1) * per_round):
                geode.send(Item(item(k)), producer, filters[k % 2])
        if 0 <= r - 1 < rounds:
            for node in filters:
                if geode.hosts(node):
                    for _ in range(per_round // 2):
                        got = geode.receive(node, timeout=60)
                        geode.send(Item(got.data**2), node, reducer)
        if 0 <= r - 2 < rounds and geode.hosts(reducer):
            for _ in range(per_round):
                got = geode.receive(reducer, timeout=60)
                state[reducer]["items"] += 1
                state[reducer]["total"] += float(got.data.sum())
        for mine in state.values():
            mine["round"] = r + 1
        # Collective, once per round: a checkpoint when due, and on SIGTERM (a batch system's
        # time limit) a last one, then a clean exit.
        geode.maybe_checkpoint(node_state=state, timeout=60)
        work.update()
        time.sleep(args.pause)
    work.finish()
    if geode.hosts(reducer):
        result = {"items": state[reducer]["items"], "total": state[reducer]["total"]}
        out = Path(args.out)
        out.with_suffix(".tmp").write_text(json.dumps(result))
        os.replace(out.with_suffix(".tmp"), out)
        want = expected(rounds, per_round)
        print(f"reducer: {result['items']} items, total {result['total']:.6e}", flush=True)
        if result != want:
            raise SystemExit(f"wrong result: {result}, want {want}")


if __name__ == "__main__":
    main()
