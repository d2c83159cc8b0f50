"""A job of Python objects only, for the lazy-import tests: it must import neither numpy nor
h5py. Every rank prints one line, ``loaded: [...]``, the heavy modules it loaded (none).

``python python_objects.py`` runs it in the embedded world (2 nodes in this process),
``mpiexec -n 2 python -m geode_mpi python_objects.py`` on 2 ranks (a node on each). Then
``python python_objects.py arrays``: numpy imported after the Geode, an array sent, received
and published as the codec's fast paths take it (and equal to what was sent).
"""

import os
import sys

from geode_mpi import Geode, Message

TIMEOUT = 60.0
HEAVY = ("numpy", "h5py.h5", "h5py._conv")  # h5py's name alone may be a lazy module


class Ask(Message):
    pass


class Note(Message):
    pass


class Point(Message):
    """A Message subclass with an attribute of its own (the codec's general path)."""

    def __init__(self, data: object, label: str) -> None:
        super().__init__(data)
        self.label = label


def objects(geode: Geode) -> None:
    nodes = geode.nodes
    first, second = nodes[0], nodes[1]

    @geode.on(Ask)
    def answer(msg: Message) -> dict[str, object]:
        return {"asked": msg.data, "by": msg.source}

    @geode.on(Note)
    def note(msg: Message) -> None:
        assert msg.data == "last"

    for node in geode.local_nodes:
        after = nodes[(nodes.index(node) + 1) % len(nodes)]
        for data in ("text", {"a": [1, 2.5], "b": ("x", None)}, [b"bytes", 3j]):
            geode.send(data, node, after)
        geode.send(Point({"x": 1}, "p"), node, after)
    for node in geode.local_nodes:
        for _ in range(3):
            geode.receive(node, timeout=TIMEOUT)
        point = geode.receive(node, timeout=TIMEOUT)
        assert (type(point), point.data, point.label) == (Point, {"x": 1}, "p"), point
    # One way only: two ranks each requesting from the other at once hung here under load
    # (before this change too: reported, not this test's subject).
    if geode.hosts(first):  # in one process the request's wait runs the answering handler
        assert geode.request(Ask(first), second, source=first, timeout=TIMEOUT).data == {
            "asked": first,
            "by": first,
        }
    elif geode.hosts(second):
        geode.run(second, count=1, timeout=TIMEOUT)  # answers the request
    topic = geode.topic("news", publishers=[first], subscribers=nodes)
    queue = geode.work_queue("jobs", consumers=nodes, producers=[first])
    if geode.hosts(first):
        topic.publish({"news": 1}, source=first)
        for k in range(4):
            queue.put({"task": k}, source=first)
        queue.finish(source=first)
    for node in geode.local_nodes:
        assert geode.receive(node, topic=topic, timeout=TIMEOUT).data == {"news": 1}
        while queue.get(node, timeout=TIMEOUT) is not None:
            pass
    queue.serve(timeout=TIMEOUT)
    geode.send(Note("last"), first, second)  # handled inside run()
    assert geode.run(timeout=TIMEOUT).reason == "quiescent"


def arrays(geode: Geode) -> None:
    import numpy as np

    nodes = geode.nodes
    sent = [np.arange(n, dtype=np.float64) for n in (3, 3, 5000, 5000)]
    for data in sent:  # the first of each size goes the general way, the next one the fast way
        geode.send(data, nodes[0], nodes[1])
    if geode.hosts(nodes[1]):
        for data in sent:
            got = geode.receive(nodes[1], timeout=TIMEOUT).data
            assert type(got) is np.ndarray and np.array_equal(got, data), got


def main(mode: str) -> None:
    geode = Geode() if "PMI_RANK" in os.environ else Geode(2)
    (arrays if mode == "arrays" else objects)(geode)
    geode.close(timeout=TIMEOUT)
    print(f"loaded: {[name for name in HEAVY if name in sys.modules]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "objects")
