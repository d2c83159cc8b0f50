"""Rank 1 reaches close() 4 s late; rank 0's close(timeout=1) must give up after about 1 s,
with --stats on as well as off."""

import time

from geode_mpi import Geode, GeodeTimeoutError

geode = Geode()
if geode.rank == 1:
    time.sleep(4.0)
    geode.close()
else:
    started = time.monotonic()
    try:
        geode.close(timeout=1)
        print(f"close returned after {time.monotonic() - started:.1f} s")
    except GeodeTimeoutError:
        print(f"close timed out after {time.monotonic() - started:.1f} s")
        geode.close(timeout=30)  # retried: completes once rank 1 arrives
        print("closed on retry")
