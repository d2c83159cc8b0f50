"""Checkpoint write and restore of geode_mpi beside raw h5py, and what periodic checkpoints cost
a running message pipeline, interleaved in one run.

Run as ``mpiexec -n 2 python benchmarks/checkpoint.py`` (any number of ranks; ``--help`` for the
options).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import launch
import numpy as np
import reporting
from common import MiB, environment, parse_size, revision, size_label
from launch import Ranks, Scaled
from timing import barrier_then_clock, paired, paired_median, rotated

from geode_mpi import Geode, ReceiveTimeout

DEFAULT_SIZES = (16 * MiB, 64 * MiB, 256 * MiB)
QUICK_SIZES = (MiB, 4 * MiB, 16 * MiB)
SCALED: Scaled = {
    "repeats": (5, 3, "write+restore rounds per method"),
    "interval": (10.0, 1.25, "seconds of a pipeline segment, with one checkpoint or none"),
    "pairs": (3, 2, "pipeline segment pairs without/with"),
}
ARRAYS = 4  # a rank's state: this many float64 arrays of equal size
STATE_PER_SECOND = 64 * MiB / 10  # the pipeline's state: 64 MiB per rank at one checkpoint per 10 s

GEODE = "geode"  # Geode(checkpoint_dir=...).checkpoint(state=...), Geode(..., restart=True)
RAW = "raw h5py"  # the same files by hand: contiguous + CRC-32 each, fsync, sha256, manifest
PLAIN = "plain h5py"  # contiguous datasets, no fletcher32, no sha256, no fsync: the floor
METHODS = (GEODE, RAW, PLAIN)
SYNCED = "h5py+fsync"  # --scale: plain h5py, fsync, a barrier (issue 15's baseline)
SCALE_METHODS = (*METHODS, SYNCED)
# --queued: messages each rank sends just before its checkpoint: (small ones to the next nodes,
# one after another; bytes of a large array to the next node, still on its way, or 0)
QUEUED = {"0": (0, 0), "8": (8, 0), "64": (64, MiB)}
SMALL = {"step": 1, "pad": "x" * 40}  # a small message's data

# The targets.
WRITE_MIN = 0.8  # geode's checkpoint write reaches this fraction of raw h5py's throughput
RESTORE_MIN = 0.8  # so does its restore
OVERHEAD_MAX = 0.05  # checkpoints every 10 s cost a pipeline less than this fraction of its time

SCALE_MAX = 2.0  # --scale: geode's checkpoint within this factor of raw h5py plus a barrier
TIMEOUT = 300.0  # for every geode_mpi call that waits
BUCKET = 0.05  # seconds: the resolution of rank 0's timeline of hops in a pipeline segment
WARM_HOPS = 500  # per rank, before the pipeline's timed segments
MANIFEST = "manifest.json"
_CHUNK = 256 * 1024  # bytes hashed per read, as geode_mpi hashes


@dataclasses.dataclass
class Run(Ranks):
    """Every rank's state: a private raw communicator, and the job's scratch directory."""

    root: Path
    cold: bool
    peak_disk: int = 0  # the most bytes under root at the end of any write


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Checkpoint write and restore throughput of geode_mpi beside raw h5py "
        "writing and reading the same arrays, and the overhead of periodic checkpoints on a "
        "ring pipeline. Any number of ranks: mpiexec -n 2 python benchmarks/checkpoint.py",
    )
    launch.sizes_option(parser, "state sizes per rank", "16Mi,64Mi,256Mi", "1Mi,4Mi,16Mi")
    parser.add_argument(
        "--pipeline-state",
        type=parse_size,
        default=None,
        help="state each rank saves in a pipeline checkpoint (default 64Mi x interval / 10 s)",
    )
    parser.add_argument("--array", type=parse_size, default=MiB, help="the ring's array size (1Mi)")
    parser.add_argument("--tokens", type=int, default=2, help="ring arrays per rank (2)")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop each file from the page cache (fsync, posix_fadvise DONTNEED) before a read",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the scratch directory goes (the tmp dir)"
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="only geode's checkpoint and restore beside raw and plain h5py writing and "
        "reading the same bytes per rank plus a barrier (issue 15's target at many ranks: "
        f"within {SCALE_MAX:g}x of raw h5py); no step tables, no pipeline",
    )
    parser.add_argument(
        "--queued",
        choices=sorted(QUEUED),
        default="0",
        help="--scale: messages each rank sends just before each checkpoint, queued at their "
        "nodes when it starts: 0, 8 small ones, or 64 small ones and a 1 MiB array on its way "
        "(the h5py methods write as many bytes more); the restart receives them all",
    )
    launch.scaled_options(parser, SCALED, "a smoke test of about 10 s")
    launch.json_option(parser, "checkpoint")
    args = launch.parse_scaled(parser, argv, SCALED)
    launch.fill_sizes(parser, args, DEFAULT_SIZES, QUICK_SIZES)
    if args.pipeline_state is None:
        args.pipeline_state = int(STATE_PER_SECOND * args.interval) // 8 * 8
    launch.at_least_one(parser, args, ("tokens",))
    if args.interval <= 0:
        parser.error(f"--interval must be > 0, got {args.interval}")
    if min(args.sizes, default=0) < ARRAYS * 8:
        parser.error(f"--sizes must each be >= {ARRAYS * 8} bytes, got {args.sizes}")
    if args.pipeline_state < ARRAYS * 8:
        parser.error(f"--pipeline-state must be >= {ARRAYS * 8} bytes, got {args.pipeline_state}")
    if args.array < 8:
        parser.error(f"--array must be >= 8 bytes, got {args.array}")
    return args


# -- files: what raw h5py does, the way geode_mpi does it ----------------------------------------


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read as geode_mpi reads it (into one reused buffer)."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while size := file.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def fsync_path(path: Path, drop: bool = False) -> None:
    """fsync a file or directory; with ``drop`` also drop the file from the page cache, so
    that the next read comes from the disk (``--cold``; dirty pages cannot be dropped, hence
    the fsync first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        if drop:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def evict(paths: Sequence[Path]) -> None:
    """Drop files from the page cache, so the next read comes from the disk (``--cold``)."""
    for path in paths:
        fsync_path(path, drop=True)


def disk_use(root: Path) -> int:
    return sum(
        (Path(folder) / name).stat().st_size for folder, _, names in os.walk(root) for name in names
    )


def filesystem(path: Path) -> str:
    """The mount ``path`` is on, as 'TYPE DEVICE at MOUNT' (Linux), for the record."""
    best = ("", "unknown")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[0]):
                best = (mount, f"{kind} {device} at {mount}")
    except OSError:
        pass
    return best[1]


def make_state(size: int, rank: int) -> dict[str, np.ndarray[Any, Any]]:
    """``size`` bytes (rounded down) of random float64 in ``ARRAYS`` arrays, different per rank."""
    rng = np.random.default_rng(1000 + rank)
    return {f"a{k}": rng.random(size // (ARRAYS * 8)) for k in range(ARRAYS)}


def same_arrays(got: dict[str, Any] | None, want: dict[str, Any], what: str) -> None:
    if got is None or set(got) != set(want):
        raise RuntimeError(f"{what}: got keys {None if got is None else sorted(got)}")
    for key, value in want.items():
        if not np.array_equal(got[key], value):
            raise RuntimeError(f"{what}: array {key!r} differs from what was written")


# -- where geode_mpi's time goes ------------------------------------------------------------------


class Phases:
    """Times the steps of a geode_mpi checkpoint or restore on this rank, by wrapping the
    functions it calls (module, class or instance attributes), which it puts back on exit.

    A step timed inside another in the same thread is recorded as ``outer/inner``; one in a
    helper thread (geode_mpi may fsync in one) on its own. A step that this version of
    geode_mpi does not have is not timed (its time shows as "other").
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._threads = threading.local()  # each thread's stack of steps it is in
        self._lock = threading.Lock()
        self._undo: list[Callable[[], None]] = []

    def replace(self, owner: Any, name: str, value: Any) -> None:
        had = name in vars(owner)
        saved = vars(owner).get(name)
        setattr(owner, name, value)
        self._undo.append(
            (lambda: setattr(owner, name, saved)) if had else (lambda: delattr(owner, name))
        )

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = self._threads.__dict__.setdefault("stack", [])
            key = f"{stack[-1]}/{phase}" if stack else phase
            stack.append(phase)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - start
                stack.pop()
                with self._lock:
                    self.seconds[key] += seconds
                    self.calls[key] += 1

        self.replace(owner, name, timed)

    def __enter__(self) -> Phases:
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def record(self, total: float) -> dict[str, Any]:
        return {"total": total, "seconds": dict(self.seconds), "calls": dict(self.calls)}


class _TimedOs:
    """The os module as geode_mpi's store sees it while timed: ``fsync`` wrapped, the rest as is."""

    def __init__(self) -> None:
        self.fsync = os.fsync

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def time_steps(geode: Geode | None) -> Phases:
    """Phases wrapping the steps of a checkpoint (given its Geode) and of a restore."""
    from geode_mpi.core import checkpoint_cut, restoring
    from geode_mpi.persistence import store, store_reading

    phases = Phases()
    timed_os = _TimedOs()
    phases.wrap(timed_os, "fsync", "fsync")
    phases.replace(store, "os", timed_os)
    for owner, name, phase in (
        (checkpoint_cut, "encode_state", "encode"),
        (checkpoint_cut, "capture", "capture"),
        (store, "write_rank_file", "rank file"),
        (restoring, "load", "restore"),
        (restoring, "decode_state", "decode"),
        (store_reading, "sha256_of", "sha256"),
        (store, "_write_tree", "h5py"),  # its own recursive calls count as "h5py/h5py"
        (store, "_fsync_dir", "dir fsync"),
        (store.CheckpointStore, "check_files", "validate"),
        (restoring, "read_rank_file", "read"),
    ):
        phases.wrap(owner, name, phase)
    if geode is not None:
        phases.wrap(geode._transport, "drain", "drain")
        if geode._checkpointer is not None:
            phases.wrap(geode._checkpointer.store, "write_manifest", "manifest")
    return phases


def write_steps(record: dict[str, Any]) -> dict[str, float]:
    """A geode checkpoint's time by step, from `Phases.record` (seconds). ``file`` is the
    rank file's wall time: its datasets (``h5py``), ``fsync`` (of the file, in whichever
    thread, and of its directory), ``sha256``, and the rest (opening, closing, renaming); the
    fsync and the hash may overlap."""
    s, total = defaultdict(float, record["seconds"]), record["total"]
    steps = {
        "drain": s["drain"],
        "capture": s["encode"] + s["capture"],
        "h5py": s["rank file/h5py"],
        "fsync": s["rank file/fsync"] + s["fsync"] + s["rank file/dir fsync"],
        "sha256": s["rank file/sha256"],
        "file": s["rank file"],
        "manifest": s["manifest"],
    }
    top = s["drain"] + s["encode"] + s["capture"] + s["rank file"] + s["manifest"]
    return steps | {"other": total - top, "total": total}


def restore_steps(record: dict[str, Any]) -> dict[str, float]:
    """A geode restore's time by step, from `Phases.record` (seconds; ``files`` hashed)."""
    s, total = defaultdict(float, record["seconds"]), record["total"]
    top = s["validate"] + s["read"] + s["restore"] + s["decode"]
    return {
        "sha256": s["validate/sha256"],
        "files": float(record["calls"].get("validate/sha256", 0)),
        "h5py": s["read"],
        "unpack": s["restore"] + s["decode"],
        "other": total - top + s["validate"] - s["validate/sha256"],
        "total": total,
    }


# -- the three methods: write a rank's state, read it back ----------------------------------------


def timed(run: Run, action: Callable[[], Any]) -> tuple[float, Any]:
    """From a barrier until every rank is done (a barrier): rank 0's seconds, and the result."""
    start = barrier_then_clock(run.comm, run.wtime)
    result = action()
    run.comm.Barrier()
    return run.comm.bcast(run.wtime() - start, root=0), result


def fresh_directory(run: Run, name: str) -> Path:
    directory = run.root / name
    if run.rank == 0:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    run.comm.Barrier()
    return directory


def remove_directory(run: Run, directory: Path) -> None:
    run.comm.Barrier()
    if run.rank == 0:
        run.peak_disk = max(run.peak_disk, disk_use(run.root))
        shutil.rmtree(directory, ignore_errors=True)
    run.comm.Barrier()


def geode_round(run: Run, state: dict[str, Any]) -> dict[str, Any]:
    directory = fresh_directory(run, "geode")
    opened, geode = timed(run, lambda: Geode(checkpoint_dir=directory))
    with time_steps(geode) as phases:
        written, _ = timed(run, lambda: geode.checkpoint(state=state, timeout=TIMEOUT))
    write = phases.record(written)
    geode.close(timeout=TIMEOUT)
    if run.cold:
        mine = list(directory.glob(f"epoch-*/**/rank-{run.rank:04d}.h5"))
        evict(mine + (list(directory.glob(f"epoch-*/{MANIFEST}")) if run.rank == 0 else []))
    with time_steps(None) as phases:
        read, again = timed(run, lambda: Geode(checkpoint_dir=directory, restart=True))
    restore = phases.record(read)
    same_arrays(again.restored_state, state, f"rank {run.rank}: geode restored_state")
    again.close(timeout=TIMEOUT)
    remove_directory(run, directory)
    return {
        "write_s": written,
        "read_s": read,
        "open_s": opened,
        "write_steps": run.comm.gather(write_steps(write), root=0),
        "read_steps": run.comm.gather(restore_steps(restore), root=0),
    }


def raw_write(run: Ranks, state: dict[str, Any], directory: Path) -> dict[str, Any]:
    """What geode_mpi's store does to be durable, by hand: the same datasets and settings
    straight into the rank's file, fsync, its SHA-256; rank 0 gathers the entries, fsyncs the
    directory, writes the manifest to a temporary name, fsync, rename, fsync of the directory,
    and tells every rank the checkpoint is sealed (a kill at any moment leaves the previous
    checkpoint usable, and a write that returned is complete)."""
    final = directory / f"rank-{run.rank:04d}.h5"
    clock = time.perf_counter
    start = clock()
    with h5py.File(final, "w") as file:
        for key, value in state.items():
            dataset = file.create_dataset(key, data=value)  # as geode_mpi's format 5
            dataset.attrs["crc32"] = np.uint32(zlib.crc32(np.ascontiguousarray(value)))
            chunks = dataset.chunks
    written = clock()
    fsync_path(final)
    synced = clock()
    entry = {"name": final.name, "size": final.stat().st_size, "sha256": sha256_of(final)}
    hashed = clock()
    entries = run.comm.gather(entry)
    if run.rank == 0:
        fsync_path(directory)
        manifest = directory / MANIFEST
        staged = manifest.with_name(MANIFEST + ".tmp")
        with open(staged, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"ranks": run.size, "files": entries}, indent=1))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, manifest)
        fsync_path(directory)
    run.comm.bcast(None)
    done = clock()
    steps = {"h5py": written - start, "fsync": synced - written, "sha256": hashed - synced}
    steps |= {"file": hashed - start, "manifest": done - hashed, "total": done - start}
    return steps | {"chunks": list(chunks or ())}


def raw_read(run: Run, directory: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """Read this rank's arrays back after checking its file's size and SHA-256 against the
    manifest, as geode_mpi validates before it reads."""
    clock = time.perf_counter
    start = clock()
    entry = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))["files"][run.rank]
    path = directory / entry["name"]
    if path.stat().st_size != entry["size"] or sha256_of(path) != entry["sha256"]:
        raise RuntimeError(f"{path}: does not match its manifest entry")
    hashed = clock()
    with h5py.File(path, "r") as file:
        arrays = {key: file[key][()] for key in file}
    done = clock()
    steps = {"sha256": hashed - start, "files": 1.0, "h5py": done - hashed, "unpack": 0.0}
    return arrays, steps | {"total": done - start}


def raw_round(run: Run, state: dict[str, Any]) -> dict[str, Any]:
    directory = fresh_directory(run, "raw")
    written, write = timed(run, lambda: raw_write(run, state, directory))
    chunks = write.pop("chunks")
    write |= {"other": written - write["total"], "total": written}  # as geode's: barrier to barrier
    if run.cold:
        manifest = [directory / MANIFEST] if run.rank == 0 else []
        evict([directory / f"rank-{run.rank:04d}.h5", *manifest])
    read, (arrays, steps) = timed(run, lambda: raw_read(run, directory))
    steps |= {"other": read - steps["total"], "total": read}
    same_arrays(arrays, state, f"rank {run.rank}: raw h5py read")
    remove_directory(run, directory)
    return {
        "write_s": written,
        "read_s": read,
        "write_steps": run.comm.gather(write, root=0),
        "read_steps": run.comm.gather(steps, root=0),
        "chunks": chunks,
    }


def write_plain(path: Path, state: dict[str, Any]) -> None:
    """``state``'s arrays as datasets of one h5py file, nothing more (no fsync, no hash)."""
    with h5py.File(path, "w") as file:
        for key, value in state.items():
            file.create_dataset(key, data=value)


def plain_round(run: Run, state: dict[str, Any]) -> dict[str, Any]:
    directory = fresh_directory(run, "plain")
    path = directory / f"rank-{run.rank:04d}.h5"

    def write() -> None:
        write_plain(path, state)

    def read() -> dict[str, Any]:
        with h5py.File(path, "r") as file:
            return {key: file[key][()] for key in file}

    written, _ = timed(run, write)
    if run.cold:
        evict([path])
    seconds, arrays = timed(run, read)
    same_arrays(arrays, state, f"rank {run.rank}: plain h5py read")
    remove_directory(run, directory)
    return {"write_s": written, "read_s": seconds}


ROUNDS = {GEODE: geode_round, RAW: raw_round, PLAIN: plain_round}


def measure_files(run: Run, args: argparse.Namespace) -> dict[int, dict[str, list[Any]]]:
    """Every size: per repeat, each method writes and reads back, in a rotating order."""
    warm = make_state(min(args.sizes), run.rank)
    for method in METHODS:  # warm up and check each method once
        ROUNDS[method](run, warm)
    results: dict[int, dict[str, list[Any]]] = {}
    for size in args.sizes:
        state = make_state(size, run.rank)
        rounds: dict[str, list[Any]] = {method: [] for method in METHODS}
        for repeat in range(args.repeats):
            for method in rotated(METHODS, repeat):
                rounds[method].append(ROUNDS[method](run, state))
        results[size] = rounds
        del state
        if run.rank == 0:
            print(f"  {size_label(size)} per rank done", flush=True)
    return results


# -- the pipeline: arrays around a ring, with and without checkpoints ------------------------------
# A segment lasts a fixed time on rank 0's clock; its work is the hops all ranks did meanwhile.
# Rank 0 signals "checkpoint now" (half way) and "stop" by entering nonblocking barriers the
# other ranks entered when the segment began, so nothing but a cheap Test runs per hop, and
# every rank checkpoints once, where it is (a checkpoint needs no common hop count: it drains).


@dataclasses.dataclass
class Ring:
    """The pipeline on every rank: its Geode, the next node, and the state it checkpoints."""

    geode: Geode
    next_node: str
    state: dict[str, Any]
    hops: int = 0  # done by this rank so far
    checkpoints: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def sync(run: Run, ring: Ring) -> None:
    """A barrier that keeps geode_mpi progressing: a neighbour may still wait on this rank."""
    ring.geode.flush()
    request = run.comm.Ibarrier()
    while not request.Test():
        ring.geode.pending()


def checkpoint(ring: Ring) -> None:
    ring.state["hops"] = ring.hops
    with time_steps(ring.geode) as phases:
        start = time.perf_counter()
        ring.geode.checkpoint(state=ring.state, timeout=TIMEOUT)
        ring.checkpoints.append(write_steps(phases.record(time.perf_counter() - start)))


def hop(ring: Ring) -> bool:
    """Take the next array from the previous rank and pass it on (if one came within 2 ms:
    the loop must look at rank 0's signals even when no array arrives)."""
    try:
        token, count, array = ring.geode.receive(timeout=0.002).data
    except ReceiveTimeout:
        return False
    if array[0] != token:
        raise RuntimeError(f"ring array {token} arrived holding {array[0]} after {count} hops")
    ring.geode.send((token, count + 1, array), dest=ring.next_node, timeout=TIMEOUT)
    ring.hops += 1
    return True


def hops_for(
    run: Run, ring: Ring, seconds: float, with_checkpoint: bool, timeline: list[int]
) -> int:
    """Pass arrays on until rank 0 has seen ``seconds`` go by, checkpointing half way if asked;
    the hops this rank did (and per ``BUCKET`` seconds in ``timeline``). Both kinds of segment
    watch the same signals, so that they differ only by the checkpoint."""
    comm, first = run.comm, ring.hops
    due = {"half": seconds / 2, "stop": seconds}
    signals = {} if run.rank == 0 else {name: comm.Ibarrier() for name in due}
    start = time.perf_counter()
    while True:
        if run.rank == 0:
            elapsed = time.perf_counter() - start
            for name, when in due.items():  # in order, as the other ranks entered them
                if name not in signals and elapsed >= when:
                    signals[name] = comm.Ibarrier()
        half, stop = signals.get("half"), signals.get("stop")
        stopping = stop is not None and stop.Test()
        if half is not None and (stopping or half.Test()):
            while not half.Test():
                ring.geode.pending()
            signals["half"] = None  # seen (and rank 0 posts no second one: the key is there)
            if with_checkpoint:
                checkpoint(ring)
        if stopping:
            return ring.hops - first
        if hop(ring):
            bucket = int((time.perf_counter() - start) / BUCKET)
            timeline.extend([0] * (bucket + 1 - len(timeline)))
            timeline[bucket] += 1


def cpu_busy() -> float:
    """CPU seconds the whole machine has been busy (Linux; NaN elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return float("nan")
    user, nice, system, _, _, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def segment(run: Run, ring: Ring, seconds: float, with_checkpoint: bool) -> dict[str, Any]:
    """One timed segment from a barrier: every rank's hops, summed; the CPU time the rest of
    the machine used meanwhile (busy CPU seconds less this job's); rank 0's timeline."""
    sync(run, ring)
    busy, mine = cpu_busy(), os.times()
    timeline: list[int] = []
    done = hops_for(run, ring, seconds, with_checkpoint, timeline)
    sync(run, ring)
    used = sum(run.comm.allgather(sum(os.times()[:2]) - sum(mine[:2])))
    others = run.comm.bcast(cpu_busy() - busy - used, root=0)
    return {"hops": sum(run.comm.allgather(done)), "others_cpu_s": others, "timeline": timeline}


def start_ring(run: Run, args: argparse.Namespace, directory: Path) -> Ring:
    geode = Geode(checkpoint_dir=directory)
    field = make_state(args.pipeline_state, run.rank)
    ring = Ring(geode, geode.nodes[(run.rank + 1) % run.size], {**field, "hops": 0})
    handles = []
    for k in range(args.tokens):
        token = run.rank * args.tokens + k
        array = np.full(max(1, args.array // 8), float(token))
        handles.append(geode.isend((token, 0, array), dest=ring.next_node))
    for handle in handles:
        if handle is not None:
            handle.wait(timeout=TIMEOUT)
    return ring


def check_restart(run: Run, args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """Restart from the pipeline's last checkpoint: every ring array is queued again, once."""
    with Geode(checkpoint_dir=directory, restart=True) as again:
        state = again.restored_state or {}
        queued = again.pending()
        tokens = sorted(again.receive(timeout=TIMEOUT).data[0] for _ in range(queued))
        every = run.comm.allgather(tokens)
        epoch = again.restored_epoch
    found = sorted(token for tokens in every for token in tokens)
    expected = list(range(run.size * args.tokens))
    return {"epoch": epoch, "queued": found, "hops": state.get("hops"), "ok": found == expected}


def measure_pipeline(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Pairs of segments of ``interval`` seconds, one without and one with a checkpoint half
    way, the order alternating from pair to pair."""
    directory = fresh_directory(run, "pipeline")
    ring = start_ring(run, args, directory)
    # Warm up: the first few hundred hops per rank run up to 10x slower, while geode_mpi's
    # receive pool grows (to about 95 buffers of 2 MiB here: see the README).
    warm, done, spent = min(2.0, max(1.0, args.interval / 2)), 0, 0.0
    while done < WARM_HOPS * run.size and spent < 10.0:
        done += segment(run, ring, warm, False)["hops"]
        spent += warm
    work: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for pair in range(args.pairs):
        for kind in ("without", "with") if pair % 2 == 0 else ("with", "without"):
            work[kind].append(segment(run, ring, args.interval, kind == "with"))
    ring.geode.close(timeout=TIMEOUT)
    restart = check_restart(run, args, directory)
    checkpoints = run.comm.gather(ring.checkpoints, root=0)
    remove_directory(run, directory)
    return {"segments": work, "checkpoints": checkpoints, "restart": restart}


# -- reporting ------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mean_steps(ranks: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(rank[key] for rank in ranks) for key in ranks[0]}


def step_medians(
    rounds: list[list[dict[str, float]]], pick: Callable[[Any], Any]
) -> dict[str, float]:
    """Median over repeats of ``pick(per-rank steps)`` (a dict of seconds)."""
    picked = [pick(ranks) for ranks in rounds]
    return {key: median([p[key] for p in picked]) for key in picked[0]}


def summarise_files(run: Run, results: dict[int, dict[str, list[Any]]]) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    for size, rounds in results.items():
        record: dict[str, Any] = {"bytes_per_rank": size, "bytes_per_job": size * run.size}
        for phase in ("write", "read"):
            times = {method: [r[f"{phase}_s"] for r in rounds[method]] for method in METHODS}
            record[phase] = {
                "seconds": times,
                "median_s": {method: median(values) for method, values in times.items()},
                "gb_per_s": {
                    method: size * run.size / median(values) / 1e9
                    for method, values in times.items()
                },
                "raw_over_geode": paired(times[RAW], times[GEODE]),
                "plain_over_geode": paired(times[PLAIN], times[GEODE]),
            }
            for key in ("raw_over_geode", "plain_over_geode"):
                record[phase][f"median_{key}"] = median(record[phase][key])
        for method in (GEODE, RAW):
            for phase in ("write_steps", "read_steps"):
                every = [r[phase] for r in rounds[method]]
                record[f"{method} {phase}"] = {
                    "all": step_medians(every, mean_steps),
                    "rank 0": step_medians(every, lambda ranks: ranks[0]),
                    "others": step_medians(every, lambda ranks: mean_steps(ranks[1:] or ranks)),
                }
        record["geode_open_s"] = median([r["open_s"] for r in rounds[GEODE]])
        record["h5py_chunks"] = rounds[RAW][0]["chunks"]
        sizes[size_label(size)] = record
    return sizes


def throughput_table(sizes: dict[str, Any], phase: str) -> list[str]:
    heads = ["size/rank", "geode s", "raw s", "plain s", "geode GB/s", "raw GB/s", "plain GB/s"]
    heads += ["raw/geode", "plain/geode"]
    widths = (10, 9, 9, 9, 12, 10, 12, 11, 13)
    lines = ["".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)), "-" * sum(widths)]
    for label, record in sizes.items():
        numbers = record[phase]
        cells = [label]
        cells += [f"{numbers['median_s'][m]:.3f}" for m in METHODS]
        cells += [f"{numbers['gb_per_s'][m]:.2f}" for m in METHODS]
        cells += [
            f"{numbers['median_raw_over_geode']:.2f}",
            f"{numbers['median_plain_over_geode']:.2f}",
        ]
        lines.append("".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    return lines


def write_steps_table(sizes: dict[str, Any]) -> list[str]:
    keys = ("drain", "capture", "h5py", "fsync", "sha256", "file", "manifest", "other", "total")
    lines = [f"{'size/rank':>10}{'method':>10}" + "".join(f"{k:>9}" for k in keys)]
    lines.append("-" * (20 + 9 * len(keys)))
    for label, record in sizes.items():
        for method in (GEODE, RAW):
            steps = record[f"{method} write_steps"]["all"]
            cells = "".join(f"{steps.get(k, 0.0):>9.3f}" for k in keys)
            lines.append(f"{label:>10}{method:>10}{cells}")
    return lines


def read_steps_table(run: Run, sizes: dict[str, Any]) -> list[str]:
    keys = ("files", "sha256", "h5py", "unpack", "other", "total")
    lines = [f"{'size/rank':>10}{'method':>10}{'ranks':>8}" + "".join(f"{k:>9}" for k in keys)]
    lines.append("-" * (28 + 9 * len(keys)))
    groups = ("rank 0", "others") if run.size > 1 else ("rank 0",)
    for label, record in sizes.items():
        for method in (GEODE, RAW):
            for group in groups:
                steps = record[f"{method} read_steps"][group]
                cells = f"{steps['files']:>9.0f}"
                cells += "".join(f"{steps[k]:>9.3f}" for k in keys[1:])
                name = "0" if group == "rank 0" else f"1-{run.size - 1}"
                lines.append(f"{label:>10}{method:>10}{name:>8}{cells}")
    return lines


def lost_around(timeline: list[int], seconds: float, busy: float) -> float:
    """The share of a segment's work lost around its checkpoint, from rank 0's hops per
    ``BUCKET``: the window from half way until a tenth of the segment (1 s in 10) after the
    checkpoint ended (``busy`` seconds), against the rate in the rest of the segment."""
    buckets = round(seconds / BUCKET)
    counts = (timeline + [0] * buckets)[:buckets]
    first = int(seconds / 2 / BUCKET)
    last = min(buckets, int(np.ceil((seconds / 2 + busy + seconds / 10) / BUCKET)))
    outside = counts[:first] + counts[last:]
    if not outside or sum(outside) == 0:
        return float("nan")
    rate = sum(outside) / len(outside)  # hops per bucket
    return (rate * (last - first) - sum(counts[first:last])) / (rate * buckets)


def summarise_pipeline(run: Run, args: argparse.Namespace, pipe: dict[str, Any]) -> dict[str, Any]:
    segments = pipe["segments"]
    hops = {kind: [one["hops"] for one in every] for kind, every in segments.items()}
    without, with_ = hops["without"], hops["with"]
    overheads = [1 - w / wo for w, wo in zip(with_, without, strict=True)]
    # per checkpoint (one per pair): the slowest rank's time, and the steps' mean over ranks
    per_checkpoint = [list(ranks) for ranks in zip(*pipe["checkpoints"], strict=True)]
    totals = [max(rank["total"] for rank in ranks) for ranks in per_checkpoint]
    lost = [
        lost_around(one["timeline"], args.interval, busy)
        for one, busy in zip(segments["with"], totals, strict=True)
    ]
    return {
        "segment_s": args.interval,
        "lost_around_checkpoint": lost,
        "median_lost_around_checkpoint": median(lost),
        "hops": hops,
        "others_cpu_s": {
            kind: [one["others_cpu_s"] for one in every] for kind, every in segments.items()
        },
        "rank0_timeline_bucket_s": BUCKET,
        "rank0_hops_per_bucket": {
            kind: [one["timeline"] for one in every] for kind, every in segments.items()
        },
        "overheads": overheads,
        "median_overhead": median(overheads),
        "total_overhead": 1 - sum(with_) / sum(without),
        "checkpoint_s": totals,
        "checkpoint_steps": step_medians(per_checkpoint, mean_steps),
        "checkpoint_share": median(totals) / args.interval,
        "restart": pipe["restart"],
        "state_bytes_per_rank": args.pipeline_state,
    }


def pipeline_lines(run: Run, args: argparse.Namespace, pipe: dict[str, Any]) -> list[str]:
    without, with_ = pipe["hops"]["without"], pipe["hops"]["with"]
    others = pipe["others_cpu_s"]
    steps = pipe["checkpoint_steps"]
    heads = ["pair", "hops without", "hops with", "hops/s without", "with/without", "lost around"]
    heads += ["checkpoint s", "others' CPU s"]
    widths = (6, 14, 12, 16, 14, 13, 14, 16)
    lines = [
        f"pipeline: {run.size} rank(s) pass {size_label(args.array)} arrays around a ring "
        f"({args.tokens} per rank); each pair: {args.interval:g} s without checkpoints and "
        f"{args.interval:g} s with one half way ({size_label(args.pipeline_state)} of state per "
        "rank, plus the queued arrays)",
        "".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)),
        "-" * sum(widths),
    ]
    for k, (wo, w) in enumerate(zip(without, with_, strict=True)):
        cells = (
            str(k + 1),
            f"{wo:,}",
            f"{w:,}",
            f"{wo / args.interval:,.0f}",
            f"{pipe['overheads'][k]:+.1%}",
            f"{pipe['lost_around_checkpoint'][k]:+.1%}",
            f"{pipe['checkpoint_s'][k]:.3f}",
            f"{max(0.0, others['without'][k]):.1f} / {max(0.0, others['with'][k]):.1f}",
        )
        lines.append("".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    lines += [
        "-" * sum(widths),
        f"work lost: {pipe['median_lost_around_checkpoint']:+.1%} around each checkpoint "
        f"(median); between segments {pipe['median_overhead']:+.1%} (paired median; all pairs "
        f"together {pipe['total_overhead']:+.1%}); the checkpoint call alone: "
        f"{pipe['checkpoint_share']:.1%} of a segment (median)",
        "hops: all ranks' together; with/without: 1 - hops with / hops without (the pair's two "
        "segments); lost around: the hops rank 0 did not do from half way until a tenth of the "
        "segment after the checkpoint, at the rate of the rest of that segment, over the "
        "segment's hops at that rate; checkpoint s: the slowest rank's checkpoint() call; "
        "others' CPU s: CPU time the rest of the machine used in the segment without / with "
        "(other processes, the kernel)",
        "where a checkpoint's time went (s, mean over ranks, median): "
        + ", ".join(
            f"{k} {steps[k]:.3f}"
            for k in ("drain", "capture", "h5py", "fsync", "sha256", "file", "manifest", "other")
        ),
    ]
    restart = pipe["restart"]
    lines.append(
        f"restart from its last checkpoint (epoch {restart['epoch']}): "
        f"{len(restart['queued'])} ring arrays queued again, "
        + (
            "each once: PASS"
            if restart["ok"]
            else f"expected each of 0..{run.size * args.tokens - 1} once: FAIL"
        )
    )
    return lines


def evaluate(sizes: dict[str, Any], pipe: dict[str, Any], interval: float) -> list[dict[str, Any]]:
    """The targets. (3) uses the work lost around each checkpoint: the rate of the ring
    wanders by 5-10% from one segment to the next, more than the budget, so the comparison
    between segments (printed beside it) needs many more pairs to say anything at 5%."""

    def worst(phase: str) -> tuple[float, str]:
        return min((r[phase]["median_raw_over_geode"], label) for label, r in sizes.items())

    write, write_at = worst("write")
    read, read_at = worst("read")
    overhead = pipe["median_lost_around_checkpoint"]
    return [
        {
            "target": f"(1) geode checkpoint write >= {WRITE_MIN} x raw h5py (same datasets, "
            "fsync, sha256, manifest)",
            "value": f"worst {write:.2f} at {write_at}",
            "ratio": write,
            "result": "PASS" if write >= WRITE_MIN else "FAIL",
        },
        {
            "target": f"(2) geode restore >= {RESTORE_MIN} x raw h5py (sha256 of its file, read)",
            "value": f"worst {read:.2f} at {read_at}",
            "ratio": read,
            "result": "PASS" if read >= RESTORE_MIN else "FAIL",
        },
        {
            "target": f"(3) a checkpoint every {interval:g} s costs a pipeline < {OVERHEAD_MAX:.0%}"
            " of its work",
            "value": f"{overhead:+.1%} lost around each checkpoint (median; between segments "
            f"{pipe['median_overhead']:+.1%}, the call alone {pipe['checkpoint_share']:.1%})",
            "ratio": overhead,
            "result": "PASS" if overhead < OVERHEAD_MAX else "FAIL",
        },
    ]


def header_lines(run: Run, env: dict[str, Any], args: argparse.Namespace) -> list[str]:
    return [
        f"geode_mpi {env['geode_mpi']} (commit {env['commit']}) checkpoints beside raw h5py "
        f"{h5py.__version__} (HDF5 {h5py.version.hdf5_version}), "
        f"{reporting.ranks_on_cores(env, 'rank(s)')}; median of {args.repeats} interleaved repeats"
        + (" (quick)" if args.quick else ""),
        f"{reporting.mpi_line(env)}; {reporting.cma_line(env)}",
        f"files in {run.root} ({filesystem(run.root)}); "
        + (
            "each file dropped from the page cache before it is read (--cold)"
            if run.cold
            else "reads find the files in the page cache (--cold drops them)"
        ),
    ]


def legend_lines(run: Run, sizes: dict[str, Any]) -> list[str]:
    chunks = {label: record["h5py_chunks"] for label, record in sizes.items()}
    opened = median([record["geode_open_s"] for record in sizes.values()])
    return [
        f"state: {ARRAYS} float64 arrays per rank; s: from a barrier until every rank is done, "
        "plus a barrier; GB/s: all ranks' bytes over that time (1e9 bytes/s)",
        "geode: checkpoint(state=) on an idle Geode / Geode(checkpoint_dir=, restart=True) until "
        f"restored_state (of which creating a Geode: {opened * 1e3:.0f} ms)",
        "raw h5py: the same datasets (contiguous, each with its CRC-32), fsync, sha256, rank 0 "
        "fsyncs the directory and writes a manifest / sha256 of its file against it, then read",
        "plain h5py: contiguous datasets, no fletcher32, no sha256, no fsync / read",
        "ratios are paired (median over repeats of the two times in the same repeat): above "
        "1.00 geode is faster",
        "the chunks were "
        + ", ".join(
            f"{label}: {' x '.join(map(str, c)) or 'contiguous'}" for label, c in chunks.items()
        ),
    ]


# -- --scale: the checkpoint's cost at many ranks -------------------------------------------------


def measure_scale(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Per size, per repeat (the methods in a rotating order): the seconds of each write and
    read, from a barrier until every rank is done, and geode's over each other's."""
    small, large = QUEUED[args.queued]
    extra = {"queued": np.zeros(small * SMALL_BYTES + large, np.uint8)} if small else {}

    def geode(run: Run, state: dict[str, Any]) -> dict[str, Any]:
        return geode_scale_round(run, state, args.queued)

    rounds_of = {GEODE: geode, RAW: raw_round, PLAIN: plain_round, SYNCED: synced_round}
    results: dict[str, Any] = {}
    for size in args.sizes:
        state = make_state(size, run.rank)
        rounds: dict[str, list[Any]] = {method: [] for method in SCALE_METHODS}
        for repeat in range(args.repeats + 1):  # the first is a warm-up
            for method in rotated(SCALE_METHODS, repeat):
                record = rounds_of[method](run, state if method == GEODE else state | extra)
                if repeat:
                    rounds[method].append(record)
        seconds = {
            phase: {method: [r[f"{phase}_s"] for r in rounds[method]] for method in SCALE_METHODS}
            for phase in ("write", "read")
        }
        results[size_label(size)] = {
            phase: {
                **{method: median(times[method]) for method in SCALE_METHODS},
                **{
                    f"geode/{short}": paired_median(times[GEODE], times[method])
                    for short, method in (("raw", RAW), ("plain", PLAIN), ("synced", SYNCED))
                },
            }
            for phase, times in seconds.items()
        }
    return results


SMALL_BYTES = 100  # about what one of --queued's small messages takes in a checkpoint


def send_queued(geode: Geode, queued: str) -> None:
    """--queued's messages from this rank's node: small ones to the next nodes in turn, and
    a large array to the next node, not waited for (on its way as the checkpoint starts)."""
    small, large = QUEUED[queued]
    rank, size = geode.rank, geode.size
    for k in range(small):
        geode.isend(SMALL, dest=geode.nodes[(rank + 1 + k) % size])
    if large:
        geode.isend(np.ones(large // 8), dest=geode.nodes[(rank + 1) % size])


def receive_queued(geode: Geode, queued: str, what: str) -> None:
    """Receive what `send_queued` sent this rank's node (every rank sent as many)."""
    small, large = QUEUED[queued]
    for _ in range(small + (1 if large else 0)):
        message = geode.receive(timeout=TIMEOUT)
        if isinstance(message.data, dict) and message.data != SMALL:
            raise RuntimeError(f"rank {geode.rank}: {what}: got {message.data!r}")


def geode_scale_round(run: Run, state: dict[str, Any], queued: str = "0") -> dict[str, Any]:
    directory = fresh_directory(run, "geode")
    geode = Geode(checkpoint_dir=directory)
    send_queued(geode, queued)
    written, _ = timed(run, lambda: geode.checkpoint(state=state, timeout=TIMEOUT))
    receive_queued(geode, queued, "after the checkpoint")
    geode.close(timeout=TIMEOUT)
    read, again = timed(run, lambda: Geode(checkpoint_dir=directory, restart=True))
    same_arrays(again.restored_state, state, f"rank {run.rank}: geode restored_state")
    receive_queued(again, queued, "after the restart")  # each message was saved once
    again.close(timeout=TIMEOUT)
    remove_directory(run, directory)
    return {"write_s": written, "read_s": read}


def synced_round(run: Run, state: dict[str, Any]) -> dict[str, Any]:
    """Issue 15's baseline: the same bytes per rank with plain h5py, fsync, a barrier."""
    directory = fresh_directory(run, "synced")
    path = directory / f"rank-{run.rank:04d}.h5"

    def write() -> None:
        write_plain(path, state)
        fsync_path(path)

    written, _ = timed(run, write)
    remove_directory(run, directory)
    return {"write_s": written, "read_s": float("nan")}


def scale_report(run: Run, args: argparse.Namespace, results: dict[str, Any]) -> list[str]:
    lines = [
        f"checkpoint at {run.size} ranks, {args.queued} messages queued per rank, seconds from "
        f"a barrier to a barrier (median of {args.repeats}); raw h5py: the same bytes per rank "
        "as durably as geode (fsync, sha256, a manifest); plain h5py: no fsync (the floor); "
        "h5py+fsync: plain h5py, fsync (issue 15's baseline); read: Geode(restart=True)",
        f"{'size/rank':>10} {'phase':>6} {'geode s':>9} {'raw s':>9} {'plain s':>9} "
        f"{'synced s':>9} {'geode/raw':>10} {'geode/plain':>12} {'geode/synced':>13}",
    ]
    for label, phases in results.items():
        for phase, r in phases.items():
            lines.append(
                f"{label:>10} {phase:>6} {r[GEODE]:9.3f} {r[RAW]:9.3f} {r[PLAIN]:9.3f} "
                f"{r[SYNCED]:9.3f} {r['geode/raw']:10.2f} {r['geode/plain']:12.2f} "
                f"{r['geode/synced']:13.2f}"
            )
    worst = max(phases["write"]["geode/synced"] for phases in results.values())
    verdict = "PASS" if worst <= SCALE_MAX else "FAIL"
    lines.append(
        f"target: {verdict}  checkpoint write within {SCALE_MAX:g}x of h5py + fsync + a barrier: "
        f"worst {worst:.2f}"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    MPI = launch.start_mpi("checkpoint.py", 1)
    assert MPI is not None  # any number of ranks will do
    comm = MPI.COMM_WORLD.Dup()
    root = None
    if comm.Get_rank() == 0:
        root = tempfile.mkdtemp(prefix="geode-checkpoint-bench-", dir=args.dir)
    run = Run(comm, comm.Get_rank(), comm.Get_size(), MPI.Wtime, Path(comm.bcast(root)), args.cold)
    env = environment(MPI) | {"load_average_start": os.getloadavg(), "commit": revision()}
    if run.rank == 0:
        print("\n".join(header_lines(run, env, args)), flush=True)
    began = reporting.started()
    clock = time.perf_counter()
    if args.scale:
        scaled = measure_scale(run, args)
        comm.Barrier()
        if run.rank == 0:
            shutil.rmtree(run.root, ignore_errors=True)
            print("\n".join(scale_report(run, args, scaled)), flush=True)
            head = (began, time.perf_counter() - clock, {"sizes": args.sizes}, env)
            reporting.finish(args.json, "checkpoint-scale", head, {"scale": scaled})
        comm.Free()
        return 0
    results = measure_files(run, args)
    files_s = time.perf_counter() - clock
    pipe = measure_pipeline(run, args)
    elapsed = time.perf_counter() - clock
    env["load_average_end"] = os.getloadavg()
    comm.Barrier()
    if run.rank == 0:
        shutil.rmtree(run.root, ignore_errors=True)
    comm.Free()
    if run.rank != 0:
        return 0
    sizes = summarise_files(run, results)
    pipeline = summarise_pipeline(run, args, pipe)
    targets = evaluate(sizes, pipeline, args.interval)
    lines = ["write (checkpoint):", *throughput_table(sizes, "write")]
    lines += ["restore:", *throughput_table(sizes, "read")]
    lines += legend_lines(run, sizes)
    lines += ["where a write's time goes (s, median over repeats of the mean over ranks):"]
    lines += write_steps_table(sizes)
    lines += ["where a restore's time goes (s, median over repeats; files: files hashed per rank):"]
    lines += read_steps_table(run, sizes)
    lines += pipeline_lines(run, args, pipeline)
    lines.append(
        f"peak disk use: {run.peak_disk / MiB:,.0f} MiB; load average (1 min) "
        f"{env['load_average_start'][0]:.2f} at the start, "
        f"{env['load_average_end'][0]:.2f} at the end"
    )
    lines.append("targets:")
    lines += [f"  {t['result']}  {t['target']}: {t['value']}" for t in targets]
    print("\n".join(lines))
    settings = {
        "sizes": args.sizes,
        "repeats": args.repeats,
        "interval_s": args.interval,
        "pairs": args.pairs,
        "pipeline_state": args.pipeline_state,
        "array": args.array,
        "tokens": args.tokens,
        "cold": args.cold,
        "quick": args.quick,
        "directory": str(run.root),
        "filesystem": filesystem(run.root),
    }
    numbers = {"files_seconds": files_s, "h5py": h5py.__version__}
    numbers |= {"hdf5": h5py.version.hdf5_version, "sizes": sizes, "pipeline": pipeline}
    numbers |= {"peak_disk_bytes": run.peak_disk, "targets": targets}
    reporting.finish(args.json, "checkpoint", (began, elapsed, settings, env), numbers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
