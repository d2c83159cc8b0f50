"""Waits for a message that never comes (for the Ctrl-C test)."""

from geode_mpi import Geode

g = Geode()
print(f"rank {g.rank} waiting", flush=True)
g.receive(timeout=120)
