"""A request and its reply, beside a send/receive ping-pong and raw ``send``/``recv``.

Run as ``mpiexec -n 2 python benchmarks/rpc.py`` (``--help`` for the options). Rank 0 asks,
rank 1 answers with the data it got ("hello world"), in four ways in the same launch, the loops
interleaved:

- ``raw``: mpi4py ``comm.send`` of a dict of a Message's fields, answered by ``comm.send`` of
  another (the least an RPC in mpi4py does);
- ``pingpong``: ``geode.send(Message(x), dest=...)`` and ``geode.receive()`` both ways;
- ``receive``: ``geode.request(Message(x), dest)`` answered by rank 1's ``receive()`` then
  ``geode.reply(msg, msg.data)``;
- ``handler``: ``geode.request(Ask(x), dest)`` answered by a handler for ``Ask`` that returns
  its data, rank 1 in ``geode.run(count=...)``.

Each row is one way (half a round trip), and its ratio to raw in the same launch.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mpi4py import MPI
from timing import forms_parser, run_forms

from geode_mpi import Geode, Message

FORMS = ("raw", "pingpong", "receive", "handler")
DATA = "hello world"


class Ask(Message):
    """A request that rank 1's handler answers (the other forms' messages have no handler)."""


def main(argv: list[str]) -> None:
    args = forms_parser(__doc__, 2000).parse_args(argv)
    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        raise SystemExit("rpc.py: run it with exactly 2 ranks (mpiexec -n 2)")
    geode = Geode()
    rank, peer = geode.rank, 1 - geode.rank
    node, other = geode.node, geode.nodes[peer]

    @geode.on(Ask, "node1")
    def answer(message: Message) -> Any:
        return message.data

    def fields(data: Any) -> dict[str, Any]:
        return {"data": data, "source": node, "dest": other, "type": "Message", "seq": 0}

    def ask(form: str) -> Any:
        if form == "raw":
            comm.send(fields(DATA), peer)
            return comm.recv(source=peer)["data"]
        if form == "pingpong":
            geode.send(Message(DATA), dest=other)
            return geode.receive().data
        return geode.request(Message(DATA) if form == "receive" else Ask(DATA), other).data

    def serve(form: str, iters: int) -> None:
        if form == "handler":
            geode.run(count=iters)
            return
        for _ in range(iters):
            if form == "raw":
                comm.send(fields(comm.recv(source=peer)["data"]), peer)
            elif form == "pingpong":
                geode.send(Message(geode.receive().data), dest=other)
            else:
                got = geode.receive()
                geode.reply(got, got.data)

    def loop(form: str) -> float:
        comm.Barrier()
        start = time.perf_counter()
        if rank == 0:
            for _ in range(args.iters):
                if ask(form) != DATA:
                    raise RuntimeError(f"rpc.py: {form} answered something else")
        else:
            serve(form, args.iters)
        return float((time.perf_counter() - start) / (2 * args.iters) * 1e6)

    run_forms(FORMS, loop, args.iters, args.repeats, rank == 0)
    geode.close()


if __name__ == "__main__":
    main(sys.argv[1:])
