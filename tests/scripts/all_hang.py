"""A job where every rank hangs inside geode_mpi: each waits in receive() for its left
neighbour, and nobody sends anything. Under --hang-timeout every rank must be reported as
waiting, none as busy outside geode_mpi."""

from geode_mpi import Geode

with Geode() as geode:
    left = (geode.rank - 1) % geode.size
    geode.receive(source=left)
