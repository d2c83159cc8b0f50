"""A hang made of short waits: node1 polls receive(timeout=0.5) in a loop for a message that
never comes, while node0 waits for node1. Under --hang-timeout 2 the watchdog must end it."""

from geode_mpi import Geode, ReceiveTimeout

with Geode() as geode:
    if geode.rank == 0:
        geode.receive(source="node1", timeout=60)
    else:
        for _ in range(120):
            try:
                geode.receive(timeout=0.5)
                break
            except ReceiveTimeout:
                pass
