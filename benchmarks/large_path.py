"""Where a large array's time goes: raw Send, raw matched probe, raw frame+envelope, geode_mpi.

Run as ``mpiexec -n 2 python benchmarks/large_path.py``. Each method is a ping-pong of one
array, timed with ``MPI.Wtime()`` after a barrier; the methods are interleaved in every repeat
and the ratios are paired within a repeat (see benchmarks/README.md). The raw variants rebuild
geode_mpi's protocol one step at a time, so the gap between two neighbouring columns is the cost
of one step:

- ``raw Send``: blocking ``Send``/``Recv`` into a preallocated buffer (the issue's baseline);
- ``matched``: ``Improbe`` on any tag, then ``Message.Irecv``, as geode_mpi receives a frame;
- ``+envelope``: the same plus a small second message per array, as geode_mpi's envelope;
- ``envelope first``: the small message first, then the array into a receive posted as the small
  one arrives, as geode_mpi sent to a rank over the network (``FRAMES_AFTER``) until leads;
- ``preposted``: the same, the small message received into a receive posted before it comes,
  as geode_mpi's standing receive takes a lead (transport/prepost.py);
- ``one message``: the small message and the array as one MPI message (a derived datatype of
  absolute addresses from ``MPI.BOTTOM``, the small part padded to a fixed size), received
  with ``Improbe`` then ``Message.Irecv`` into the same two places;
- ``geode``: ``Geode.send`` / ``Geode.receive``, the array released before the next receive;
- ``raw placed``: raw ``Send``/``Recv`` again, into a buffer placed as geode_mpi's receive pool
  places one (2 MiB-aligned, transparent huge pages, at the sender's offset within a page): how
  much of geode_mpi's speed comes from where it receives, which hand-written code can copy;
- ``floor``: ``preposted`` plus the work no design that delivers a Message can skip: the codec's
  ``encode`` of the Message (its id, seq and timestamp), the lead's envelope and index, and the
  codec's ``decode`` of what arrived (no delivery layer, no pool, no bookkeeping);
- ``frame first raw``, ``frame first``, ``frame first early``: the frame's ``Isend`` before
  anything else (``frame first raw``: no codec; the others: the codec's ``encode`` between it
  and the lead), the receiver matching the frame by a probe (its size from the status) and
  receiving it while the lead lands in its standing receive; ``early``: decoded as soon as the
  lead is in, while the frame may still be moving (round 35: does sending the frame first
  take the codec off the transfer's path?);
- ``geode isend``, ``geode int32``, ``geode dict``, ``geode Message``: ``geode`` with
  ``isend`` + ``wait``, an int32 array, the array inside a dict, inside a Message subclass.

Then the same size as a one-way stream: rank 0 sends ``trips`` arrays, rank 1 receives them,
timed per message from a barrier to a barrier: ``raw Send`` (blocking ``Send`` / ``Recv``,
the baseline), ``raw Isend`` (all ``Isend`` then ``Waitall``, the receives preposted), and
geode_mpi with ``send``, ``isend`` (all, then ``wait``), an int32 array, a dict, a Message
subclass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import launch
import numpy as np
import reporting
from baseline import arrays
from common import MiB, environment
from launch import Scaled
from mpi4py import MPI
from timing import barrier_then_clock, rotated

from geode_mpi import Geode, Message, codec
from geode_mpi.transport.envelope import FRAMES_AFTER, one_frame_envelope
from geode_mpi.transport.pool import BufferPool
from geode_mpi.transport.prepost import ONE_FRAME, lead_message

TAG_DATA, TAG_ENV = 11, 12
HEAD_BYTES = 2048  # the small part of ``one message``
RAW_SEND = "raw Send"
STREAM_RAW = "raw Send"


class Frame(Message):
    """A user's Message subclass around an array (the ``geode Message`` methods)."""


class Floor:
    """The least work a Message of one array needs on the network path, as ``floor`` times:
    encoded, its lead into a standing receive, its frame's receive posted as the lead lands,
    decoded. With ``decoded`` False, no codec: raw mpi4py's preposted protocol alone."""

    def __init__(self, comm: MPI.Intracomm, names: list[str], decoded: bool = True) -> None:
        self.comm = comm
        self.peer = 1 - comm.Get_rank()
        self.names = names
        self.decoded = decoded
        self.lead = bytearray(2048)
        self.request = MPI.REQUEST_NULL
        self.number = 0

    def stand(self) -> None:
        """Post the receive the next lead lands in."""
        self.request = self.comm.Irecv(self.lead, self.peer, TAG_ENV)

    def send(self, array: np.ndarray) -> None:
        """Send ``array`` as a Message (its lead, then its frame); return once both are sent."""
        comm, peer = self.comm, self.peer
        number = self.number
        self.number += 1
        if self.decoded:
            stamp = codec.make_stamp(number, number, time.time(), comm.Get_rank(), peer)
            meta, frames = codec.encode(Message(array), stamp)
            frame = frames[0]
        else:
            meta, frame = bytes(64), array
        envelope = one_frame_envelope(meta, frame.nbytes, MPI.Get_address(frame), FRAMES_AFTER)
        requests = [comm.Isend(lead_message(number, envelope), peer, TAG_ENV)]
        requests.append(comm.Isend([frame, MPI.BYTE], peer, TAG_DATA))
        while not MPI.Request.Testall(requests):
            pass

    def send_frame_first(self, array: np.ndarray) -> None:
        """`send` with the frame's ``Isend`` first, before the codec's work and the lead."""
        comm, peer = self.comm, self.peer
        number = self.number
        self.number += 1
        requests = [comm.Isend([array, MPI.BYTE], peer, TAG_DATA)]
        if self.decoded:
            stamp = codec.make_stamp(number, number, time.time(), comm.Get_rank(), peer)
            meta = codec.encode(Message(array), stamp)[0]
        else:
            meta = bytes(64)
        envelope = one_frame_envelope(meta, array.nbytes, MPI.Get_address(array), FRAMES_AFTER)
        requests.append(comm.Isend(lead_message(number, envelope), peer, TAG_ENV))
        while not MPI.Request.Testall(requests):
            pass

    def receive_frame_first(self, out: np.ndarray, early: bool) -> Any:
        """The next message's data, its frame matched by a probe (size from the status) and
        received into ``out`` while its lead lands in the standing receive; ``early``: decode
        as soon as the lead is in, while the frame may still be moving."""
        comm, peer, status = self.comm, self.peer, MPI.Status()
        lead_request = self.request
        frame = None
        message = None
        while frame is None:
            message = comm.Improbe(peer, TAG_DATA, status)
            if message is not None:
                frame = message.Irecv([out[: status.Get_count(MPI.BYTE)], MPI.BYTE])
        while not lead_request.Test():
            pass
        lead = self.lead
        meta_len = ONE_FRAME.unpack_from(lead)[5]
        meta = bytes(lead[ONE_FRAME.size : ONE_FRAME.size + meta_len])
        data = None
        if early and self.decoded:
            data = codec.decode(meta, [out], self.names, None, True).data
        while not frame.Test():
            pass
        if not self.decoded:
            return out
        if data is None:
            data = codec.decode(meta, [out], self.names, None, True).data
        return data

    def receive(self, out: np.ndarray, again: bool) -> Any:
        """The next message's data, received into ``out``; ``again``: post the next lead's
        receive as this frame's is posted (a stream's)."""
        request = self.request
        while not request.Test():
            pass
        lead = self.lead
        meta_len = ONE_FRAME.unpack_from(lead)[5]
        meta = bytes(lead[ONE_FRAME.size : ONE_FRAME.size + meta_len])
        frame = self.comm.Irecv([out, MPI.BYTE], self.peer, TAG_DATA)
        if again:
            self.stand()
        while not frame.Test():
            pass
        if not self.decoded:
            return out
        return codec.decode(meta, [out], self.names, None, True).data


def shapes(data: np.ndarray) -> dict[str, Callable[[], Any]]:
    """What each geode method sends: the array, an int32 array, a dict, a Message subclass."""
    as_int32 = data.view(np.int32) if data.nbytes % 4 == 0 else data
    return {
        "geode": lambda: data,
        "geode int32": lambda: as_int32,
        "geode dict": lambda: {"step": 3, "array": data},
        "geode Message": lambda: Frame(data),
    }


SCALED: Scaled = {
    "repeats": (9, 3, "interleaved repeats"),
    "trips": (16, 4, "round trips per timed loop"),
}


def ratios_for(
    size: int, comm: MPI.Intracomm, geode: Geode, repeats: int, trips: int
) -> dict[str, Any]:
    """Time the methods on one array size, interleaved; return its JSON record."""
    rank, peer = comm.Get_rank(), 1 - comm.Get_rank()
    status = MPI.Status()
    data, out = arrays(size)
    placed = BufferPool(max_bytes=2 * size + 2**22).take(size, MPI.Get_address(data) % 4096)
    placed[:] = 0
    envelope = bytes(96)

    def recv_matched(with_envelope: bool) -> None:
        for _ in range(2 if with_envelope else 1):
            while (message := comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)) is None:
                pass
            if status.Get_tag() == TAG_DATA:
                request = message.Irecv([out, MPI.BYTE])
                while not request.Test():
                    pass
            else:
                message.Recv(bytearray(status.Get_count(MPI.BYTE)))

    def recv_envelope_first() -> None:
        while (message := comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)) is None:
            pass
        message.Recv(bytearray(status.Get_count(MPI.BYTE)))
        request = comm.Irecv([out, MPI.BYTE], status.Get_source(), TAG_DATA)
        while not request.Test():
            pass

    def recv_preposted(request: MPI.Request) -> None:
        while not request.Test():
            pass
        request = comm.Irecv([out, MPI.BYTE], peer, TAG_DATA)
        while not request.Test():
            pass

    def send_nonblocking(array: np.ndarray, with_envelope: bool, first: bool = False) -> None:
        requests = [comm.Isend(envelope, peer, TAG_ENV)] if first else []
        requests.append(comm.Isend([array, MPI.BYTE], peer, TAG_DATA))
        if with_envelope and not first:
            requests.append(comm.Isend(envelope, peer, TAG_ENV))
        while not MPI.Request.Testall(requests):
            pass

    def raw_into(buffer: np.ndarray) -> Callable[[], None]:
        def trip() -> None:
            if rank == 0:
                comm.Send(data, peer, TAG_DATA)
                comm.Recv(buffer, peer, TAG_DATA)
            else:
                comm.Recv(buffer, peer, TAG_DATA)
                comm.Send(buffer, peer, TAG_DATA)

        return trip

    def matched(with_envelope: bool) -> Callable[[], None]:
        def trip() -> None:
            if rank == 0:
                send_nonblocking(data, with_envelope)
                recv_matched(with_envelope)
            else:
                recv_matched(with_envelope)
                send_nonblocking(out, with_envelope)

        return trip

    def envelope_first() -> None:
        if rank == 0:
            send_nonblocking(data, True, first=True)
            recv_envelope_first()
        else:
            recv_envelope_first()
            send_nonblocking(out, True, first=True)

    def preposted() -> None:
        # Posted as the trip begins: before the peer sends it, as a standing receive is.
        request = comm.Irecv(bytearray(len(envelope)), peer, TAG_ENV)
        if rank == 0:
            send_nonblocking(data, True, first=True)
            recv_preposted(request)
        else:
            recv_preposted(request)
            send_nonblocking(out, True, first=True)

    head = bytearray(HEAD_BYTES)

    def two_places(array: np.ndarray) -> MPI.Datatype:
        addresses = [MPI.Get_address(head), MPI.Get_address(array)]
        return MPI.BYTE.Create_hindexed([HEAD_BYTES, array.nbytes], addresses).Commit()

    def one_message() -> None:
        for step in (0, 1) if rank == 0 else (1, 0):
            if step == 0:
                datatype = two_places(data if rank == 0 else out)
                request = comm.Isend([MPI.BOTTOM, 1, datatype], peer, TAG_DATA)
            else:
                while (message := comm.Improbe(peer, TAG_DATA, status)) is None:
                    pass
                datatype = two_places(out)
                request = message.Irecv([MPI.BOTTOM, 1, datatype])
            while not request.Test():
                pass
            datatype.Free()

    floor_path = Floor(comm, list(geode.nodes))

    def floor() -> None:
        floor_path.stand()  # as a lead's standing receive
        if rank == 0:
            floor_path.send(data)
            floor_path.receive(out, again=False)
        else:
            floor_path.send(floor_path.receive(out, again=False))

    first_raw = Floor(comm, list(geode.nodes), decoded=False)

    def frame_first(path: Floor, early: bool) -> Callable[[], None]:
        def trip() -> None:
            path.stand()
            if rank == 0:
                path.send_frame_first(data)
                path.receive_frame_first(out, early)
            else:
                path.send_frame_first(path.receive_frame_first(out, early))

        return trip

    def geode_trip(make: Callable[[], Any], blocking: bool = True) -> Callable[[], None]:
        node = geode.nodes[peer]

        def trip() -> None:
            if rank == 0:
                if blocking:
                    geode.send(make(), dest=node)
                else:
                    geode.isend(make(), dest=node).wait()
                geode.receive()  # released at once: the pool reuses its buffer
            else:
                geode.receive()
                if blocking:
                    geode.send(make(), dest=node)
                else:
                    geode.isend(make(), dest=node).wait()

        return trip

    made = shapes(data if rank == 0 else out)

    methods = {
        RAW_SEND: raw_into(out),
        "matched": matched(False),
        "+envelope": matched(True),
        "envelope first": envelope_first,
        "preposted": preposted,
        "one message": one_message,
        "raw placed": raw_into(placed),
        "floor": floor,
        "frame first raw": frame_first(first_raw, False),
        "frame first": frame_first(floor_path, False),
        "frame first early": frame_first(floor_path, True),
        "geode isend": geode_trip(made["geode"], blocking=False),
        **{name: geode_trip(make) for name, make in made.items()},
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(repeats + 1):  # the first repeat warms up and is dropped
        for name in rotated(list(methods), repeat):
            start = barrier_then_clock(comm, MPI.Wtime)
            for _ in range(trips):
                methods[name]()
            if repeat:
                times[name].append((MPI.Wtime() - start) / (2 * trips))
    return {"size": size, **paired_record(times, RAW_SEND)}


def paired_record(times: dict[str, list[float]], baseline: str) -> dict[str, Any]:
    """Medians (us) and per-repeat times of each method, and the paired ratios of
    ``baseline``'s time over each other method's."""
    base = times[baseline]
    return {
        "median_us": {name: statistics.median(ts) * 1e6 for name, ts in times.items()},
        "repeats_us": {name: [t * 1e6 for t in ts] for name, ts in times.items()},
        # raw Send's time over the method's in the same repeat: the method's share of raw
        # Send's bandwidth (above 1.00 it is faster)
        "send_over": {
            name: statistics.median(b / t for b, t in zip(base, ts, strict=True))
            for name, ts in times.items()
            if name != baseline
        },
    }


def streams_for(
    size: int, comm: MPI.Intracomm, geode: Geode, repeats: int, count: int
) -> dict[str, Any]:
    """Time one-way streams of ``count`` arrays of ``size`` bytes, interleaved; the JSON
    record (time per message)."""
    rank, peer = comm.Get_rank(), 1 - comm.Get_rank()
    data = arrays(size)[0]
    outs = [np.zeros(size, np.uint8) for _ in range(count)]
    node = geode.nodes[peer]

    def raw_blocking() -> None:
        if rank == 0:
            for _ in outs:
                comm.Send(data, peer, TAG_DATA)
        else:
            for out in outs:
                comm.Recv(out, peer, TAG_DATA)

    def raw_nonblocking() -> None:
        if rank == 0:
            MPI.Request.Waitall([comm.Isend(data, peer, TAG_DATA) for _ in outs])
        else:
            MPI.Request.Waitall([comm.Irecv(out, peer, TAG_DATA) for out in outs])

    def stream(make: Callable[[], Any], blocking: bool = True) -> Callable[[], None]:
        def run() -> None:
            if rank == 1:
                for _ in outs:
                    geode.receive()
            elif blocking:
                for _ in outs:
                    geode.send(make(), dest=node)
            else:
                for handle in [geode.isend(make(), dest=node) for _ in outs]:
                    handle.wait()

        return run

    def two_messages(path: Floor) -> Callable[[], None]:
        def run() -> None:
            if rank == 0:
                for _ in outs:
                    path.send(data)
                return
            path.stand()
            for index, out in enumerate(outs):
                path.receive(out, again=index < count - 1)

        return run

    made = shapes(data)
    methods = {
        STREAM_RAW: raw_blocking,
        "raw Isend": raw_nonblocking,
        "preposted": two_messages(Floor(comm, list(geode.nodes), decoded=False)),
        "floor": two_messages(Floor(comm, list(geode.nodes))),
        "geode isend": stream(made["geode"], blocking=False),
        **{name: stream(make) for name, make in made.items()},
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(repeats + 1):  # the first repeat warms up and is dropped
        for name in rotated(list(methods), repeat):
            start = barrier_then_clock(comm, MPI.Wtime)
            methods[name]()
            comm.Barrier()  # the last message is in
            if repeat:
                times[name].append((MPI.Wtime() - start) / count)
    return {"size": size, **paired_record(times, STREAM_RAW)}


def row(record: dict[str, Any], what: str = "") -> str:
    """One line of the table: the size, raw Send's time, then the ratios."""
    cells = [f"{name} {ratio:.2f}" for name, ratio in record["send_over"].items()]
    raw = record["median_us"][RAW_SEND]
    return f"{record['size'] // MiB:3d} MiB{what}  {raw:10.0f}    " + "   ".join(cells)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--sizes", default=None, help="array sizes in MiB (default 1,4,16; quick 1,4)"
    )
    launch.scaled_options(parser, SCALED, "a smoke test of a few seconds")
    launch.json_option(parser, "large_path")
    args = launch.parse_scaled(parser, argv, SCALED)
    if args.sizes is None:
        args.sizes = "1,4" if args.quick else "1,4,16"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    world = MPI.COMM_WORLD
    if launch.ranks_refused(world, "large_path.py", 2, exactly=True):
        return 2
    geode = Geode()
    comm = world.Dup()
    rank = comm.Get_rank()
    began = reporting.started()
    env = environment(MPI)
    if rank == 0:
        print("size            raw Send us   then, as ratios raw Send / method (paired per repeat)")
    clock = time.perf_counter()
    sizes = []
    streams = []
    for text in args.sizes.split(","):
        size = int(float(text) * MiB)
        record = ratios_for(size, comm, geode, args.repeats, args.trips)
        sizes.append(record)
        if rank == 0:
            print(row(record, " ping-pong"), flush=True)
        streams.append(streams_for(size, comm, geode, args.repeats, args.trips))
        if rank == 0:
            print(row(streams[-1], " stream   "), flush=True)
    elapsed = time.perf_counter() - clock
    geode.close()
    comm.Free()
    if rank != 0:
        return 0
    settings = {"sizes": [r["size"] for r in sizes], "repeats": args.repeats}
    settings |= {"trips": args.trips, "quick": args.quick}
    reporting.finish(
        args.json,
        "large_path",
        (began, elapsed, settings, env),
        {"sizes": sizes, "streams": streams},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
