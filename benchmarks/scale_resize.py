"""scale.py's restart on twice the ranks: a checkpoint of 2P nodes written at P, restarted at 2P.

At P, `save` writes the checkpoint (each node's share of ``--state`` bytes as its per-node
state) and the raw files of the same bytes (one h5py file per rank, a dataset per node). At
2P, `restart` times, in alternating order, `Geode(restart=True)` (every node moves: node k
from rank k mod P to rank k mod 2P, its state read from its old rank's file), `Geode()` with
no checkpoint (what opening costs of it), and the raw equivalent: each rank reads its node's
dataset from the old rank's file, then a barrier. Each checks the bytes it read.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import h5py
import launch
import numpy as np
import reporting
from checkpoint import fsync_path
from timing import barrier_then_clock, paired_median, rotated

from geode_mpi import Geode

METHODS = ("restart", "open", "raw")


def directory(args: argparse.Namespace) -> Path:
    return Path(args.dir) / "grow"


def names(saved_ranks: int) -> list[str]:
    """Two nodes per rank of the saved job: one per rank of the job twice its size."""
    return [f"node{k}" for k in range(2 * saved_ranks)]


def node_field(node: int, args: argparse.Namespace) -> np.ndarray[Any, Any]:
    """A node's share of a rank's ``--state`` bytes (its rank had two nodes)."""
    return np.full(max(args.state // 16, 1), float(node))


def save(ranks: launch.Ranks, args: argparse.Namespace) -> None:
    """At P: the checkpoint of 2P nodes and the raw files of the same bytes."""
    where = directory(args)
    if ranks.rank == 0:
        where.mkdir(parents=True, exist_ok=True)
    ranks.comm.Barrier()
    every = names(ranks.size)
    geode = Geode(every, checkpoint_dir=where / "geode")
    fields = {node: node_field(every.index(node), args) for node in geode.local_nodes}
    geode.checkpoint(node_state=fields)
    geode.close()
    raw = where / f"raw-{ranks.rank}.h5"
    with h5py.File(raw, "w") as file:
        for node, field in fields.items():
            file.create_dataset(node, data=field)
    fsync_path(raw)
    ranks.comm.Barrier()


class Grown:
    """At 2P: each way of starting again, timed from a barrier to the slowest rank."""

    def __init__(self, ranks: launch.Ranks, args: argparse.Namespace) -> None:
        self.ranks, self.args = ranks, args
        self.saved = args.nodes // 2
        self.node = ranks.rank  # 2P nodes on 2P ranks: node r on rank r
        self.where = directory(args)

    def raw(self) -> None:
        with h5py.File(self.where / f"raw-{self.node % self.saved}.h5", "r") as file:
            field = file[f"node{self.node}"][...]
        self.ranks.comm.Barrier()
        self.check("raw h5py read", field)

    def check(self, what: str, got: Any) -> None:
        if not np.array_equal(got, node_field(self.node, self.args)):
            raise RuntimeError(f"rank {self.ranks.rank}: {what} read other bytes than written")

    def timed(self, method: str) -> float:
        """Seconds from a barrier until the slowest rank finished; a Geode's close after its
        restart or open is outside the time."""
        ranks = self.ranks
        start = barrier_then_clock(ranks.comm, ranks.wtime)
        if method == "raw":
            self.raw()
            seconds = ranks.wtime() - start
        else:
            seconds = self.geode_timed(method, start)
        return float(max(ranks.comm.allgather(seconds)))

    def geode_timed(self, method: str, start: float) -> float:
        restart = method == "restart"
        where = self.where / "geode" if restart else None
        geode = Geode(self.args.nodes, checkpoint_dir=where, restart=restart)
        seconds = self.ranks.wtime() - start
        if restart:
            self.check("restart", geode.restored_node_state(self.node))
        geode.close()
        return seconds


def restart(ranks: launch.Ranks, args: argparse.Namespace) -> dict[str, Any]:
    """At 2P: ``--repeats`` rounds of every method, in an order rotating each round."""
    grown = Grown(ranks, args)
    rounds = []
    for turn in range(args.repeats):
        rounds.append({method: grown.timed(method) for method in rotated(METHODS, turn)})
    return {"ranks": ranks.size, "from": grown.saved, "rounds": rounds}


# -- the report ------------------------------------------------------------------------------


def summarise(records: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per saved P: the medians and the paired ratios of restart and open over raw."""
    rows = []
    for saved, record in sorted(records.items()):
        grown = record.get("grown_restart")
        if grown is None:
            continue
        if "failed" in grown:
            rows.append({"from": saved, "ranks": 2 * saved, "failed": grown["failed"]})
            continue
        times = {m: [r[m] for r in grown["rounds"]] for m in METHODS}
        row: dict[str, Any] = {"from": saved, "ranks": grown["ranks"]}
        row |= {f"{m}_s": statistics.median(times[m]) for m in METHODS}
        row["restart_ratio"] = paired_median(times["restart"], times["raw"])
        own = [max(r - o, 0.0) for r, o in zip(times["restart"], times["open"], strict=True)]
        row["reading_ratio"] = paired_median(own, times["raw"])
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The restarts on twice the ranks, one row per saved P."""
    if not rows:
        return []
    columns = [("P -> 2P", 9), ("restart ms", 11), ("Geode() ms", 11), ("raw ms", 8)]
    grid = reporting.Table([*columns, ("restart/raw", 12), ("(restart-open)/raw", 19)])
    lines = [
        "Restart on twice the ranks: Geode(restart=True) of 2P nodes (every node moves), "
        "Geode() alone, raw h5py read of the same bytes + Barrier",
        *grid.head(),
    ]
    for row in rows:
        moved = f"{row['from']} -> {row['ranks']}"
        if "failed" in row:
            lines.append(grid.row([moved, f"FAILED ({row['failed']})", "", "", "", ""]))
            continue
        cells = [f"{row[f'{m}_s'] * 1e3:.2f}" for m in METHODS]
        ratios = [f"x{row['restart_ratio']:.2f}", f"x{row['reading_ratio']:.2f}"]
        lines.append(grid.row([moved, *cells, *ratios]))
    return lines
