"""Backpressure: a fast producer, a consumer ten times slower, and a receive queue's capacity.

Rank 0 streams numbered 64 KiB arrays to rank 1, which "processes" each one for ten times the
producer's own cost per message. With ``QueueConfig(capacity=64, policy="block")`` the producer
waits for credits, so memory stays bounded on both ranks and nothing is lost; ``--policy none``
(no capacity) and ``--policy drop_oldest`` show what happens without flow control.

Run as ``mpiexec -n 2 python benchmarks/backpressure.py`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import launch
import numpy as np
import reporting
from common import GiB, KiB, MiB, environment, parse_size, size_label, write_json

from geode_mpi import Geode, Message, QueueConfig, __version__

POLICIES = ("block", "drop_oldest", "none")
DEFAULT_MESSAGES = 100_000
UNBOUNDED_MESSAGES = 10_000  # default for none / drop_oldest: about 625 MiB of 64 KiB arrays
QUICK_MESSAGES = 3_000
DEFAULT_WARMUP = 2_000
QUICK_WARMUP = 500
# With no flow control every message may be held at once (on this machine, by the producer):
# refuse runs whose messages add up to more than this, so that no rank gets near 4 GiB.
UNBOUNDED_LIMIT = 2 * GiB
RSS_GUARD = 3 * GiB  # a rank whose RSS passes this stops the job (a safety net, never expected)
RSS_EVERY = 64  # messages between two RSS samples
TIMELINE_POINTS = 100  # samples kept in the JSON file's timeline
SEND_TIMEOUT = 120.0  # seconds a send may wait for credits before the run is declared stuck
RECEIVE_TIMEOUT = 120.0
# "bounded": the RSS growth during the run stays within twice the queue's bytes plus this
# allowance (the allocator, MPI, Python objects), and does not keep growing in the second half.
ALLOWANCE = 32 * MiB
LATE_ALLOWANCE = 8 * MiB
END = "end of stream"
SPIN_TAIL = 100e-6  # seconds of each message's processing spent spinning, not sleeping

Array = np.ndarray[Any, np.dtype[np.uint8]]


# -- command line ------------------------------------------------------------------------------


def message_size(text: str) -> int:
    """A message's size (``64Ki``): at least 16 bytes, for its two indices."""
    return parse_size(text, least=16)


def positive_int(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A producer streams numbered arrays to a consumer SLOWDOWN times slower; "
        "measures both ranks' memory, the queue's peak and the producer's credit waits, and "
        "checks that nothing is lost. Run with exactly 2 ranks: "
        "mpiexec -n 2 python benchmarks/backpressure.py",
    )
    parser.add_argument(
        "--policy",
        choices=POLICIES,
        default="block",
        help="the consumer's queue: block (the default: credit-based flow control), "
        "drop_oldest (same capacity, drops the oldest queued message), or none (no capacity)",
    )
    parser.add_argument(
        "--messages",
        type=positive_int,
        default=None,
        help=f"messages in the measured run (default {DEFAULT_MESSAGES:,}; "
        f"{UNBOUNDED_MESSAGES:,} with none or drop_oldest; --quick {QUICK_MESSAGES:,})",
    )
    parser.add_argument(
        "--capacity", type=positive_int, default=64, help="the queue's capacity (default 64)"
    )
    parser.add_argument(
        "--size", type=message_size, default=64 * KiB, help="bytes per message (default 64Ki)"
    )
    parser.add_argument(
        "--slowdown",
        type=positive_float,
        default=10.0,
        help="the consumer processes each message for this many times the producer's "
        "per-message cost (default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=positive_int,
        default=None,
        help=f"messages of the calibration run to a consumer that does not process "
        f"(default {DEFAULT_WARMUP:,}; --quick {QUICK_WARMUP:,})",
    )
    parser.add_argument(
        "--send",
        choices=("isend", "send"),
        default="isend",
        help="isend (the default): the producer never waits for the network, only for credits; "
        "send: it also waits until each array may be reused (MPI then throttles it too)",
    )
    parser.add_argument(
        "--no-acks",
        dest="acks",
        action="store_false",
        help="Geode(acks=False): no outbox of unacknowledged messages (credits still work)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke test: {QUICK_MESSAGES:,} messages after a {QUICK_WARMUP}-message warm-up",
    )
    launch.json_option(parser, "backpressure")
    args = parser.parse_args(argv)
    if args.messages is None:
        if args.quick:
            args.messages = QUICK_MESSAGES
        elif args.policy == "block":
            args.messages = DEFAULT_MESSAGES
        else:
            args.messages = UNBOUNDED_MESSAGES
    if args.warmup is None:
        args.warmup = QUICK_WARMUP if args.quick else DEFAULT_WARMUP
    return args


def unsafe(args: argparse.Namespace) -> str | None:
    """Why this run could use too much memory on a shared machine, or None."""
    total = args.messages * args.size
    if args.policy != "block" and total > UNBOUNDED_LIMIT:
        return (
            f"--policy {args.policy} may hold every message at once: {args.messages:,} x "
            f"{size_label(args.size)} = {total / MiB:,.0f} MiB is over the "
            f"{UNBOUNDED_LIMIT // MiB:,} MiB this benchmark allows; lower --messages or --size"
        )
    return None


# -- memory ------------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")


def current_rss() -> int:
    """This process's resident set size now, in bytes (Linux: /proc/self/statm)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


def peak_rss() -> int:
    """This process's peak resident set size so far, in bytes (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KiB


class Memory:
    """RSS samples of one rank over the measured run: the peak, and the peak of each half."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.baseline = current_rss()
        self.peak = self.baseline
        self.first_half_peak = self.baseline
        self.second_half_peak = 0
        self.timeline: list[dict[str, Any]] = []
        self._timeline_every = max(1, total // TIMELINE_POINTS)
        self._bucket = -1
        self._started = time.perf_counter()

    def sample(self, index: int, **extra: Any) -> None:
        """Record the RSS after message ``index``; stop the job if it passes the guard."""
        rss = current_rss()
        if rss > RSS_GUARD:
            raise MemoryError(
                f"RSS reached {rss / MiB:,.0f} MiB after {index + 1:,} messages, over the "
                f"{RSS_GUARD // MiB:,} MiB guard: stopping the job"
            )
        self.peak = max(self.peak, rss)
        if index < self.total // 2:
            self.first_half_peak = max(self.first_half_peak, rss)
        else:
            self.second_half_peak = max(self.second_half_peak, rss)
        bucket = index // self._timeline_every
        if bucket != self._bucket or index == self.total - 1:
            self._bucket = bucket
            point = {"message": index, "seconds": time.perf_counter() - self._started}
            point["rss_mib"] = rss / MiB
            point.update(extra)
            self.timeline.append(point)

    def report(self) -> dict[str, Any]:
        late = max(0, self.second_half_peak - self.first_half_peak) if self.second_half_peak else 0
        return {
            "baseline_mib": self.baseline / MiB,
            "peak_sampled_mib": self.peak / MiB,
            "growth_mib": (self.peak - self.baseline) / MiB,
            "late_growth_mib": late / MiB,
            "end_mib": current_rss() / MiB,
            "ru_maxrss_mib": peak_rss() / MiB,
            "timeline": self.timeline,
        }


# -- messages ----------------------------------------------------------------------------------


def make(index: int, size: int) -> Array:
    """Message ``index``: its index in the first and the last 8 bytes, a fill byte between.

    A fresh, fully written array per message, as a producer computing its data makes one (a
    reused buffer, or one left unwritten, would hide memory that is really held).
    """
    data = np.full(size, index % 251, np.uint8)
    data[:8].view(np.int64)[0] = index
    data[-8:].view(np.int64)[0] = index
    return data


def index_of(data: Any, size: int) -> int:
    """The index a received array carries; ValueError if it is not one of ours, intact."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (size,):
        raise ValueError(f"not a {size}-byte uint8 array: {type(data).__name__}")
    index = int(data[:8].view(np.int64)[0])
    if int(data[-8:].view(np.int64)[0]) != index or (size > 16 and data[8] != index % 251):
        raise ValueError(f"array {index} arrived damaged")
    return index


def queue_config(policy: str, capacity: int) -> QueueConfig | None:
    if policy == "none":
        return None
    return QueueConfig(capacity=capacity, policy=policy)


# -- the two ranks -----------------------------------------------------------------------------


def produce(
    geode: Geode, count: int, size: int, blocking: bool, memory: Memory | None
) -> dict[str, Any]:
    """Rank 0: send ``count`` numbered arrays, then the end marker."""
    dest = geode.nodes[1]
    send = geode.send if blocking else geode.isend
    started = time.perf_counter()
    most_unacked = 0
    for index in range(count):
        send(make(index, size), dest=dest, timeout=SEND_TIMEOUT)
        if memory is not None and index % RSS_EVERY == RSS_EVERY - 1:
            stats = geode.stats()
            most_unacked = max(most_unacked, stats.unacked)
            memory.sample(index, credit_waits=stats.credit_waits, unacked=stats.unacked)
    posted = time.perf_counter() - started
    geode.send(END, dest=dest, timeout=SEND_TIMEOUT)  # waits until the transport took it
    handed_over = time.perf_counter() - started
    return {"post_seconds": posted, "send_seconds": handed_over, "most_unacked": most_unacked}


class Checker:
    """What the consumer saw: every index once, in order (or, dropping, increasing)."""

    def __init__(self, count: int, may_drop: bool) -> None:
        self.count = count
        self.may_drop = may_drop
        self.received = 0
        self.last = -1
        self.gaps = 0  # indices skipped (dropped) between two received ones
        self.errors: list[str] = []

    def see(self, message: Message, size: int) -> None:
        try:
            index = index_of(message.data, size)
        except ValueError as exc:
            self.error(f"message {self.received}: {exc}")
            return
        self.received += 1
        if message.seq != index:
            self.error(f"array {index} came with seq {message.seq}")
        if index <= self.last:
            self.error(f"array {index} after {self.last}: duplicated or out of order")
        elif index != self.last + 1:
            if not self.may_drop:
                self.error(f"arrays {self.last + 1}..{index - 1} lost (got {index})")
            self.gaps += index - self.last - 1
        self.last = max(self.last, index)

    def error(self, text: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(text)

    def finish(self, dropped: int) -> dict[str, Any]:
        missing_tail = self.count - 1 - self.last
        if missing_tail and not self.may_drop:
            self.error(f"arrays {self.last + 1}..{self.count - 1} never arrived")
        if self.may_drop:
            if self.received + dropped != self.count:
                self.error(
                    f"received {self.received:,} + dropped {dropped:,} != sent {self.count:,}"
                )
            if missing_tail:
                self.error(f"the newest array ({self.count - 1}) was not kept (last {self.last})")
            if self.gaps != dropped:
                self.error(f"{self.gaps:,} arrays skipped but {dropped:,} counted as dropped")
        return {
            "received": self.received,
            "last_index": self.last,
            "skipped": self.gaps,
            "errors": self.errors,
            "ok": not self.errors,
        }


def process(seconds: float) -> None:
    """Take ``seconds`` to "process" a message: sleep (so that a shared machine keeps its CPU for
    the producer and for others), then spin out the last 100 us that a sleep cannot hit."""
    until = time.perf_counter() + seconds
    if seconds > SPIN_TAIL:
        time.sleep(seconds - SPIN_TAIL)
    while time.perf_counter() < until:
        pass


def consume(
    geode: Geode,
    count: int,
    size: int,
    work: float,
    may_drop: bool,
    memory: Memory | None,
) -> dict[str, Any]:
    """Rank 1: receive until the end marker, spending ``work`` seconds on each array."""
    checker = Checker(count, may_drop)
    started = time.perf_counter()
    most_queued = 0
    processing = 0.0
    while True:
        message = geode.receive(timeout=RECEIVE_TIMEOUT)
        if isinstance(message.data, str) and message.data == END:
            break
        checker.see(message, size)
        del message  # let go of the array before the next receive, as a processed one would
        if work:
            began = time.perf_counter()
            process(work)
            processing += time.perf_counter() - began
        seen = checker.received
        if memory is not None and seen % RSS_EVERY == 0:
            depth = geode.stats().queue_depth
            most_queued = max(most_queued, depth)
            memory.sample(seen - 1, queue_depth=depth)
    seconds = time.perf_counter() - started
    result = checker.finish(geode.stats().dropped)
    result.update(seconds=seconds, processing_seconds=processing, most_queued_sampled=most_queued)
    return result


# -- running -----------------------------------------------------------------------------------


def calibrate(args: argparse.Namespace) -> dict[str, Any]:
    """Time the producer against a consumer that only receives; both ranks get its cost per
    message, not counting its waits for credits.

    The warm-up uses a ``block`` queue of the same capacity whatever ``--policy`` says, so that
    it is bounded too; its Geode is closed before the measured run starts.
    """
    config = QueueConfig(capacity=args.capacity, policy="block")
    with Geode(queue=config, acks=args.acks) as geode:
        if geode.rank == 0:
            started = time.perf_counter()
            produce(geode, args.warmup, args.size, args.send == "send", None)
            seconds = time.perf_counter() - started
            stats = geode.stats()
            # The producer's own cost: its time less what it spent waiting for credits (even a
            # consumer that only receives can be the slower of the two).
            own = max(seconds - stats.credit_wait_seconds, 0.0)
            figures = {
                "messages": args.warmup,
                "seconds": seconds,
                "per_message_us": own / args.warmup * 1e6,
                "pipeline_per_message_us": seconds / args.warmup * 1e6,
                "credit_waits": stats.credit_waits,
                "credit_wait_seconds": stats.credit_wait_seconds,
            }
            geode.send(figures, dest=geode.nodes[1], timeout=SEND_TIMEOUT)
        else:
            result = consume(geode, args.warmup, args.size, 0.0, False, None)
            if result["errors"]:
                raise RuntimeError(f"the warm-up lost or damaged arrays: {result['errors']}")
            figures = dict(geode.receive(timeout=RECEIVE_TIMEOUT).data)
    return figures


def measure(args: argparse.Namespace, work: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The measured run; rank 0 gets (producer, consumer) results, rank 1 its own twice."""
    config = queue_config(args.policy, args.capacity)
    with Geode(queue=config, acks=args.acks) as geode:
        memory = Memory(args.messages)
        clock = time.perf_counter()
        if geode.rank == 0:
            mine = produce(geode, args.messages, args.size, args.send == "send", memory)
            theirs = dict(geode.receive(timeout=RECEIVE_TIMEOUT).data)
            mine["seconds"] = time.perf_counter() - clock
        else:
            may_drop = args.policy == "drop_oldest"
            mine = consume(geode, args.messages, args.size, work, may_drop, memory)
        stats = geode.stats()
        mine["stats"] = stats.as_dict()
        mine["memory"] = memory.report()
        if geode.rank == 1:
            geode.send(mine, dest=geode.nodes[0], timeout=SEND_TIMEOUT)
            theirs = mine
    mine["memory"]["after_close_mib"] = current_rss() / MiB
    return mine, theirs


# -- the report --------------------------------------------------------------------------------


def verdict(memory: dict[str, Any], bound: int, sent: int) -> dict[str, Any]:
    """Bounded: grew by at most twice the queue's bytes plus an allowance, and not late on."""
    limit = 2 * bound + ALLOWANCE
    growth = memory["growth_mib"] * MiB
    late = memory["late_growth_mib"] * MiB
    bounded = growth <= limit and late <= LATE_ALLOWANCE
    return {
        "bounded": bounded,
        "growth_mib": memory["growth_mib"],
        "late_growth_mib": memory["late_growth_mib"],
        "growth_limit_mib": limit / MiB,
        "late_growth_limit_mib": LATE_ALLOWANCE / MiB,
        "growth_share_of_sent": growth / sent if sent else 0.0,
    }


def table(rows: list[tuple[str, str, str]]) -> str:
    width = [max(len(row[k]) for row in rows) for k in range(3)]
    lines = []
    for n, row in enumerate(rows):
        lines.append(f"{row[0]:<{width[0]}}  {row[1]:>{width[1]}}  {row[2]:>{width[2]}}")
        if n == 0:
            lines.append("  ".join("-" * w for w in width))
    return "\n".join(lines)


def mib(value: float) -> str:
    return f"{value:,.1f} MiB"


def report_lines(
    args: argparse.Namespace,
    calibration: dict[str, Any],
    producer: dict[str, Any],
    consumer: dict[str, Any],
    work: float,
    verdicts: dict[str, dict[str, Any]],
) -> list[str]:
    pm, cm = producer["memory"], consumer["memory"]
    ps, cs = producer["stats"], consumer["stats"]
    count = args.messages
    sent_bytes = count * args.size
    rows = [
        ("", "producer (rank 0)", "consumer (rank 1)"),
        ("RSS before the run", mib(pm["baseline_mib"]), mib(cm["baseline_mib"])),
        (
            "RSS peak during the run (sampled)",
            mib(pm["peak_sampled_mib"]),
            mib(cm["peak_sampled_mib"]),
        ),
        ("RSS growth during the run", mib(pm["growth_mib"]), mib(cm["growth_mib"])),
        ("  of which in the second half", mib(pm["late_growth_mib"]), mib(cm["late_growth_mib"])),
        ("peak RSS, ru_maxrss (whole process)", mib(pm["ru_maxrss_mib"]), mib(cm["ru_maxrss_mib"])),
        ("messages sent / received", f"{ps['sent'] - 1:,}", f"{consumer['received']:,}"),
        ("queue peak (stats().queue_peak)", "", f"{cs['queue_peak']:,}"),
        ("dropped (stats().dropped)", "", f"{cs['dropped']:,}"),
        ("credit waits", f"{ps['credit_waits']:,}", ""),
        ("time waiting for credits", f"{ps['credit_wait_seconds']:.1f} s", ""),
        ("most unacked (outbox, sampled)", f"{producer['most_unacked']:,}", ""),
        ("ack records sent", "", f"{cs['acks_sent']:,}"),
        (
            "time to send / to receive all",
            f"{producer['send_seconds']:.1f} s",
            f"{consumer['seconds']:.1f} s",
        ),
        (
            "per message",
            f"{producer['send_seconds'] / count * 1e6:,.0f} us",
            f"{consumer['seconds'] / max(1, consumer['received']) * 1e6:,.0f} us",
        ),
        (
            f"  of which processing (target {work * 1e6:,.0f} us)",
            "",
            f"{consumer['processing_seconds'] / max(1, consumer['received']) * 1e6:,.0f} us",
        ),
    ]
    window = credits(args)
    policy = "no capacity" if args.policy == "none" else f"{args.policy}, capacity {args.capacity}"
    if window is not None:
        policy += f" ({window} credits per sending node)"
    lines = [
        f"geode_mpi {__version__} backpressure: {count:,} messages of {size_label(args.size)} "
        f"({sent_bytes / MiB:,.0f} MiB), policy {policy}, producer {args.send}(), "
        f"acks {'on' if args.acks else 'off'}" + (" (quick)" if args.quick else ""),
        f"calibration: {calibration['messages']:,} messages to a consumer that only receives: "
        f"{calibration['pipeline_per_message_us']:.1f} us per message, of which the producer's "
        f"own cost {calibration['per_message_us']:.1f} us (the rest: waiting for credits)",
        f"the consumer now processes each message for {args.slowdown:g} x "
        f"{calibration['per_message_us']:.1f} us = {work * 1e6:.0f} us",
        "",
        table(rows),
        "",
    ]
    check = consumer
    if check["ok"]:
        if args.policy == "block" or args.policy == "none":
            lines.append(
                f"delivery: every index 0..{count - 1:,} received exactly once, in order: PASS"
            )
        else:
            lines.append(
                f"delivery: {check['received']:,} received + {cs['dropped']:,} dropped = "
                f"{count:,} sent; received in increasing order, newest kept: PASS"
            )
    else:
        lines.append("delivery: FAIL: " + "; ".join(check["errors"]))
    queue_bytes = args.capacity * args.size
    for side, memory in (("consumer", cm), ("producer", pm)):
        v = verdicts[side]
        if args.policy == "none":
            against = "no capacity"
        else:
            against = (
                f"capacity {args.capacity} x {size_label(args.size)} = "
                f"{queue_bytes / MiB:,.1f} MiB of queue"
            )
        if v["bounded"]:
            state = "bounded"
        else:
            state = (
                f"NOT bounded ({v['growth_share_of_sent']:.0%} of the "
                f"{sent_bytes / MiB:,.0f} MiB sent)"
            )
        lines.append(
            f"{side}: peak RSS {mib(memory['ru_maxrss_mib'])}, grew "
            f"{mib(memory['growth_mib'])} during the run ({mib(memory['late_growth_mib'])} in its "
            f"second half) with {against}: {state}"
        )
    lines.extend(notes(args, producer, consumer, verdicts, window))
    return lines


def notes(
    args: argparse.Namespace,
    producer: dict[str, Any],
    consumer: dict[str, Any],
    verdicts: dict[str, dict[str, Any]],
    window: int | None,
) -> list[str]:
    """Where the messages not yet processed were, when the numbers say it."""
    peak = consumer["stats"]["queue_peak"]
    out = []
    if window is not None and peak < window:
        out.append(
            f"note: the consumer's queue peaked at {peak} of the {window} messages the credits "
            "allow; the rest of each window was in flight: posted by the producer, and moved by "
            "MPI only as the consumer polls, which it does when it calls receive()"
        )
    if verdicts["consumer"]["bounded"] and not verdicts["producer"]["bounded"]:
        out.append(
            f"note: without credits the backlog is held by the producer: its {args.send}() "
            "calls return at once and the arrays wait in MPI sends (and in the outbox, with "
            "acks) until the consumer's receive() moves them"
        )
    if args.policy == "drop_oldest" and consumer["stats"]["dropped"] == 0:
        out.append(
            "note: nothing was dropped: messages reached the consumer's queue no faster than it "
            "took them, so it never filled; drop_oldest bounds the queue, not the producer's "
            "backlog"
        )
    return out


def evaluate_targets(
    args: argparse.Namespace, consumer: dict[str, Any], verdicts: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """What the exit status says, one target per check: delivery, and under ``block`` bounded
    memory on each side (n/a under the other policies, where growth is the expected result)."""
    checks = [
        {
            "target": "(1) every array delivered intact, once and in order (with drop_oldest: "
            "received + dropped = sent)",
            "value": f"{consumer['received']:,} of {args.messages:,} received"
            + ("" if consumer["ok"] else ": " + "; ".join(consumer["errors"][:3])),
            "result": "PASS" if consumer["ok"] else "FAIL",
        }
    ]
    for number, side in ((2, "consumer"), (3, "producer")):
        v = verdicts[side]
        growth, limit = v["growth_mib"], v["growth_limit_mib"]
        checks.append(
            {
                "target": f"({number}) the {side}'s memory is bounded with policy block (grows by "
                "at most 2 x the queue's bytes + 32 MiB, at most 8 MiB in the second half)",
                "value": f"grew {growth:,.1f} MiB (limit {limit:,.0f} MiB), "
                f"{v['late_growth_mib']:,.1f} MiB in the second half",
                "result": "n/a" if args.policy != "block" else "PASS" if v["bounded"] else "FAIL",
            }
        )
    return checks


def credits(args: argparse.Namespace) -> int | None:
    """Credits per sending node at the consumer (None: no flow control)."""
    config = queue_config(args.policy, args.capacity)
    return None if config is None else config.credits(2)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    MPI = launch.start_mpi("backpressure.py", exactly=True)
    if MPI is None:
        return 2
    rank = MPI.COMM_WORLD.Get_rank()
    reason = unsafe(args)
    if reason is not None:
        if rank == 0:
            print(f"backpressure.py: {reason}", file=sys.stderr)
        return 2
    began = reporting.started()
    calibration = calibrate(args)
    work = args.slowdown * calibration["per_message_us"] * 1e-6
    mine, theirs = measure(args, work)
    if rank != 0:
        return 0
    producer, consumer = mine, theirs
    bound = args.capacity * args.size
    sent = args.messages * args.size
    verdicts = {
        "producer": verdict(producer["memory"], bound, sent),
        "consumer": verdict(consumer["memory"], bound, sent),
    }
    print("\n".join(report_lines(args, calibration, producer, consumer, work, verdicts)))
    passed = consumer["ok"] and (
        args.policy != "block" or all(v["bounded"] for v in verdicts.values())
    )
    report = {
        "benchmark": "backpressure",
        "started": began,
        "settings": {
            "policy": args.policy,
            "messages": args.messages,
            "capacity": None if args.policy == "none" else args.capacity,
            "credits_per_sender": credits(args),
            "size": args.size,
            "slowdown": args.slowdown,
            "warmup": args.warmup,
            "send": args.send,
            "acks": args.acks,
            "quick": args.quick,
        },
        "environment": environment(MPI),
        "calibration": calibration,
        "consumer_work_us": work * 1e6,
        "producer": producer,
        "consumer": consumer,
        "verdicts": verdicts,
        "targets": evaluate_targets(args, consumer, verdicts),
        "passed": passed,
    }
    path = write_json(args.json, report, "backpressure")
    print(f"{'PASS' if passed else 'FAIL'}; all numbers in {path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
