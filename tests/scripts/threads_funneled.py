"""At MPI thread level 'funneled', a geode_mpi call from another thread is refused at once."""

import threading

import mpi4py

mpi4py.rc.thread_level = "funneled"

from mpi4py import MPI  # noqa: E402

from geode_mpi import Geode, ThreadError  # noqa: E402

geode = Geode()
if MPI.Query_thread() >= MPI.THREAD_SERIALIZED:
    print("level", MPI.Query_thread(), "is enough: nothing to refuse")
errors: list[BaseException] = []


def other() -> None:
    try:
        geode.send("from a thread", dest=geode.nodes[-1])
    except ThreadError as exc:
        errors.append(exc)


thread = threading.Thread(target=other, name="worker")
thread.start()
thread.join()
print(f"rank {geode.rank}: {errors[0] if errors else 'no error'}")
geode.send("from the main thread", dest=geode.nodes[-1])
if geode.hosts(geode.nodes[-1]):
    got = sorted(geode.receive(timeout=60).data for _ in range(geode.size))
    print(f"rank {geode.rank} received {got}")
geode.close(timeout=60)
