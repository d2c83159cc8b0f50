"""The floor: the least a message layer with geode_mpi's guarantees does per message, in raw
mpi4py and Python, beside raw ``send``/``recv`` of a dict in the same run.

Run as ``mpiexec -n 2 python benchmarks/floor.py`` (``--help`` for the options). Each row is a
ping-pong of ``"hello world"`` that adds one guarantee to the row above it (the rows are
cumulative): a header (source, dest, type, seq, id, timestamp, and the ack it carries) in one
pickle of a tuple; a seq check on receipt (order, dedup); an outbox entry kept until acked, the
ack piggybacked on the reply; a deferred ack (marked due, cleared by the reply that carries it;
a standalone one only if no reply goes within 100 us); counters; a `Message` built as
`codec.decode` builds one; a nonblocking receive (an ``Improbe`` poll, since a layer must also
serve acks and retries while it waits) instead of a blocking ``recv``; a nonblocking send
(``isend`` + ``Test``). A last row does the same with geode_mpi's header shape (a ``struct``
header and the text as UTF-8 in one buffer) instead of a pickled tuple, and the array rows
send 8 B and 1 KiB arrays with every guarantee, the array's bytes after the header, beside raw
pickled ``send``/``recv`` of the array. The geode rows run geode_mpi itself
(``Geode.send`` of a ``Message``, or of the array, and ``Geode.receive``, acks on) in the same
launch, interleaved with the others.

Every switch is a test of a local flag in the loop (about 20 ns a side), so the rows after the
first carry a few of them more than a hand-written layer would.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import statistics
import struct
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import launch
import numpy as np
import reporting
from baseline import message_fields
from common import environment
from reporting import Table
from timing import barrier_then_clock, paired_median, rotated

from geode_mpi import Geode, Message

DATA = "hello world"
ARRAY_SIZES = (8, 1024)
DEFERRED_ACK_S = 100e-6  # a standalone ack goes if no reply carried it by then
TYPE = "Message"

# The cumulative steps: each adds one guarantee to the ones before it.
STEPS = (
    "header",  # one pickle of (src, dst, type, seq, id, timestamp, acked, data)
    "seq",  # order and dedup: the pair's next expected seq checked and advanced
    "outbox",  # kept until acked; the ack (the next seq expected) piggybacked on the reply
    "deferred",  # an ack marked due on receipt, cleared by the reply; a timer test a receive
    "counters",  # sent and received messages and bytes
    "message",  # a Message built as codec.decode builds one
    "poll",  # a nonblocking receive: Improbe poll, then the matched message's recv
    "isend",  # a nonblocking send: isend, then Test (kept until complete if not)
)
ROW_TITLES = {
    "raw dict": "raw dict send/recv (blocking)",
    "header": "+ header: one pickle of a tuple",
    "seq": "+ seq check (order, dedup)",
    "outbox": "+ outbox until acked, ack on the reply",
    "deferred": "+ deferred ack (due, timer test)",
    "counters": "+ counters (messages, bytes)",
    "message": "+ Message built",
    "poll": "+ nonblocking receive (Improbe poll)",
    "isend": "+ nonblocking send (isend + Test)",
    "struct": "all, struct header + UTF-8 text (or pickle)",
    "geode": "geode_mpi: Geode.send / Geode.receive",
}
# The struct rows' header: src, dst, seq, id, timestamp, acked, type-name length, payload kind.
HEAD = struct.Struct("<IIQqdQHB")
KIND_TEXT, KIND_ARRAY, KIND_PICKLE = 0, 1, 2
_CHECKSUM = struct.Struct("<I")  # a pickle's Adler-32, checked before it is unpickled
# --data: the small message's data (the array rows always run)
DATAS: dict[str, Any] = {
    "str": DATA,
    "int": 7,
    "float": 2.5,
    "dict": {"x": 1, "y": 2.0, "name": "abc"},
    "tuple": (1, 2.0),
    "list": [1.0, 2.0],
}

Send = Callable[[Any], None]
Recv = Callable[[], Any]


@dataclasses.dataclass
class Pair:
    """The two ranks of the ping-pong, over a private communicator."""

    comm: Any
    rank: int
    peer: int
    names: tuple[str, str]
    wtime: Callable[[], float]
    mpi: Any


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=2000, help="round trips a timed loop (2000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed loops a row (7)")
    parser.add_argument(
        "--data",
        choices=list(DATAS),
        default="str",
        help="the small message's data (str: 'hello world'; the struct row pickles the others "
        "after its header, with their Adler-32 checked before unpickling, as geode does)",
    )
    launch.json_option(parser, "floor")
    args = parser.parse_args(argv)
    launch.at_least_one(parser, args, ["iters", "repeats"])
    return args


# -- the layers ----------------------------------------------------------------------------------


def raw_dict(pair: Pair) -> tuple[Send, Recv]:
    """The baseline: a dict with a Message's fields, built afresh per send (pingpong.py's)."""
    comm, peer = pair.comm, pair.peer
    node, peer_node = pair.names[pair.rank], pair.names[pair.peer]
    sequence = [0]

    def send(data: Any) -> None:
        seq = sequence[0]
        sequence[0] = seq + 1
        comm.send(message_fields(seq, node, peer_node, data), peer)

    def recv() -> Any:
        return comm.recv(source=peer)

    return send, recv


def floor_layer(pair: Pair, upto: str) -> tuple[Send, Recv]:
    """The floor with the steps up to ``upto`` (a name of `STEPS`), the header a pickled
    tuple. The pair's state is what a layer keeps per peer: the next seq to send, the next
    expected, the outbox, the ack due."""
    on = set(STEPS[: STEPS.index(upto) + 1])
    seq_check, outboxed, deferred = "seq" in on, "outbox" in on, "deferred" in on
    counting, building, polling = "counters" in on, "message" in on, "poll" in on
    nonblocking = "isend" in on
    comm, peer, src, dst, names = pair.comm, pair.peer, pair.rank, pair.peer, pair.names
    # (lowercase: its matched message's recv allocates and unpickles in C)
    improbe, any_source, any_tag = comm.improbe, pair.mpi.ANY_SOURCE, pair.mpi.ANY_TAG
    status = pair.mpi.Status()
    new_message, clock = object.__new__, time.perf_counter
    state = {"next": 0, "expected": 0, "due": False, "since": 0.0, "acked_out": 0}
    outbox: dict[int, Any] = {}
    stats = {"sent": 0, "received": 0, "received_bytes": 0}
    pending: list[Any] = []

    def send(data: Any) -> None:
        seq = state["next"]
        state["next"] = seq + 1
        acked = state["expected"]  # everything below it was received (and processed)
        record = (src, dst, TYPE, seq, (src << 40) | seq, time.time(), acked, data)
        if nonblocking:
            request = comm.isend(record, peer)
            if pending or not request.Test():
                pending.append(request)
                pending[:] = [one for one in pending if not one.Test()]
        else:
            comm.send(record, peer)
        if outboxed:
            outbox[seq] = record
        if deferred:
            state["due"] = False  # carried by this reply
        if counting:
            stats["sent"] += 1

    def recv() -> Any:
        if polling:
            while True:
                message = improbe(any_source, any_tag, status)
                if message is not None:
                    record = message.recv()
                    break
                if deferred and state["due"] and clock() - state["since"] > DEFERRED_ACK_S:
                    state["due"] = False  # (a standalone ack would go here: never in a ping-pong)
        else:
            record = comm.recv(source=peer)
        source, dest, _, seq, mid, stamp, acked, data = record
        if seq_check:
            if seq != state["expected"]:
                raise RuntimeError(f"seq {seq} arrived, {state['expected']} expected")
            state["expected"] = seq + 1
        if outboxed:
            low = state["acked_out"]
            while low < acked:
                outbox.pop(low, None)
                low += 1
            state["acked_out"] = low
        if deferred and not state["due"]:
            state["due"] = True
            state["since"] = clock()
        if counting:
            stats["received"] += 1
            stats["received_bytes"] += status.Get_count() if polling else 0
        if building:
            got = new_message(Message)
            got.__dict__ = {
                "data": data,
                "id": mid,
                "seq": seq,
                "timestamp": stamp,
                "source": names[source],
                "dest": names[dest],
            }
            return got
        return record

    return send, recv


def struct_layer(pair: Pair, array: np.ndarray[Any, Any] | None = None) -> tuple[Send, Recv]:
    """Every step, with geode_mpi's header shape: a struct header, the type name, then the
    text as UTF-8 (or an array's bytes, its dtype and shape known from a descriptor cached by
    its bytes, as geode's templates are), one buffer ``Isend`` and a bytearray ``Recv``."""
    comm, peer, src, dst, names = pair.comm, pair.peer, pair.rank, pair.peer, pair.names
    mpi = pair.mpi
    improbe, any_source, any_tag, byte = comm.Improbe, mpi.ANY_SOURCE, mpi.ANY_TAG, mpi.BYTE
    status = mpi.Status()
    new_message, clock = object.__new__, time.perf_counter
    pack, unpack = HEAD.pack, HEAD.unpack_from
    name = TYPE.encode()
    size = HEAD.size
    descriptors: dict[bytes, tuple[np.dtype[Any], tuple[int, ...]]] = {}
    prefix = b""
    if array is not None:
        prefix = pickle.dumps((array.dtype.str, array.shape))
        prefix = bytes([len(prefix)]) + prefix
    state = {"next": 0, "expected": 0, "due": False, "since": 0.0, "acked_out": 0}
    outbox: dict[int, Any] = {}
    stats = {"sent": 0, "sent_bytes": 0, "received": 0, "received_bytes": 0}
    pending: list[Any] = []

    def send(data: Any) -> None:
        seq = state["next"]
        state["next"] = seq + 1
        if type(data) is str:
            kind, body = KIND_TEXT, data.encode()
        elif array is not None:
            kind, body = KIND_ARRAY, prefix + data.tobytes()
        else:
            pickled = pickle.dumps(data, 5)
            kind, body = KIND_PICKLE, _CHECKSUM.pack(zlib.adler32(pickled)) + pickled
        head = pack(src, dst, seq, (src << 40) | seq, time.time(), state["expected"], 7, kind)
        buffer = b"".join((head, name, body))
        request = comm.Isend(buffer, peer)
        if pending or not request.Test():
            pending.append(request)
            pending[:] = [one for one in pending if not one.Test()]
        outbox[seq] = buffer
        state["due"] = False
        stats["sent"] += 1
        stats["sent_bytes"] += len(buffer)

    def recv() -> Message:
        while True:
            message = improbe(any_source, any_tag, status)
            if message is not None:
                buffer = bytearray(status.Get_count(byte))
                message.Recv(buffer)
                break
            if state["due"] and clock() - state["since"] > DEFERRED_ACK_S:
                state["due"] = False
        source, dest, seq, mid, stamp, acked, name_len, kind = unpack(buffer)
        if seq != state["expected"]:
            raise RuntimeError(f"seq {seq} arrived, {state['expected']} expected")
        state["expected"] = seq + 1
        low = state["acked_out"]
        while low < acked:
            outbox.pop(low, None)
            low += 1
        state["acked_out"] = low
        if not state["due"]:
            state["due"] = True
            state["since"] = clock()
        stats["received"] += 1
        stats["received_bytes"] += len(buffer)
        start = size + name_len
        if kind == KIND_TEXT:
            data: Any = str(memoryview(buffer)[start:], "utf-8")
        elif kind == KIND_PICKLE:
            pickled = memoryview(buffer)[start + 4 :]
            if zlib.adler32(pickled) != _CHECKSUM.unpack_from(buffer, start)[0]:
                raise RuntimeError(f"message {mid}: its pickle does not match its checksum")
            data = pickle.loads(pickled)
        else:
            end = start + 1 + buffer[start]
            key = bytes(buffer[start:end])
            known = descriptors.get(key)
            if known is None:
                dtype, shape = pickle.loads(key[1:])
                known = descriptors[key] = (np.dtype(dtype), shape)
            data = np.frombuffer(buffer, known[0], offset=end).reshape(known[1])
        got = new_message(Message)
        got.__dict__ = {
            "data": data,
            "id": mid,
            "seq": seq,
            "timestamp": stamp,
            "source": names[source],
            "dest": names[dest],
        }
        return got

    return send, recv


def geode_layer(pair: Pair, geode: Geode) -> tuple[Send, Recv]:
    """geode_mpi itself: a blocking ``send`` of a Message (an array as itself, as
    pingpong.py sends it) to the peer's node, and a plain ``receive``."""
    peer = pair.names[pair.peer]

    def send(data: Any) -> None:
        geode.send(data if isinstance(data, np.ndarray) else Message(data), dest=peer)

    return send, geode.receive


def raw_pickle(pair: Pair) -> tuple[Send, Recv]:
    """The arrays' baseline: lowercase send/recv of the array itself (pingpong.py's)."""
    comm, peer = pair.comm, pair.peer

    def send(data: Any) -> None:
        comm.send(data, peer)

    def recv() -> Any:
        return comm.recv(source=peer)

    return send, recv


# -- timing --------------------------------------------------------------------------------------


def ping_pong(pair: Pair, layer: tuple[Send, Recv], payload: Any, iters: int) -> tuple[float, Any]:
    """One timed loop: rank 0 sends and takes the echo, rank 1 echoes the data it took."""
    send, recv = layer
    got: Any = None
    start = barrier_then_clock(pair.comm, pair.wtime)
    if pair.rank == 0:
        for _ in range(iters):
            send(payload)
            got = recv()
    else:
        for _ in range(iters):
            got = recv()
            send(data_of(got))
    return (pair.wtime() - start) / (2 * iters), got


def data_of(got: Any) -> Any:
    """The data a row's receive returned (a dict, a Message, a header tuple or the data)."""
    if isinstance(got, dict):
        return got["data"]
    if isinstance(got, Message):
        return got.data
    if isinstance(got, tuple):
        return got[-1]
    return got


def check(pair: Pair, name: str, got: Any, payload: Any) -> None:
    """Raise unless a row received what was sent (so that nothing broken is timed)."""
    data = data_of(got)
    same = (
        np.array_equal(data, payload) and data.dtype == payload.dtype
        if isinstance(payload, np.ndarray)
        else data == payload
    )
    if not same:
        raise RuntimeError(f"rank {pair.rank}: {name} received {got!r}")


def measure(
    pair: Pair, rows: dict[str, Callable[[], tuple[Send, Recv]]], payload: Any, args: Any
) -> dict[str, list[float]]:
    """Each row's one-way latency (s) of every repeat, the rows interleaved (rotated)."""
    layers = {name: make() for name, make in rows.items()}
    for name, layer in layers.items():
        check(pair, name, ping_pong(pair, layer, payload, 1)[1], payload)
        ping_pong(pair, layer, payload, max(1, args.iters // 10))
    times: dict[str, list[float]] = {name: [] for name in layers}
    for repeat in range(args.repeats):
        for name in rotated(list(layers), repeat):
            times[name].append(ping_pong(pair, layers[name], payload, args.iters)[0])
    return times


def table(times: dict[str, list[float]], base: str, titles: dict[str, str]) -> list[str]:
    """Each row's median one-way us, its paired ratio to ``base``, and what it added."""
    columns = [("row", 42), ("one way us", 12), ("/ " + base, 16), ("added us", 10)]
    out = Table(columns)
    lines = out.head()
    before = None
    for name, values in times.items():
        median = statistics.median(values) * 1e6
        ratio = paired_median(values, times[base])
        added = "" if before is None else f"{median - before:+.2f}"
        lines.append(out.row([titles.get(name, name), f"{median:.2f}", f"{ratio:.2f}", added]))
        before = median
    return lines


def summary(times: dict[str, list[float]], base: str) -> dict[str, Any]:
    return {
        name: {
            "median_us": statistics.median(values) * 1e6,
            "repeats_us": [value * 1e6 for value in values],
            "over_" + base.replace(" ", "_"): paired_median(values, times[base]),
        }
        for name, values in times.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    MPI = launch.start_mpi("floor.py", exactly=True)
    if MPI is None:
        return 2
    comm = MPI.COMM_WORLD.Dup()
    rank = comm.Get_rank()
    pair = Pair(comm, rank, 1 - rank, ("node0", "node1"), MPI.Wtime, MPI)
    began, env = reporting.started(), environment(MPI)
    clock = time.perf_counter()
    rows: dict[str, Callable[[], tuple[Send, Recv]]] = {"raw dict": lambda: raw_dict(pair)}
    for step in STEPS:
        rows[step] = lambda step=step: floor_layer(pair, step)  # type: ignore[misc]
    rows["struct"] = lambda: struct_layer(pair)
    geode = Geode(comm=comm)
    rows["geode"] = lambda: geode_layer(pair, geode)
    message = measure(pair, rows, DATAS[args.data], args)
    arrays = {}
    for size in ARRAY_SIZES:
        data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
        array_rows = {"raw pickle": lambda: raw_pickle(pair)}
        array_rows["floor"] = lambda data=data: struct_layer(pair, data)  # type: ignore[misc]
        array_rows["geode"] = lambda: geode_layer(pair, geode)
        arrays[size] = measure(pair, array_rows, data, args)
    elapsed = time.perf_counter() - clock
    geode.close()
    comm.Free()
    if rank != 0:
        return 0
    title = (
        f"The floor of a small message, 2 ranks, {env['cores']} cores, one way = half a round "
        f"trip, median of {args.repeats} interleaved repeats of {args.iters} round trips; "
        f"data: {DATAS[args.data]!r}"
    )
    print("\n".join(reporting.header(env, title, False)))
    print("\n".join(table(message, "raw dict", ROW_TITLES)))
    for size, times in arrays.items():
        titles = {
            "raw pickle": f"{size} B array, raw pickle",
            "floor": f"{size} B array, floor",
            "geode": f"{size} B array, geode_mpi",
        }
        print("\n".join(table(times, "raw pickle", titles)[2:]))
    settings = {"iters": args.iters, "repeats": args.repeats, "data": args.data}
    numbers = {
        "message": summary(message, "raw dict"),
        "arrays": {str(size): summary(times, "raw pickle") for size, times in arrays.items()},
    }
    reporting.finish(args.json, "floor", (began, elapsed, settings, env), numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
