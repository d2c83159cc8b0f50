"""Ordinary mistakes that used to hang in silence, each ended by a timeout (or by the job's
--hang-timeout) once the notice of a long wait (GEODE_WAIT_NOTICE) had time to speak.

Run with 2 ranks: ``python -m geode_mpi tests/scripts/long_waits.py MODE`` where MODE is
receive, full, full-forever, queue, close, topic-on-root, startup, startup-forever or
late-init (without the runner).
"""

import sys
import time

from geode_mpi import Geode, GeodeTimeoutError, QueueConfig, ReceiveTimeout, SendTimeout

mode = sys.argv[1]
if mode == "late-init":  # without the runner: Geode() is what starts MPI
    import os

    if os.environ.get("PMI_RANK") == "1":
        time.sleep(4)  # rank 1 starts MPI late: rank 0 waits in MPI_Init meanwhile
    with Geode() as geode:
        print(f"rank {geode.rank}: Geode made")
elif mode.startswith("startup"):
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 1:
        time.sleep(60 if mode == "startup-forever" else 3)  # rank 1 makes its Geode late
    with Geode() as geode:
        print(f"rank {geode.rank}: Geode made")
elif mode == "receive":
    with Geode() as geode:
        if geode.rank == 1:
            for step in range(3):
                geode.send(step, dest="node0")
            # (not in close() meanwhile: then rank 0's receive would raise at once, none can
            # arrive)
            geode.receive(source="node0", timeout=60)
        else:
            for _ in range(3):
                geode.receive()
            try:
                geode.receive(timeout=3)  # a 4th: rank 1 sent 3
            except ReceiveTimeout:
                print("rank 0: receive timed out")
            geode.send("done", dest="node1")
elif mode.startswith("full"):
    with Geode(queue=QueueConfig(capacity=4, policy="block")) as geode:
        other = f"node{1 - geode.rank}"
        timeout = None if mode == "full-forever" else 3
        try:
            for step in range(10):  # neither rank receives: both queues fill up
                geode.send(step, dest=other, timeout=timeout)
        except SendTimeout:
            print(f"rank {geode.rank}: send timed out")
        while geode.try_receive() is not None:
            pass
elif mode == "queue":
    with Geode() as geode:
        tasks = geode.work_queue("jobs", consumers=["node1"], producers=["node0"])
        if geode.rank == 0:
            tasks.put("only task")  # and no finish(): the consumer waits for more
            try:
                tasks.serve(timeout=4)
            except GeodeTimeoutError:
                print("rank 0: serve timed out")
        else:
            assert tasks.get(timeout=3).data == "only task"
            try:
                tasks.get(timeout=3)
            except ReceiveTimeout:
                print("rank 1: get timed out")
elif mode == "topic-on-root":  # a port of mpi4py's bcast: the topic made on its root only
    with Geode() as geode:
        if geode.rank == 0:
            geode.topic("params", publishers=["node0"], subscribers=["node1"])  # waits here
        else:
            try:
                geode.receive(topic="params", timeout=0)
            except ValueError as exc:
                print(f"rank 1: {exc}")
            geode.receive(timeout=60)  # and --hang-timeout ends the job
elif mode == "close":
    with Geode() as geode:
        if geode.rank == 1:
            time.sleep(3)  # computing: rank 0's close() waits for it
else:
    raise SystemExit(f"unknown mode {mode!r}")
