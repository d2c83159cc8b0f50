"""The transport's topic streams, below the Geode: every rank roots one stream to all."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from geode_mpi.transport import open_world
from geode_mpi.transport.base import Frame


def frames_for(root: int, k: int) -> tuple[bytes, list[Frame]]:
    """The k-th message of ``root``: meta of several sizes, no frame, small, big, odd frames."""
    meta = bytes([root, k]) * (1 + 2600 * (k % 3))  # 2 B, then 5202 and 10402 B
    kind = k % 6
    if kind == 0:
        return meta, []
    if kind == 1:
        return meta, [np.arange(5, dtype=np.int16) + k]
    if kind == 2:
        return meta, [np.full(400_000, root * 100 + k, np.float64)]  # 3.2 MB: out of band
    if kind == 3:
        big = np.arange(600_000, dtype=np.int32).reshape(1000, 600)
        return meta, [big[:, ::3], np.zeros(0, np.uint8)]  # strided, and empty
    if kind == 4:
        return meta, [np.arange(70_000).astype("M8[s]")]  # datetimes: no buffer protocol
    return meta, [np.ones(10, bool), np.full(300_000, k, np.uint8), np.arange(3.0)]


def as_bytes(frame: Any) -> bytes:
    return np.ascontiguousarray(frame).tobytes()


def test_every_member_gets_every_broadcast_once_in_order() -> None:
    transport = open_world()
    rank, size = transport.rank, transport.size
    got: list[tuple[int, bytes, list[bytes]]] = []

    def sink(source: int, meta: memoryview, frames: Sequence[Any], nbytes: int) -> None:
        got.append((source, bytes(meta), [as_bytes(f) for f in frames]))

    transport.attach(sink)
    count = 12
    for root in range(size):
        transport.open_streams([(100 + root, root)], [r for r in range(size) if r != root])
    tickets = []
    if size > 1:
        for k in range(count):
            meta, frames = frames_for(rank, k)
            tickets.append(transport.broadcast(100 + rank, meta, frames))
    for root in range(size):
        transport.close_stream(100 + root, timeout=60)
    # A root's close_stream does not wait for its sends (the end marker follows them).
    assert transport.wait(lambda: all(ticket.done for ticket in tickets), time.monotonic() + 60)
    for root in range(size):
        if root == rank:
            assert not [item for item in got if item[0] == root]
            continue
        mine = [item for item in got if item[0] == root]
        assert len(mine) == count
        for k, (_, meta, frames) in enumerate(mine):
            want_meta, want_frames = frames_for(root, k)
            assert meta == want_meta
            assert frames == [as_bytes(f) for f in want_frames]
    transport.close(timeout=60)


def test_small_broadcasts_wait_in_the_batches_of_their_members_in_order() -> None:
    """A small broadcast joins each member's batch, behind the batched sends to that rank: it
    is held (not done) until the batches go out, and each member then sees the root's
    broadcasts and sends in the order they were made."""
    transport = open_world()
    rank, size = transport.rank, transport.size
    got: list[tuple[int, bytes]] = []
    transport.attach(lambda source, meta, frames, nbytes: got.append((source, bytes(meta))))
    others = [r for r in range(size) if r != rank]
    for root in range(size):
        transport.open_streams([(300 + root, root)], [r for r in range(size) if r != root])
    count = 10  # fewer than a batch holds: nothing goes out before the flush
    tickets = []
    for k in range(count if others else 0):
        if k % 2:
            for dest in others:
                transport.send(dest, bytes([rank, k, dest]), [], batch=True)
        else:
            ticket = transport.broadcast(300 + rank, bytes([rank, k, 255]), [])
            if getattr(transport, "name", "") == "MPI":
                assert ticket.held and not ticket.done
            tickets.append(ticket)
    transport.flush()
    for root in range(size):
        transport.close_stream(300 + root, timeout=60)
    assert transport.wait(lambda: all(ticket.done for ticket in tickets), time.monotonic() + 60)
    assert not any(ticket.held for ticket in tickets)
    for root in others:
        mine = [meta for source, meta in got if source == root]
        assert mine == [bytes([root, k, rank if k % 2 else 255]) for k in range(count)]
    transport.close(timeout=60)
