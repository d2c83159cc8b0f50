"""A topic's 1 MiB array to every other rank: on one host it goes through the node's shared
segment, whose making must print nothing (Open MPI's UCX one-sided component did, per rank)."""

import numpy as np

from geode_mpi import Geode

with Geode() as geode:
    news = geode.topic("news", publishers=["node0"], subscribers=geode.nodes[1:])
    if geode.rank == 0:
        news.publish(np.arange(1 << 17, dtype=np.float64), source="node0").wait(timeout=60)
    else:
        got = geode.receive(topic="news", timeout=60)
        assert got.data[-1] == (1 << 17) - 1
    print(f"rank {geode.rank}: done", flush=True)
