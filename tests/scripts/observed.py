"""A small job for --stats and --trace: a ring of arrays, a topic, a handler, a checkpoint.

Every rank sends ``steps`` arrays of 1000 float64 to its right neighbour and receives as many;
node0 publishes one message on a topic that every other node receives; with a checkpoint
directory as the first argument, the job takes one checkpoint. Then rank 1 (when there is one)
computes for ``--compute`` seconds while the others wait for it: a healthy job that a hang
timeout longer than that must leave alone.
"""

import argparse
import time

import numpy as np

from geode_mpi import Geode

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--checkpoint-dir")
parser.add_argument("--compute", type=float, default=0.0)
args = parser.parse_args()

with Geode(checkpoint_dir=args.checkpoint_dir) as geode:
    right = (geode.rank + 1) % geode.size
    subscribers = list(geode.nodes[1:]) or ["node0"]
    news = geode.topic("news", publishers=["node0"], subscribers=subscribers)
    for node in geode.local_nodes:
        index = geode.nodes.index(node)
        for step in range(args.steps):
            geode.send(
                np.full(1000, step, dtype=np.float64),
                node,
                geode.nodes[(index + 1) % len(geode.nodes)],
            )
    for node in geode.local_nodes:
        for _ in range(args.steps):
            geode.receive(node, timeout=60)
    news.publish("hello", source="node0")
    for node in geode.local_nodes:
        if node in subscribers:
            geode.receive(node, topic="news", timeout=60)
    if args.checkpoint_dir:
        geode.checkpoint({"done": True})
    if geode.rank == 1 and args.compute:
        time.sleep(args.compute)
    geode.send("done", dest=right)
    geode.receive(timeout=60)
