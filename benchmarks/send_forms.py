"""The two ways to name a send's source, in a ping-pong beside raw ``send``/``recv``.

Run as ``mpiexec -n 2 python benchmarks/send_forms.py`` (``--help`` for the options). A
Message subclass holding ``"hello world"`` goes to and fro, sent as the README writes it
(``geode.send(msg, geode.node, dest)``) and with the source left out (``geode.send(msg,
dest=dest)``), beside raw mpi4py ``send``/``recv`` of a dict of a Message's fields, in the same
launch, the loops interleaved. Both forms take the express path once the first send to a
destination has made its lane (round 49 in benchmarks/README.md: the named form did not).
"""

from __future__ import annotations

import sys
import time

from mpi4py import MPI
from timing import forms_parser, run_forms

from geode_mpi import Geode, Message


class Tagged(Message):
    """A Message subclass holding only its data."""


def main(argv: list[str]) -> None:
    args = forms_parser(__doc__, 5000).parse_args(argv)
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

    run_forms(("raw", "named", "dest"), loop, args.iters, args.repeats, rank == 0)
    geode.close()


if __name__ == "__main__":
    main(sys.argv[1:])
