"""Not a hang: node0 waits 6 s for one result while node1 and node2 keep exchanging messages.

Under --hang-timeout 3, node0's wait alone passes the timeout; the watchdog must see that the
other ranks' messages move, and let the job finish.
"""

import time

from geode_mpi import Geode

with Geode() as geode:
    if geode.rank == 0:
        print("result:", geode.receive(source="node1", timeout=60).data)
    else:
        other = "node2" if geode.node == "node1" else "node1"
        until = time.monotonic() + 6.0
        rounds = 0
        while time.monotonic() < until:
            geode.send(rounds, dest=other)
            geode.receive(source=other, timeout=60)
            time.sleep(0.05)
            rounds += 1
        geode.send("stop", dest=other)  # both stop together: the last messages match up
        geode.receive(source=other, timeout=60)
        if geode.node == "node1":
            geode.send(rounds, dest="node0")
