"""Two Geodes open at once on 2 ranks (the job's, then a library's made beside it), the
traffic on the first: node0 sends node1 a message every 0.2 s for 5 s and waits for its echo,
node1 waits 0.2 s on the second Geode (nothing comes there) before each echo. Under
--hang-timeout 2 every rank waits most of the time, but a message moves every 0.2 s: not a hang.

With ``--hang-after``: no traffic; the second Geode closes, then both ranks wait on the first
for a message that never comes (the first must still be watched: the job ends with status 124).
"""

import contextlib
import sys
import time

from geode_mpi import Geode, ReceiveTimeout

HANG = "--hang-after" in sys.argv


def echoes(job: Geode, library: Geode) -> None:
    """node0 and node1 exchange a message on ``job`` every 0.2 s for 5 s."""
    until = time.monotonic() + 5.0
    count = 0
    done = False
    while not done:
        if job.rank == 0:
            done = time.monotonic() > until
            job.send(done, dest="node1")
            job.receive(source="node1", timeout=60)
            count += 1
        else:
            with contextlib.suppress(ReceiveTimeout):
                library.receive(timeout=0.2)
            done = job.receive(source="node0", timeout=60).data
            job.send("echo", dest="node0")
    if job.rank == 0:
        print(f"echoes: {count}")


with Geode() as job:
    with Geode() as library:  # made last
        if not HANG:
            echoes(job, library)
    if HANG:
        job.receive(source="node1" if job.rank == 0 else "node0", timeout=20)  # nobody sends
