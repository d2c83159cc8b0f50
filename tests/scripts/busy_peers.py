"""Not a hang: node0 waits 5 s for node1, which computes; node2 meanwhile runs geode_mpi calls
without ever waiting (messages to itself, back to back).

Under --hang-timeout 2, node0 is stuck past the timeout and asks: node1 does not answer
(computing), node2 answers that it is running, so the job is not hung and must finish.
"""

import time

from geode_mpi import Geode

with Geode() as geode:
    if geode.rank == 0:
        print("result:", geode.receive(source="node1", timeout=60).data)
    elif geode.rank == 1:
        time.sleep(5.0)  # computing: outside geode_mpi
        geode.send("computed", dest="node0")
    else:
        until = time.monotonic() + 5.0
        rounds = 0
        while time.monotonic() < until:
            geode.send(rounds, dest=geode.node)
            geode.receive(timeout=60)
            rounds += 1
