"""A job that hangs: every rank waits for its left neighbour, and only node1 ever gets a message.

With 3 ranks, node1 then computes (sleeps) instead of waiting in geode_mpi, so it cannot answer
the watchdog; node0 and node2 wait in receive().
"""

import logging
import time

from geode_mpi import Geode

log = logging.getLogger("job")

with Geode() as geode:
    log.info("started")
    if geode.rank == 0:
        geode.send({"x": 1}, dest="node1")
    left = (geode.rank - 1) % geode.size
    message = geode.receive(source=left)
    log.info("got %s", message.data)
    if geode.rank == 1:
        time.sleep(120)  # busy outside geode_mpi
    geode.receive(source=left)
