"""The first example: one message from node1 to node2.

Runs as plain ``python jobs/hello.py`` (the embedded world: all nodes in this process) and as
``mpiexec -n 3 python -m geode_mpi jobs/hello.py`` or with more ranks (node k on rank k),
printing ``Hello, World!`` once either way. With 2 ranks the job has only node0 and node1, so
it stops at once with ``unknown dest 'node2'``.
"""

from geode_mpi import Geode, Message

geode = Geode()


class MyMessage(Message):
    def __init__(self, data):
        super().__init__(data)


message = MyMessage("Hello, World!")
geode.send(message, "node1", "node2")  # sends on the rank hosting node1, nothing elsewhere
if geode.hosts("node2"):
    received_message = geode.receive("node2", timeout=60)
    print(received_message.data)
