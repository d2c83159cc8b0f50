"""Ping-pong bandwidth of large arrays with compression on and off, beside raw Send, one run.

Run as ``mpiexec -n 2 python benchmarks/compress.py`` (shared memory), and over MPICH's
network path as ``MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=tcp mpiexec -n 2
python benchmarks/compress.py``; over a link of a cluster's speed as ``benchmarks/shape_link.sh
1gbit mpiexec -n 2 python benchmarks/compress.py`` (the ranks' TCP traffic shaped with tc,
recorded as ``link``). For each kind of array (compress_codecs.py's: a smooth float64 field,
integer counts, random noise, a sparse array; ``--arrays``) at each size, the methods take turns
in a rotating order: raw ``Send``/``Recv`` into a reused buffer, a Geode send with compression
off, with ``compress="lz4"`` and with ``compress="auto"``. The table gives each method's
one-way bandwidth (bytes of the array over the one-way time) and its paired median ratio to
raw ``Send`` of the same repeat. Compression's own throughput alone: compress_codecs.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import launch
import numpy as np
from common import MiB, environment, parse_sizes, size_label, write_json
from compress_codecs import arrays
from timing import barrier_then_clock, paired, rotated

from geode_mpi import Compression, Geode, Message, codec
from geode_mpi.codec import compression

METHODS = ("raw Send", "geode off", "geode lz4", "geode auto")
SETTINGS = {"geode off": "off", "geode lz4": "lz4", "geode auto": "auto"}


KINDS = ("smooth f8", "counts i8", "noise f8", "sparse f8")
# Round 37: other arrays a scientist sends (--arrays; not in the default run).
MORE_KINDS = ("smooth f4", "noise f4", "image u2", "labels u1", "counts i4")


def more_arrays(nbytes: int) -> dict[str, np.ndarray[Any, Any]]:
    """MORE_KINDS, each ``nbytes`` long: a float32 field, float32 noise, a 12-bit detector
    image in uint16 (Poisson counts on a smooth background), a uint8 segmentation with runs
    of labels, and Poisson(3) counts in int32."""
    rng = np.random.default_rng(1)
    n4, n2 = nbytes // 4, nbytes // 2
    x = np.linspace(0.0, 20.0, n4, dtype=np.float32)
    background = 200.0 + 100.0 * np.sin(np.linspace(0.0, 6.0, n2))
    labels = np.repeat(rng.integers(0, 8, nbytes // 64 + 1), 64)[:nbytes].astype(np.uint8)
    return {
        "smooth f4": (np.sin(x) * np.exp(-x / 30.0)).astype(np.float32),
        "noise f4": rng.standard_normal(n4, dtype=np.float32),
        "image u2": np.minimum(rng.poisson(background), 4095).astype(np.uint16),
        "labels u1": labels,
        "counts i4": rng.poisson(3.0, n4).astype(np.int32),
    }


def raw_loop(comm: Any, rank: int, data: Any, out: Any, iters: int, wtime: Any) -> float:
    start = barrier_then_clock(comm, wtime)
    for _ in range(iters):
        if rank == 0:
            comm.Send(data, 1)
            comm.Recv(out, 1)
        else:
            comm.Recv(out, 0)
            comm.Send(out, 0)
    return float((wtime() - start) / (2 * iters))


def geode_loop(
    comm: Any, geode: Geode, data: Any, setting: str, iters: int, wtime: Any
) -> tuple[float, Any]:
    peer = "node1" if geode.rank == 0 else "node0"
    got: Any = None
    start = barrier_then_clock(comm, wtime)
    for _ in range(iters):
        if geode.rank == 0:
            got = None
            geode.send(data, dest=peer, compress=setting)
            got = geode.receive(timeout=120).data
        else:
            got = None
            got = geode.receive(timeout=120).data
            geode.send(got, dest=peer, compress=setting)
    return float((wtime() - start) / (2 * iters)), got


def phases(comm: Any, rank: int, data: Any, repeats: int, wtime: Any) -> dict[str, float]:
    """Rank 0 alone compresses and decompresses the array as a send and a receive would (LZ4,
    best of ``repeats``) while rank 1 waits in a barrier: the ratio, both times, and the link
    bandwidth below which compression pays, (raw - compressed bytes) / (both times)."""
    best_c = best_d = float("inf")
    packed_bytes = data.nbytes
    if rank == 0:
        meta, frames = codec.encode(Message(data), codec.Stamp(0, 0, 0.0, 0, 1))
        for _ in range(repeats):
            start = wtime()
            small, packed = compression.shrink(meta, frames, Compression("lz4"))
            best_c = min(best_c, wtime() - start)
            received = [np.array(frame, copy=True) for frame in packed]
            start = wtime()
            if small is not meta:
                compression.expand(small, received, 0, 0)
            best_d = min(best_d, wtime() - start)
            packed_bytes = sum(frame.nbytes for frame in packed)
    comm.Barrier()
    spent = best_c + best_d
    saved = data.nbytes - packed_bytes
    return {
        "ratio": data.nbytes / packed_bytes,
        "compress_ms": best_c * 1e3,
        "decompress_ms": best_d * 1e3,
        "break_even_gbs": saved / spent / 1e9 if saved > 0 else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[MiB, 16 * MiB, 64 * MiB])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="per timed loop, about")
    parser.add_argument(
        "--arrays",
        default=",".join(KINDS),
        help=f"kinds of array, of {', '.join(KINDS + MORE_KINDS)}",
    )
    parser.add_argument("--json", default=None, help="the JSON file to write")
    args = parser.parse_args(argv)
    kinds = [kind.strip() for kind in args.arrays.split(",") if kind.strip()]
    if unknown := [kind for kind in kinds if kind not in KINDS + MORE_KINDS]:
        parser.error(f"--arrays must name kinds of {', '.join(KINDS + MORE_KINDS)}, got {unknown}")
    # set by shape_link.sh: the rate the ranks' TCP traffic was shaped to (None: not shaped)
    link = os.environ.get("GEODE_SHAPED_LINK")
    mpi = launch.start_mpi("compress.py", 2, exactly=True)
    if mpi is None:
        return
    comm = mpi.COMM_WORLD.Dup()
    rank, wtime = comm.Get_rank(), mpi.Wtime
    geode = Geode(acks=False)
    path = "network" if geode.transport.rank == 0 and _network(geode) else "shared memory"
    if rank == 0:
        shaped = f"shaped to {link}" if link else "not shaped"
        print(f"path to rank 1: {path} ({shaped}); {environment(mpi)['mpi_library']}")
        print(f"{'array':10} {'size':>7} " + " ".join(f"{m + ' GB/s':>15}" for m in METHODS)
              + "  ratios to raw Send (paired medians)")  # fmt: skip
    rows = []
    for size in args.sizes:
        made = arrays(size) | more_arrays(size)
        for kind in kinds:
            data = made[kind]
            out = np.empty_like(data)
            iters = max(2, int(args.seconds * 1e9 / 2 / size))  # about 1 GB/s: ~seconds per loop
            times: dict[str, list[float]] = {m: [] for m in METHODS}
            loops: dict[str, Callable[[], float]] = {
                "raw Send": partial(raw_loop, comm, rank, data, out, iters, wtime)
            }
            for method, setting in SETTINGS.items():
                loops[method] = _geode_timed(comm, geode, data, setting, iters, wtime)
            for name in METHODS:  # warm up each once
                loops[name]()
            for turn in range(args.repeats):
                for name in rotated(METHODS, turn):
                    times[name].append(loops[name]())
            alone = phases(comm, rank, data, args.repeats, wtime)
            if rank == 0:
                gbs = {m: size / statistics.median(t) / 1e9 for m, t in times.items()}
                ratios = {
                    m: statistics.median(paired(times["raw Send"], t)) for m, t in times.items()
                }
                print(f"{kind:10} {size_label(size):>7} "
                      + " ".join(f"{gbs[m]:15.2f}" for m in METHODS) + "  "
                      + " ".join(f"{ratios[m]:.2f}" for m in METHODS[1:]), flush=True)  # fmt: skip
                print(f"{'':18} lz4 alone: ratio {alone['ratio']:.2f}, compress "
                      f"{alone['compress_ms']:.2f} ms, decompress {alone['decompress_ms']:.2f} ms:"
                      f" pays below {alone['break_even_gbs']:.2f} GB/s "
                      f"({alone['break_even_gbs'] * 8:.1f} Gb/s)", flush=True)  # fmt: skip
                rows.append({"array": kind, "size": size, "iterations": iters,
                             "gbs": gbs, "ratio_to_raw": ratios,
                             "times_s": times, "lz4_alone": alone})  # fmt: skip
    geode.close()
    if rank == 0:
        report = {"path": path, "link": link, "environment": environment(mpi), "rows": rows}
        where = write_json(Path(args.json) if args.json else None, report, "compress")
        print(f"wrote {where}")


def _geode_timed(
    comm: Any, geode: Geode, data: Any, setting: str, iters: int, wtime: Any
) -> Callable[[], float]:
    def timed() -> float:
        seconds, got = geode_loop(comm, geode, data, setting, iters, wtime)
        if not np.array_equal(got, data):
            raise AssertionError(f"rank {geode.rank}: {setting} changed the array")
        return seconds

    return timed


def _network(geode: Geode) -> bool:
    from geode_mpi.transport import network_peers

    return network_peers(geode.transport)(1)


if __name__ == "__main__":
    main()
