"""A job of many nodes for the --stats summary: a ring round every node, node0 the busiest
sender, node7's one message dead-lettered, and the last node never receiving its message.

Every node sends one message to the next; node0 sends node1 ``--extra`` more. node7 takes its
messages with explicit acks and one attempt: it fails the first (a dead letter). The last node
receives nothing: its message stays in its queue, unacknowledged by its sender. With
``--fail``, rank 0 then raises (the job fails: partial --stats).
"""

import argparse

from geode_mpi import Geode, QueueConfig

parser = argparse.ArgumentParser()
parser.add_argument("--nodes", type=int, default=40)
parser.add_argument("--extra", type=int, default=10)
parser.add_argument("--fail", action="store_true")
args = parser.parse_args()

explicit = QueueConfig(ack="explicit", max_attempts=1)
with Geode(args.nodes, queues={"node7": explicit}) as geode:
    nodes = geode.nodes
    last = nodes[-1]
    for node in geode.local_nodes:
        geode.send({"from": node}, node, nodes[(nodes.index(node) + 1) % len(nodes)])
    if geode.hosts("node0"):
        for k in range(args.extra):
            geode.send({"extra": k}, "node0", "node1")
    for node in geode.local_nodes:
        count = 1 + args.extra if node == "node1" else 1
        for _ in range(0 if node == last else count):
            message = geode.receive(node, timeout=60)
            if node == "node7":
                message.nack(ValueError("node7 fails its message"))
    if args.fail and geode.rank == 0:
        raise RuntimeError("rank 0 fails at the end")
