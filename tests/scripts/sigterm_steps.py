"""A ring in steps with maybe_checkpoint(): SIGTERM writes a last checkpoint, exit 0, and a
restart (--restart) ends with the result of an uninterrupted run.

Each step, every node sends its step number to the next node and receives the previous node's;
node0 computes for ``--work`` seconds first, so the other ranks are usually blocked in
receive() when the SIGTERM comes.
"""

import argparse
import json
import time
from pathlib import Path

from geode_mpi import Geode

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--work", type=float, default=0.2)
args = parser.parse_args()

with Geode(checkpoint_dir=args.dir, checkpoint_every=3600) as geode:
    state = geode.restored_state or {"step": 0, "total": 0}
    if geode.restored_state is not None and geode.rank == 0:
        print(f"resuming at step {state['step']} (checkpoint {geode.restored_epoch})", flush=True)
    print(f"ready {geode.rank}", flush=True)
    nodes = geode.nodes
    for step in range(state["step"], args.steps):
        if geode.rank == 0:
            until = time.monotonic() + args.work
            while time.monotonic() < until:  # computing
                pass
        me = nodes.index(geode.node)
        geode.send((step + 1) * (me + 1), geode.node, nodes[(me + 1) % len(nodes)])
        state["total"] += geode.receive(timeout=60).data
        state["step"] = step + 1
        geode.maybe_checkpoint(state, timeout=60)
    Path(f"{args.out}.{geode.rank}").write_text(json.dumps(state))
    print(f"done {geode.rank} total {state['total']}", flush=True)
