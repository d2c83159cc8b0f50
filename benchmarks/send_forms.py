"""The two ways to name a send's source, in a ping-pong beside raw ``send``/``recv``.

Run as ``mpiexec -n 2 python benchmarks/send_forms.py`` (``--help`` for the options). A
Message subclass holding ``"hello world"`` goes to and fro, sent as the README writes it
(``geode.send(msg, geode.node, dest)``) and with the source left out (``geode.send(msg,
dest=dest)``), beside raw mpi4py ``send``/``recv`` of a dict of a Message's fields, in the same
launch, the loops interleaved. Both forms take the express path once the first send to a
destination has made its lane (round 49 in benchmarks/README.md: the named form did not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from mpi4py import MPI

from geode_mpi import Geode, Message


class Tagged(Message):
    """A Message subclass holding only its data."""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=5000, help="round trips per loop")
    parser.add_argument("--repeats", type=int, default=7, help="loops per form (median)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        raise SystemExit("send_forms.py: run it with exactly 2 ranks (mpiexec -n 2)")
    geode = Geode()
    rank = geode.rank
    peer = 1 - rank
    node, other = geode.node, geode.nodes[peer]

    def fields() -> dict[str, object]:
        return {"data": "hello world", "source": node, "dest": other, "type": "Tagged"}

    def send(form: str) -> None:
        if form == "named":
            geode.send(Tagged("hello world"), node, other)
        elif form == "dest":
            geode.send(Tagged("hello world"), dest=other)
        else:
            comm.send(fields(), peer)

    def take(form: str) -> None:
        if form == "raw":
            comm.recv(source=peer)
        else:
            geode.receive(node)

    def loop(form: str) -> float:
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(args.iters):
            first, second = (send, take) if rank == 0 else (take, send)
            first(form)
            second(form)
        return float((time.perf_counter() - start) / (2 * args.iters) * 1e6)

    forms = ("raw", "named", "dest")
    times: dict[str, list[float]] = {form: [] for form in forms}
    for form in forms:
        loop(form)  # (warm: the lanes are made, the classes known)
    for _ in range(args.repeats):
        for form in forms:
            times[form].append(loop(form))
    if rank == 0:
        median: Callable[[list[float]], float] = statistics.median
        raw = median(times["raw"])
        print(f"one way, us (median of {args.repeats} loops of {args.iters} round trips)")
        for form in forms:
            print(f"  {form:6} {median(times[form]):7.2f}  {median(times[form]) / raw:5.2f}x raw")
    geode.close()


if __name__ == "__main__":
    main(sys.argv[1:])
