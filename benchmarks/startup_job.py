"""startup.py's job: one small message from node0 to the last node, at any rank count.

``mpiexec -n N python benchmarks/startup_job.py`` or through the runner, ``python -m geode_mpi
benchmarks/startup_job.py``; prints the message once, on the last node's rank.
"""

from geode_mpi import Geode

with Geode() as geode:
    last = geode.nodes[-1]
    geode.send({"step": 1, "text": "started"}, "node0", last)
    if geode.hosts(last):
        print(geode.receive(last, timeout=60).data)
