"""Fuzz the arrival path with hostile bytes: every frame must end cleanly, be counted and
dropped, or raise DecodeError (docs/wire-format.md, "Malformed input").

The bytes go where a real arrival goes, not to a reimplementation: an `MPITransport` over
``MPI.COMM_SELF`` (a one-rank MPI world, started as a singleton: no mpiexec) receives them with
``Isend`` to itself and its own ``progress()`` (envelopes, meta-only messages, batches, frames,
topic streams' end markers), the
Engine of a `Geode` over that transport as the sink (control records, dead letters), and
``try_receive`` on each node, which decodes what was queued.

Each frame is a valid one (a plain text, dict, small or large array, a subclass with headers and
attributes, a pickle with arrays, an ack, ask or wave record), sent in one of those ways and then
mutated (bit flips, interesting numbers written into the header fields, cuts, splices), or plain
random bytes. Run it as a script::

    python tests/fuzz_arrival.py --frames 1000000 --seed 1

It prints one line per outcome and exits 1 if any frame raised anything but a GeodeError, took
longer than ``--slow`` seconds, or the process grew beyond ``--max-rss`` MiB.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import gc
import os
import random
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mpi4py import MPI

from geode_mpi import DecodeError, GeodeError, Message, codec
from geode_mpi.core.geode import Geode
from geode_mpi.delivery import control
from geode_mpi.transport import envelope as env
from geode_mpi.transport import fanout, relayplan
from geode_mpi.transport import mpi as mpi_transport

INTERESTING = (
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    15,
    16,
    255,
    256,
    4095,
    4096,
    4097,
    2**15,
    2**16 - 1,
    2**16,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**40,
    2**55,
    2**63 - 1,
    2**64 - 1,
)
EPISODE = 2000  # frames per world: then a fresh Geode, so that held-back garbage does not pile up


class FuzzMessage(Message):
    """A subclass with an attribute: its frames carry a class name and a rest section."""


def corpus_messages() -> list[Message]:
    """Messages whose encodings cover every codec path."""
    with_rest = FuzzMessage({"k": np.arange(6, dtype=np.int32)}, headers={"h": 1})
    with_rest.extra = "attribute"
    structured = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")])
    return [
        Message("hello"),
        Message({"a": 1, "b": [1, 2.5, "x"]}),
        Message(np.arange(10.0)),
        Message(np.arange(1000.0)),  # one frame, inline in an envelope
        Message(np.arange(5000.0)),  # one frame, out of band
        Message({"x": np.arange(300.0), "y": np.ones((3, 4), order="F")}),
        Message(structured),
        FuzzMessage("sub"),
        with_rest,
        Message(None, headers={"trace": "t"}),
    ]


class World:
    """A one-rank MPI world with two nodes, and what was sent in it."""

    def __init__(self) -> None:
        self.transport = mpi_transport.MPITransport(MPI.COMM_SELF)
        self.geode = Geode(["node0", "node1"], transport=self.transport)
        for _ in range(3):  # traffic both ways, so that acks mean something
            self.geode.send("warm-up", "node0", "node1")
            self.geode.send("warm-up", "node1", "node0")
        for node in ("node0", "node1"):
            while self.geode.try_receive(node) is not None:
                pass
        self.pending: list[tuple[Any, Any]] = []
        self.orphans: list[tuple[Any, Any]] = []
        self.sent: list[tuple[int, bytes]] = []  # this frame's sends (tag, bytes): its evidence
        self.next_id = 0

    def stamp(self) -> codec.Stamp:
        pair = self.geode._runtime.engine.pairs_in.get((1, 0))
        seq = pair.expected if pair is not None else 0
        self.next_id += 1
        return codec.make_stamp(self.next_id, seq, time.time(), 1, 0)

    def isend(self, data: bytes, tag: int) -> None:
        buffer = bytearray(data)
        self.sent.append((tag, bytes(data)))
        self.pending.append((buffer, self.transport.comm.Isend(buffer, 0, tag)))

    def settle(self) -> None:
        """Let the transport take in what was sent, and every node receive what it queued."""
        for _ in range(4):
            if not self.transport.progress():
                break
        # A frame whose envelope was garbage stays matched and never received: its send
        # never completes (kept, with its buffer, until this world is dropped).
        for buffer, request in self.pending:
            if not request.Test():
                self.orphans.append((buffer, request))
        self.pending.clear()

    def retire(self) -> None:
        """Receive the frames garbage envelopes left matched, so that every send completes."""
        self.settle()
        for waiting in self.transport._frames_in:
            while waiting:
                held = waiting.popleft()
                if held.request is None:
                    held.message.Recv(bytearray(held.count))
                else:  # its receive was posted when its envelope did not follow at once
                    held.request.Wait()
        for _, request in self.orphans:
            request.Wait()
        self.orphans.clear()


def batch(entries: list[tuple[int, bytes]]) -> bytes:
    """A batch as `MPITransport` builds one: each entry framed, padded to 16 bytes."""
    parts = []
    for kind, payload in entries:
        parts.append(mpi_transport._BATCH_ENTRY.pack(len(payload), kind))
        parts.append(payload)
        parts.append(bytes(-len(payload) % 16))
    return b"".join(parts)


class Mutator:
    """Seeded mutations of a byte string, biased towards headers and length fields."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def __call__(self, data: bytes) -> bytes:
        rng = self.rng
        out = bytearray(data)
        for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
            self._one(out, rng)
        return bytes(out)

    def _one(self, out: bytearray, rng: random.Random) -> None:
        choice = rng.randrange(7)
        if not out:
            out.extend(rng.randbytes(rng.randrange(1, 64)))
            return
        # Headers are at the start: favour the first 96 bytes.
        limit = len(out) if rng.random() < 0.3 else min(len(out), 96)
        at = rng.randrange(limit)
        if choice == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif choice == 1:
            out[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif choice in (2, 3):
            size = rng.choice((1, 2, 4, 8))
            value = rng.choice(INTERESTING) & ((1 << 8 * size) - 1)
            aligned = at - at % size
            out[aligned : aligned + size] = value.to_bytes(size, "little")[: len(out) - aligned]
        elif choice == 4:
            del out[rng.randrange(len(out) + 1) :]  # cut
        elif choice == 5:
            out[at:at] = rng.randbytes(rng.randrange(1, 32))  # insert
        else:
            start = rng.randrange(len(out))
            piece = out[start : start + rng.randrange(1, 64)]
            out[at : at + len(piece)] = piece  # splice a piece of itself elsewhere


class Fuzzer:
    """Sends valid, mutated and random frames through a World; tallies what happened."""

    def __init__(self, seed: int, slow: float) -> None:
        self.rng = random.Random(seed)
        self.mutate = Mutator(self.rng)
        self.messages = corpus_messages()
        self.slow = slow
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}
        self.slowest = 0.0
        self.world = World()
        self.frames = 0
        self.dropped = 0  # frames counted and dropped at arrival
        self.collecting = 0.0  # seconds the garbage collector took in this frame
        gc.callbacks.append(self._collected)

    def _collected(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.collecting -= time.perf_counter()
        else:
            self.collecting += time.perf_counter()

    # -- valid frames ----------------------------------------------------------------------

    def message_parts(self) -> tuple[bytes, list[np.ndarray[Any, Any]]]:
        rng = self.rng
        if rng.random() < 0.15:
            return self.control_meta(), []
        message = rng.choice(self.messages)
        flags = rng.choice((0, codec.FLAG_TRACKED, codec.FLAG_TRACKED | codec.FLAG_WAITED))
        meta, frames = codec.encode(message, self.world.stamp(), flags)
        return meta, [np.ascontiguousarray(f).view(np.uint8).reshape(-1) for f in frames]

    def control_meta(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(4)
        if kind == 0:
            payload = control.encode_ack(rng.randrange(4), [(0, rng.randrange(1, 4))])
            return codec.encode_control(1, 0, payload)  # node1 acks node0's messages
        if kind == 1:
            return codec.encode_control(1, 0, control.encode_ask())
        wave = rng.choice((control.WAVE_ASK, control.WAVE_ANSWER, control.WAVE_QUIET))
        return codec.encode_control(0, 0, control.encode_wave(wave, 1, 2, 3))

    # -- one frame -------------------------------------------------------------------------

    def one(self) -> None:
        """Send one frame; after every `EPISODE` frames, a fresh world."""
        self.send_one()
        if self.frames % EPISODE == 0:
            self.next_episode()

    def next_episode(self) -> None:
        """Close this episode's world, free it, and start a fresh one.

        Closed, as geode_mpi holds every open Geode until it is closed: never closed, 10^5
        frames kept 50 worlds (274 MiB), and each full collection walked them all, in
        whichever frame the collector's threshold fell: up to 0.6 s at load 2-3, 2.1 s at
        load 8, the 7 s "slow frame" seen at load 5-10. Freed here, between frames: a closed
        world is a cycle of thousands of objects (its dead letters' errors' tracebacks hold
        the frames that held it), else left to the collector a dozen at once (0.4 s, load 6)."""
        self.world.retire()
        try:
            self.world.geode.close(timeout=10.0)  # (it takes milliseconds)
        except GeodeError as exc:  # (a close that does not finish is a finding too)
            self.fail("episode end", "close", exc)
        self.world = World()
        gc.collect()

    def send_one(self) -> None:
        rng = self.rng
        world = self.world
        way = rng.randrange(7)
        mutate = rng.random() < 0.93
        randomise = not mutate and rng.random() < 0.7
        meta, frames = self.message_parts()
        label = ("meta", "envelope", "batch", "end marker", "frames", "relay head", "relayed")[way]
        if way == 0:  # a message without frames, sent as its meta alone
            data = meta if not frames else env.build_envelope(meta, frames, 1 << 30)[0]
            tag = mpi_transport.TAG_META if not frames else mpi_transport.TAG_ENVELOPE
            world.isend(self.shape(data, mutate, randomise), tag)
        elif way in (1, 4):  # an envelope, its big frames out of band after it
            inline_max = env.INLINE_MAX if way == 1 else 0
            envelope, oob = env.build_envelope(meta, frames, inline_max)
            world.isend(self.shape(envelope, mutate, randomise), mpi_transport.TAG_ENVELOPE)
            for frame in oob:
                raw = bytes(frame)
                if mutate and rng.random() < 0.2:
                    raw = self.mutate(raw)
                world.isend(raw, mpi_transport.TAG_FRAME)
        elif way == 2:  # a batch of frame-less entries
            entries = []
            for _ in range(rng.randrange(1, 6)):
                part, part_frames = self.message_parts()
                if part_frames or rng.random() < 0.3:  # an envelope, its frames inline
                    entries.append((0, env.build_envelope(part, part_frames, 1 << 30)[0]))
                else:
                    entries.append((1, part))  # a meta alone
            world.isend(self.shape(batch(entries), mutate, randomise), mpi_transport.TAG_BATCH)
        elif way == 3:  # a topic stream's end marker
            world.isend(
                self.shape(fanout.end_marker(99), mutate, randomise), mpi_transport.TAG_STREAM
            )
        elif way == 5:  # a relay's head (its chunks follow on the tag it names), or a chunk
            self.relay_head(mutate, randomise)
        else:  # an envelope whose large frames come down a relay tree
            envelope, _ = env.build_envelope(meta, frames, 0)
            data = relayplan.relayed_envelope(rng.randrange(4), envelope)
            world.isend(self.shape(data, mutate, randomise), relayplan.TAG_RELAYED)
        self.run(label if (mutate or randomise) else label + " (valid)")

    def relay_head(self, mutate: bool, randomise: bool) -> None:
        # As a parent sends one in a job of a few ranks (this world has one: the ranks a head
        # names are not all here), then a chunk or two on the tag it names.
        rng = self.rng
        sizes = [
            (
                rng.choice((1, 4096, relayplan.CHUNK, 3 * relayplan.CHUNK + 5)),
                16 * rng.randrange(256),
            )
        ]
        tag = relayplan.CHUNK_TAG + rng.randrange(4)
        members = rng.sample(range(4), rng.randrange(1, 4))
        root = rng.choice([r for r in range(5) if r not in members])
        head = relayplan.pack_head(root, rng.randrange(8), relayplan.CHUNK, tag, sizes, members)
        self.world.isend(self.shape(head, mutate, randomise), relayplan.TAG_RELAY_HEAD)
        for _ in range(rng.randrange(3)):
            chunk = rng.randbytes(rng.choice((1, 64, 4096)))
            self.world.isend(chunk, rng.choice((tag, relayplan.CHUNK_TAG + rng.randrange(8))))

    def shape(self, data: bytes, mutate: bool, randomise: bool) -> bytes:
        if mutate:
            return self.mutate(data)
        if randomise:
            return self.rng.randbytes(self.rng.randrange(0, 200))
        return data

    def run(self, label: str) -> None:
        world = self.world
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        dropped_before = dropped_count(world)
        self.collecting = 0.0
        started = time.perf_counter()
        outcome = "clean"
        try:
            world.settle()
        except GeodeError as exc:
            outcome = f"{type(exc).__name__} at arrival"
        except Exception as exc:  # what the issue is about
            self.fail(label, "arrival", exc)
            outcome = "FAILED"
        for node in ("node0", "node1"):
            for _ in range(64):
                try:
                    if world.geode.try_receive(node) is None:
                        break
                except DecodeError:
                    outcome = "DecodeError at receive" if outcome == "clean" else outcome
                except GeodeError as exc:
                    outcome = f"{type(exc).__name__} at receive"
                except Exception as exc:
                    self.fail(label, "receive", exc)
                    outcome = "FAILED"
        elapsed = time.perf_counter() - started
        self.dropped += dropped_count(world) - dropped_before
        self.slowest = max(self.slowest, elapsed)
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        if elapsed > self.slow or grown > 256:
            key = (
                f"slow ({elapsed:.1f} s, {self.collecting:.1f} s of it collecting garbage, "
                f"peak RSS +{grown:.0f} MiB): {label}"
            )
            if elapsed > self.slow:
                self.failures[key] += 1
            # The bytes that did it, to replay (first 4 KiB of each send).
            sends = [(tag, data[:4096].hex()) for tag, data in world.sent]
            self.examples[f"{key}, frame {self.frames}"] = repr({"sends": sends})
        world.sent.clear()
        self.outcomes[outcome] += 1
        self.frames += 1

    def fail(self, label: str, where: str, exc: BaseException) -> None:
        key = f"{type(exc).__name__} at {where} ({label})"
        self.failures[key] += 1
        if key not in self.examples:
            self.examples[key] = "".join(traceback.format_exception(exc))[-1500:]


def dropped_count(world: World) -> int:
    return sum(world.geode._runtime.engine.malformed.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="frames to send")
    parser.add_argument("--seed", type=int, default=1, help="the random seed")
    parser.add_argument("--slow", type=float, default=5.0, help="seconds a frame may take")
    parser.add_argument("--max-rss", type=float, default=1024.0, help="MiB the process may use")
    args = parser.parse_args(argv)
    faulthandler.enable()  # a crash in numpy or MPI prints where it happened
    faulthandler.dump_traceback_later(max(60.0, args.frames * 0.01), exit=True)
    import logging

    logging.getLogger("geode_mpi").setLevel(logging.ERROR)  # one warning per dropped frame
    gc.freeze()  # (what is imported stays: each episode's collection walks the worlds only)
    fuzzer = Fuzzer(args.seed, args.slow)
    started = time.perf_counter()
    for _ in range(args.frames):
        fuzzer.one()
    seconds = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{fuzzer.frames} frames in {seconds:.1f} s (seed {args.seed}), slowest frame "
        f"{fuzzer.slowest * 1000:.1f} ms, peak RSS {rss:.0f} MiB"
    )
    print(f"  counted and dropped at arrival: {fuzzer.dropped}")
    for outcome, count in sorted(fuzzer.outcomes.items()):
        print(f"  {outcome}: {count}")
    if rss > args.max_rss:
        fuzzer.failures[f"peak RSS {rss:.0f} MiB > {args.max_rss:.0f} MiB"] += 1
    gc.collect()
    kept = sum(type(thing) is World for thing in gc.get_objects())
    print(f"  worlds alive at the end: {kept}")
    if kept > 1:  # the current one: every earlier one is closed, and freed
        fuzzer.failures[f"{kept - 1} worlds kept after their episodes"] += 1
    failed = sum(fuzzer.failures.values())
    print(f"unexpected: {failed}")
    for key, count in fuzzer.failures.most_common():
        print(f"  {count} x {key}")
    for key, text in fuzzer.examples.items():
        print(f"--- first {key}\n{text}")
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Not the Geodes' close at exit: a world whose garbage left frames matched and never
    # received would wait for them (see docs/wire-format.md).
    os._exit(code)
