"""Every rank reaches close(); rank 1 has a large --trace part to write first, rank 0 closes
with a short timeout. Rank 0's close must not give up in the gather of the parts after every
rank arrived (its retry would then wait for ever in the drain: rank 1 had gone)."""

import sys
import time

from geode_mpi import Geode, GeodeTimeoutError

steps = int(sys.argv[1])
geode = Geode(["n0", "n1", "n2", "n3"])
if geode.rank == 1:
    for k in range(steps):  # (traced: a part of tens of thousands of events)
        geode.send(k, source="n1", dest="n3")
        geode.receive("n3", timeout=30)
    geode.send("ready", source="n1", dest="n0")
    geode.close(timeout=60)
else:
    geode.receive("n0", timeout=120)
    started = time.monotonic()
    try:
        geode.close(timeout=0.2)
        print(f"rank 0 closed in {time.monotonic() - started:.1f} s", flush=True)
    except GeodeTimeoutError as exc:
        print(f"rank 0: close(timeout=0.2) raised: {exc}", flush=True)
        geode.close(timeout=10)
        print("rank 0 closed on retry", flush=True)
