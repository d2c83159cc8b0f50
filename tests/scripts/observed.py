"""A small job for --stats and --trace: a ring of arrays, a topic, a work queue, a handler,
and a checkpoint.

Every rank sends ``steps`` arrays of 1000 float64 to its right neighbour and receives as many;
node0 publishes one message on a topic that every other node receives; with a checkpoint
directory as the first argument, the job takes one checkpoint. Then rank 1 (when there is one)
computes for ``--compute`` seconds while the others wait for it: a healthy job that a hang
timeout longer than that must leave alone.
"""

import argparse
import time

import numpy as np

from geode_mpi import Geode, Message


class Tick(Message):
    """Handled by its own node's run()."""


class Ring(Message):
    """An array to the right neighbour (received by type: the topic's message may arrive
    while a node still takes its ring arrays)."""


class Done(Message):
    """The last message round the ring."""


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
                Ring(np.full(1000, step, dtype=np.float64)),
                node,
                geode.nodes[(index + 1) % len(geode.nodes)],
            )
    for node in geode.local_nodes:
        for _ in range(args.steps):
            geode.receive(node, type=Ring, timeout=60)
    news.publish("hello", source="node0")
    for node in geode.local_nodes:
        if node in subscribers:
            geode.receive(node, topic="news", timeout=60)
    # A work queue: node0 puts one task per other node; the consumers take them.
    consumers = list(geode.nodes[1:]) or ["node0"]
    jobs = geode.work_queue("jobs", consumers=consumers, producers=["node0"])
    if geode.hosts("node0"):
        for k in range(len(consumers)):
            jobs.put(k, source="node0")
        jobs.finish(source="node0")
    for node in geode.local_nodes:
        if node in consumers:
            while jobs.get(node, timeout=60) is not None:
                pass
    jobs.serve(timeout=60)  # the dispatcher (node0) hands out until every consumer is told

    # A handler: every node sends itself one Tick and processes it.
    ticks = []
    geode.on(Tick)(lambda message: ticks.append(message.data))
    for node in geode.local_nodes:
        geode.send(Tick(node), node, node)
        geode.run(node, count=1, timeout=60)
    assert sorted(ticks) == sorted(geode.local_nodes), ticks
    if args.checkpoint_dir:
        geode.checkpoint({"done": True})
    if geode.rank == 1 and args.compute:
        time.sleep(args.compute)
    geode.send(Done("done"), dest=right)
    geode.receive(type=Done, timeout=60)
