"""Every rank sends 100 messages of 64 KiB to every other rank with isend, then receives them.

The pattern that made MPICH's single-copy path hang when ranks outnumber cores
(docs/debugging.md); geode_mpi turns that path off in that case, so this must always finish.
"""

import numpy as np

from geode_mpi import Geode

COUNT = 100
with Geode() as g:
    handles = []
    for k in range(COUNT):
        for dest in range(g.size):
            if dest != g.rank:
                payload = np.full(64 * 1024 // 8, g.rank * 1000 + k, dtype=np.int64)
                handles.append(g.isend(payload, dest=dest))
    expected = COUNT * (g.size - 1)
    seen = {}
    for _ in range(expected):
        msg = g.receive(timeout=60)
        source = g.nodes.index(msg.source)
        k = int(msg.data[0]) - source * 1000
        assert k == seen.get(source, 0), "per-source order"
        seen[source] = k + 1
    for handle in handles:
        handle.wait(timeout=60)
    print(f"rank {g.rank} received {expected} messages", flush=True)
