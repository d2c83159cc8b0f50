"""At MPI thread level 'serialized', three Geodes driven from three threads share one gate."""

import threading

import mpi4py

mpi4py.rc.thread_level = "serialized"

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from geode_mpi import Geode  # noqa: E402

if MPI.Query_thread() != MPI.THREAD_SERIALIZED:
    print("level", MPI.Query_thread(), "is not 'serialized': nothing to show")
geodes = [Geode(), Geode(), Geode()]
one = geodes[0]._gate is geodes[1]._gate is geodes[2]._gate
print(f"rank {geodes[0].rank}: one gate: {one}", flush=True)
results: dict[int, str] = {}


def ring(i: int) -> None:
    """isend 300 messages (every fifth 1 MiB) to the next rank, receiving from the last ones
    as they come (so that sends and receives of all three threads are in flight at once)."""
    geode = geodes[i]
    after = geode.nodes[(geode.rank + 1) % geode.size]
    before = geode.nodes[(geode.rank - 1) % geode.size]
    try:
        wrong = []
        handles = []
        got = 0
        for k in range(300):
            data = np.full(262144 if k % 5 == 0 else 4, k * 10 + i, np.float32)
            handles.append(geode.isend(data, dest=after))
            while got <= k - 2 or (k == 299 and got < 300):
                if not (geode.receive(source=before, timeout=60).data == got * 10 + i).all():
                    wrong.append(got)
                got += 1
        for handle in handles:
            handle.wait(60)
        results[i] = f"wrong at {wrong[:3]}" if wrong else "ok"
    except Exception as exc:  # reported on stdout, where the test reads it
        results[i] = f"{type(exc).__name__}: {exc}"


threads = [threading.Thread(target=ring, args=(i,)) for i in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(f"rank {geodes[0].rank}: {sorted(results.items())}", flush=True)
for geode in geodes:
    geode.close(timeout=60)
