"""Which compressor for numeric arrays: throughput and ratio of each candidate, one process.

Run as ``python benchmarks/compress_codecs.py`` (``--help`` for the options); no MPI. For each
kind of array (a smooth float64 field, integer counts, random noise, a sparse array) and size,
each codec compresses and decompresses the same array, single-threaded and with 2 threads
where the library has threads; the table gives the ratio (raw / compressed) and the
throughput in GB/s of raw bytes, to set beside the network path's bandwidth (about 1 GB/s over
MPICH's ofi/tcp here, benchmarks/compress.py).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from common import MiB, parse_sizes, size_label, write_json

Codec = tuple[Callable[[Any], bytes], Callable[[bytes, int], Any]]


def arrays(nbytes: int) -> dict[str, np.ndarray[Any, Any]]:
    """The kinds of array a simulation sends, each ``nbytes`` long."""
    rng = np.random.default_rng(0)
    n = nbytes // 8
    x = np.linspace(0.0, 20.0, n)
    smooth = np.sin(x) * np.exp(-x / 30.0) + 1e-3 * np.cos(50.0 * x)
    counts = rng.poisson(3.0, n).astype(np.int64)
    noise = rng.standard_normal(n)
    sparse = np.zeros(n)
    hits = rng.integers(0, n, n // 100)
    sparse[hits] = rng.standard_normal(hits.size)
    return {"smooth f8": smooth, "counts i8": counts, "noise f8": noise, "sparse f8": sparse}


def codecs(threads: int) -> dict[str, Codec]:
    """Each available candidate, as (compress, decompress(bytes, nbytes))."""
    found: dict[str, Codec] = {}
    try:
        from numcodecs import LZ4, Blosc, Zstd, blosc

        blosc.set_nthreads(threads)
        blosc.use_threads = threads > 1
        for cname, level in (("lz4", 5), ("zstd", 1), ("blosclz", 5)):
            codec = Blosc(cname=cname, clevel=level, shuffle=Blosc.SHUFFLE)
            found[f"numcodecs Blosc {cname}:{level}"] = (codec.encode, _decode(codec))
        if threads == 1:
            for name, codec in (("Zstd:1", Zstd(level=1)), ("LZ4", LZ4())):
                found[f"numcodecs {name}"] = (codec.encode, _decode(codec))
    except ImportError:
        pass
    try:
        import blosc2

        blosc2.set_nthreads(threads)
        for codec_id, label in ((blosc2.Codec.LZ4, "lz4"), (blosc2.Codec.ZSTD, "zstd")):
            found[f"blosc2 {label}:5"] = _blosc2(blosc2, codec_id)
    except ImportError:
        pass
    try:
        import zstandard

        for level in (1, 3):
            cctx = zstandard.ZstdCompressor(level=level, threads=threads if threads > 1 else 0)
            dctx = zstandard.ZstdDecompressor()
            found[f"zstandard {level}"] = (
                cctx.compress,
                lambda data, n, d=dctx: d.decompress(data, max_output_size=n),
            )
    except ImportError:
        pass
    if threads == 1:
        try:
            import lz4.frame

            found["lz4.frame"] = (lz4.frame.compress, lambda data, n: lz4.frame.decompress(data))
        except ImportError:
            pass
    return found


def _decode(codec: Any) -> Callable[[bytes, int], Any]:
    def decode(data: bytes, nbytes: int) -> Any:
        return codec.decode(data, out=np.empty(nbytes, np.uint8))

    return decode


def _blosc2(blosc2: Any, codec_id: Any) -> Codec:
    def compress(array: Any) -> bytes:
        return bytes(
            blosc2.compress2(
                array,
                typesize=array.itemsize,
                codec=codec_id,
                clevel=5,
                filter=blosc2.Filter.SHUFFLE,
            )
        )

    def decompress(data: bytes, nbytes: int) -> Any:
        out = np.empty(nbytes, np.uint8)
        blosc2.decompress2(data, dst=out)
        return out

    return compress, decompress


def measure(codec: Codec, array: np.ndarray[Any, Any], repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` compress and decompress throughput (GB/s of raw bytes), and ratio."""
    compress, decompress = codec
    best_c = best_d = float("inf")
    packed = b""
    for _ in range(repeats):
        start = time.perf_counter()
        packed = compress(array)
        best_c = min(best_c, time.perf_counter() - start)
        start = time.perf_counter()
        out = decompress(packed, array.nbytes)
        best_d = min(best_d, time.perf_counter() - start)
    if bytes(memoryview(out).cast("B")) != array.tobytes():
        raise AssertionError("round trip changed the array")
    return {
        "ratio": array.nbytes / len(packed),
        "compress_gbs": array.nbytes / best_c / 1e9,
        "decompress_gbs": array.nbytes / best_d / 1e9,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[MiB, 16 * MiB, 64 * MiB])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--json", type=None, default=None, help="the JSON file to write")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    print(f"{'codec':28} {'thr':>3} {'array':10} {'size':>7} {'ratio':>7} {'comp GB/s':>9} "
          f"{'dec GB/s':>8}")  # fmt: skip
    for size in args.sizes:
        for kind, array in arrays(size).items():
            for threads in (int(t) for t in args.threads.split(",")):
                for name, codec in codecs(threads).items():
                    repeats = args.repeats if size <= 16 * MiB else 1
                    got = measure(codec, array, repeats)
                    rows.append({"codec": name, "threads": threads, "array": kind,
                                 "size": size, **got})  # fmt: skip
                    print(f"{name:28} {threads:3} {kind:10} {size_label(size):>7} "
                          f"{got['ratio']:7.2f} {got['compress_gbs']:9.2f} "
                          f"{got['decompress_gbs']:8.2f}", flush=True)  # fmt: skip
    from pathlib import Path

    path = write_json(Path(args.json) if args.json else None, {"rows": rows}, "compress_codecs")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
