"""Per-rank costs as the job grows: geode_mpi beside raw mpi4py/h5py at P = 2 to 64 ranks.

Run as ``python benchmarks/scale.py [--quick]`` (plain python, not under mpiexec): it launches
itself under mpiexec at each rank count, each launch with a timeout, holding
/tmp/geode-bigrun.lock for any launch above 8 ranks. At each P it times `Geode()`, `topic()`,
`run()` until quiescent, `checkpoint()`, `close()` and a restart, each beside its raw
equivalent in the same run (the checkpoint beside two: plain h5py + fsync + barrier, and the
same bytes written as durably as geode_mpi writes them), and the memory per rank of one job
written with raw mpi4py and with geode_mpi, each in its own launch (benchmarks/scale_memory.py);
then it
fits each time's growth (against log P and against P), prints the tables and writes the JSON
file and a plot. See benchmarks/README.md, "Scaling".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import launch
import numpy as np
import reporting
import scale_report
import scale_resize
from backpressure import current_rss, peak_rss
from checkpoint import fsync_path, raw_write
from common import RESULTS, environment, parse_size, revision
from scale_report import EXTRA, METHODS, OPS
from suite import launch as launch_logged
from suite import load_result, mpiexec
from timing import barrier_then_clock, rotated

from geode_mpi import Geode, Message, QueueConfig

HERE = Path(__file__).resolve().parent
BIG_RUN_LOCK = Path("/tmp/geode-bigrun.lock")  # one run above BIG_RUN ranks on the machine
BIG_RUN = 8
# The memory jobs launched at each rank count (benchmarks/scale_memory.py): one job written with
# raw mpi4py/h5py and with geode_mpi, each in its own launch with the same user imports, beside
# a bare mpi4py process.
MEMORY_JOBS = (
    ("objects", "bare"),
    ("objects", "raw"),
    ("objects", "geode"),
    ("arrays", "raw"),
    ("arrays", "geode"),
)
SCALED: launch.Scaled = {
    "repeats": (3, 1, "open/close cycles at each rank count"),
    "topics": (8, 2, "topics created per cycle (the time reported is per topic)"),
    "memory_cycles": (6, 2, "open/close cycles of each memory job"),
}


class Ping(Message):
    """The message each node passes to the next before `run()` waits for quiescence."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time geode_mpi's start, topics, quiescence, checkpoint, restart and close "
        "beside raw mpi4py/h5py at several rank counts; fit the growth; JSON, tables, a plot.",
    )
    parser.add_argument(
        "--ranks",
        type=lambda text: [int(part) for part in text.split(",") if part.strip()],
        default=None,
        help="comma-separated rank counts (default 2,4,8,16,32,64; quick 2,4)",
    )
    parser.add_argument(
        "--state",
        type=parse_size,
        default=parse_size("1Mi"),
        help="checkpointed bytes per rank, units Ki/Mi allowed (default 1Mi)",
    )
    parser.add_argument(
        "--other-ranks",
        action="store_true",
        help="also restart each checkpoint of 4 or more ranks on half as many: "
        "reported as not supported where geode_mpi refuses it",
    )
    parser.add_argument(
        "--grow-to",
        type=int,
        default=0,
        help="also restart a checkpoint written at P on 2P ranks, for each P with 2P <= this "
        "(default 0: none)",
    )
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the memory jobs (five launches per rank count): the times and ratios only",
    )
    parser.add_argument("--plot", type=Path, default=None, help="the PNG (default: beside JSON)")
    parser.add_argument(
        "--report", type=Path, default=None, help="run nothing: redo a saved JSON's tables and plot"
    )
    parser.add_argument("--worker", choices=("measure", "restart", "grow"), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=None, help=argparse.SUPPRESS)
    launch.json_option(parser, "scale")
    launch.scaled_options(parser, SCALED, "two rank counts, one cycle, two topics: a smoke test")
    args = launch.parse_scaled(parser, argv, SCALED)
    if args.ranks is None:
        args.ranks = [2, 4] if args.quick else [2, 4, 8, 16, 32, 64]
    if not args.ranks or min(args.ranks) < 2:
        parser.error(f"--ranks must be rank counts >= 2, got {args.ranks}")
    return args


# -- one rank count, under mpiexec ---------------------------------------------------------------


def timed(ranks: launch.Ranks, action: Callable[[], object]) -> float:
    """Seconds from a barrier until the slowest rank finished ``action``."""
    start = barrier_then_clock(ranks.comm, ranks.wtime)
    action()
    return float(max(ranks.comm.allgather(ranks.wtime() - start)))


class Cycle:
    """One open/close cycle: each step of geode_mpi (``geode_STEP``) and its raw equivalent
    (``raw_STEP``) on the same ranks, in a directory of its own."""

    def __init__(self, ranks: launch.Ranks, args: argparse.Namespace, directory: Path) -> None:
        self.ranks, self.topics = ranks, args.topics
        self.directory, self.raw_file = directory, directory / f"raw-{ranks.rank}.h5"
        self.state = {"field": np.full(args.state // 8, float(ranks.rank))}
        directory.mkdir(parents=True, exist_ok=True)
        self.durable = directory / "durable"  # the durable baseline's files and manifest
        self.durable.mkdir(exist_ok=True)
        self.nodes = [f"node{k}" for k in range(ranks.size)]
        self.geode: Geode | None = None
        self.again: Geode | None = None
        self.dup: Any = None
        self.comms: list[Any] = []

    def open_geode(self) -> Geode:
        if self.geode is None:
            raise RuntimeError("the cycle's Geode is not open")
        return self.geode

    def geode_open(self) -> None:
        self.geode = Geode(checkpoint_dir=self.directory / "geode")

    def raw_open(self) -> None:
        """What Geode() agrees on, by hand: a private communicator, every rank's settings."""
        self.dup = self.ranks.comm.Dup()
        self.dup.allgather({"nodes": self.nodes, "queue": repr(QueueConfig())})

    def geode_topic(self) -> None:
        geode = self.open_geode()
        for k in range(self.topics):
            geode.topic(
                f"t{k}", publishers=[self.nodes[k % len(self.nodes)]], subscribers=self.nodes
            )

    def raw_topic(self) -> None:
        """A communicator per topic, as a world-wide Split."""
        self.comms += [self.dup.Split(0, self.ranks.rank) for _ in range(self.topics)]

    def geode_quiescence(self) -> None:
        geode = self.open_geode()
        geode.on(Ping)(lambda message: None)
        ahead = self.nodes[(self.ranks.rank + 1) % len(self.nodes)]
        geode.send(Ping(self.ranks.rank), geode.node, ahead)
        summary = geode.run(timeout=120)
        if summary.reason != "quiescent" or summary.processed != 1:
            raise RuntimeError(f"rank {self.ranks.rank}: run() ended with {summary}")

    def raw_quiescence(self) -> None:
        """A message around the ring, then two waves of the sent/received counts."""
        rank, size = self.ranks.rank, self.ranks.size
        request = self.dup.isend(rank, dest=(rank + 1) % size, tag=7)
        self.dup.recv(source=(rank - 1) % size, tag=7)
        request.wait()
        for _ in range(2):
            self.dup.allreduce(np.array([1, 1]))

    def geode_checkpoint(self) -> None:
        self.open_geode().checkpoint(state=self.state)

    def raw_checkpoint(self) -> None:
        """The plain baseline: the same bytes per rank with h5py, fsynced, then a barrier."""
        with h5py.File(self.raw_file, "w") as file:
            file.create_dataset("field", data=self.state["field"])
        fsync_path(self.raw_file)
        self.dup.Barrier()

    def durable_checkpoint(self) -> None:
        """The durable baseline: the same bytes by hand as durably as geode_mpi writes them
        (fletcher32, fsync, sha256, a manifest on rank 0, a broadcast that it is sealed)."""
        raw_write(dataclasses.replace(self.ranks, comm=self.dup), self.state, self.durable)

    def geode_close(self) -> None:
        self.open_geode().close()

    def raw_close(self) -> None:
        self.dup.Barrier()

    def geode_restart(self) -> None:
        self.again = Geode(checkpoint_dir=self.directory / "geode", restart=True)

    def raw_restart(self) -> None:
        with h5py.File(self.raw_file, "r") as file:
            field = file["field"][...]
        self.dup.Barrier()
        check(self.ranks.rank, "raw h5py read", field, self.state["field"])

    def finish(self) -> None:
        """Check what the restart restored, then close it and free the raw communicators."""
        if self.again is not None:
            restored = self.again.restored_state or {}
            check(self.ranks.rank, "restart", restored.get("field"), self.state["field"])
            self.again.close()
        for comm in [*self.comms, self.dup]:
            comm.Free()


def check(rank: int, what: str, got: Any, want: np.ndarray[Any, Any]) -> None:
    if not (isinstance(got, np.ndarray) and np.array_equal(got, want)):
        raise RuntimeError(f"rank {rank}: {what} returned other data than was written")


def measure(ranks: launch.Ranks, args: argparse.Namespace) -> dict[str, Any]:
    """Every cycle's times (the slowest rank's, in seconds) and every rank's memory."""
    cycles: list[dict[str, dict[str, float]]] = []
    start_rss, end_rss = current_rss(), []
    for turn in range(args.repeats):
        cycle = Cycle(ranks, args, args.dir / f"cycle{turn}")
        times: dict[str, dict[str, float]] = {}
        for op in OPS:
            times[op] = {}
            for method in rotated((*METHODS, *EXTRA.get(op, ())), turn):
                seconds = timed(ranks, getattr(cycle, f"{method}_{op}"))
                times[op][method] = seconds / (args.topics if op == "topic" else 1)
        cycle.finish()
        cycles.append(times)
        ranks.comm.Barrier()  # the last cycle's checkpoint stays, for a restart elsewhere
        if turn and ranks.rank == 0:
            shutil.rmtree(args.dir / f"cycle{turn - 1}")
        end_rss.append(ranks.comm.gather(current_rss()))
    memory = {"start": ranks.comm.gather(start_rss), "peak": ranks.comm.gather(peak_rss())}
    if 2 * ranks.size <= args.grow_to:  # after the peak: it does not count in the memory
        scale_resize.save(ranks, args)
    return {"ranks": ranks.size, "cycles": cycles, "rss": memory | {"after_cycles": end_rss}}


def restart_elsewhere(ranks: launch.Ranks, args: argparse.Namespace) -> dict[str, Any]:
    """Restart the checkpoint a run on ``--nodes`` ranks left (one node per rank there) on
    this job's ranks; a refusal is a result, with geode_mpi's message."""
    directory = args.dir / f"cycle{args.repeats - 1}" / "geode"
    start = barrier_then_clock(ranks.comm, ranks.wtime)
    try:
        geode = Geode(args.nodes, checkpoint_dir=directory, restart=True)
    except Exception as exc:  # today's geode_mpi refuses another rank count: say how
        return {"supported": False, "error": f"{type(exc).__name__}: {exc}"}
    seconds = float(max(ranks.comm.allgather(ranks.wtime() - start)))
    geode.close()
    return {"supported": True, "seconds": seconds, "epoch": geode.restored_epoch}


def worker(args: argparse.Namespace) -> int:
    mpi = launch.start_mpi("scale.py", 1)
    if mpi is None:
        return 2
    world = mpi.COMM_WORLD
    ranks = launch.Ranks(world.Dup(), world.Get_rank(), world.Get_size(), mpi.Wtime)
    if args.worker == "measure":
        result = measure(ranks, args)
    elif args.worker == "grow":
        result = scale_resize.restart(ranks, args)
    else:
        result = {"ranks": ranks.size, "from": args.nodes} | restart_elsewhere(ranks, args)
    if ranks.rank == 0:
        result["environment"] = environment(mpi)
        args.json.write_text(json.dumps(result) + "\n")
    return 0


# -- the driver: every rank count, one mpiexec each ------------------------------------------


@contextlib.contextmanager
def big_run_lock(ranks: int) -> Iterator[None]:
    """Hold the machine's big-run lock (the one ``flock /tmp/geode-bigrun.lock`` takes) while
    a launch above ``BIG_RUN`` ranks runs, so that only one such job runs at a time."""
    if ranks <= BIG_RUN:
        yield
        return
    with BIG_RUN_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_launch(name: str, command: list[str], ranks: int, scratch: Path, quick: bool) -> Any:
    """Launch ``mpiexec -n ranks ...`` with a timeout; what its JSON (``name``.json in
    ``scratch``, or the last line of its output) holds, or ``{"failed": why}``."""
    log, out = scratch / f"{name}.log", scratch / f"{name}.json"
    limit = (120 if quick else 60) + 5 * ranks  # 64 oversubscribed ranks start in about 20 s
    with big_run_lock(ranks):
        code, timed_out = launch_logged([mpiexec(), "-n", str(ranks), *command], log, limit)
    text = log.read_text(errors="replace")
    if timed_out or code != 0:
        why = f"still running after {limit} s: stopped" if timed_out else f"exit status {code}"
        return {"failed": why, "log": text.splitlines()[-12:]}
    if name.startswith("memory"):
        return json.loads(text.strip().splitlines()[-1])
    result, problem = load_result(out)
    return result if result is not None else {"failed": problem}


def measure_at(ranks: int, args: argparse.Namespace, scratch: Path) -> Any:
    """One rank count: the memory jobs, the measurement, the other-count restart."""
    here = scratch / f"p{ranks}"
    here.mkdir()
    script = [sys.executable, str(HERE / "scale.py"), "--dir", str(here)]
    script += ["--repeats", str(args.repeats), "--topics", str(args.topics)]
    script += ["--state", str(args.state), "--grow-to", str(args.grow_to)]
    memory = {} if args.no_memory else memory_at(ranks, args, here)
    measure = [*script, "--worker", "measure", "--json", str(here / f"measure{ranks}.json")]
    record = run_launch(f"measure{ranks}", measure, ranks, here, args.quick)
    record["memory_jobs"] = memory
    if args.other_ranks and "failed" not in record and ranks >= 4:
        other = ranks // 2  # a shrink: nodes=P on fewer ranks is a valid Geode today
        restart = [*script, "--worker", "restart", "--nodes", str(ranks)]
        restart += ["--json", str(here / f"restart{other}.json")]
        record["other_restart"] = run_launch(f"restart{other}", restart, other, here, args.quick)
    if 2 * ranks <= args.grow_to and "failed" not in record:
        grow = [*script, "--worker", "grow", "--nodes", str(2 * ranks)]
        grow += ["--json", str(here / f"grow{2 * ranks}.json")]
        record["grown_restart"] = run_launch(f"grow{2 * ranks}", grow, 2 * ranks, here, args.quick)
    return record


def memory_at(ranks: int, args: argparse.Namespace, here: Path) -> dict[str, Any]:
    """Each memory job at one rank count, in its own launch: what benchmarks/scale_memory.py
    prints (every rank's resident bytes at start, after each cycle, at its peak)."""
    jobs = {}
    for job, method in MEMORY_JOBS:
        directory = here / f"memory-{job}-{method}"
        directory.mkdir()
        command = [sys.executable, str(HERE / "scale_memory.py"), job, method]
        command += [str(args.memory_cycles), str(directory)]
        name = f"memory{ranks}-{job}-{method}"
        jobs[f"{job} {method}"] = run_launch(name, command, ranks, here, args.quick)
    return jobs


def drive(args: argparse.Namespace, argv: list[str]) -> int:
    """Measure every rank count, then report; 1 if a launch failed."""
    began, clock, load = reporting.started(), time.monotonic(), os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="geode-scale-"))
    records: dict[int, dict[str, Any]] = {}
    try:
        for ranks in args.ranks:
            records[ranks] = measure_at(ranks, args, scratch)
            print(scale_report.progress(ranks, records[ranks]), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = scale_report.summarise(records)
    summary["grown_restarts"] = scale_resize.summarise(records)
    settings = {"quick": args.quick, "ranks": args.ranks, "repeats": args.repeats}
    settings |= {"topics": args.topics, "state_bytes": args.state, "argv": argv}
    settings |= {"memory_cycles": args.memory_cycles}
    settings |= {"revision": revision(), "other_ranks": args.other_ranks}
    settings |= {"grow_to": args.grow_to, "no_memory": args.no_memory}
    summary["load_average"] = {"start": load, "end": os.getloadavg()[0]}  # a busy machine?
    path = args.json or RESULTS / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report(summary, path, args)
    numbers = {"summary": summary, "records": {str(p): r for p, r in records.items()}}
    head = (began, time.monotonic() - clock, settings, summary["environment"])
    reporting.finish(path, "scale", head, numbers)
    return 1 if summary["failed"] else 0


def report(summary: dict[str, Any], path: Path, args: argparse.Namespace) -> None:
    """Print the tables and draw the plot (beside ``path`` unless --plot says where)."""
    print("\n".join(scale_report.tables(summary, args.quick)))
    print("\n".join(["", *scale_resize.table(summary.get("grown_restarts", []))]))
    print(scale_report.plot(summary, args.plot or path.with_suffix(".png"), args.quick))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(arguments)
    if args.worker is not None:
        return worker(args)
    if args.report is not None:  # run nothing: the tables and the plot of a saved run
        saved = json.loads(args.report.read_text())
        args.quick = saved["settings"]["quick"]
        report(saved["summary"], args.report, args)
        return 0
    return drive(args, arguments)


if __name__ == "__main__":
    sys.exit(main())
