"""Large messages whose frames follow their envelope (the network path's order) and ones whose
frames go first (shared memory's), mixed on one pair of ranks, arrive whole and in order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from mpi4py import MPI

from geode_mpi.errors import DecodeError
from geode_mpi.transport.envelope import FRAMES_AFTER, one_frame_envelope
from geode_mpi.transport.mpi import TAG_ENVELOPE, TAG_FRAME, MPITransport

TIMEOUT = 60.0
MiB = 2**20


def messages() -> list[tuple[bytes, list[np.ndarray[Any, Any]], bool, bool]]:
    """(meta, frames, batched, frames after) in sending order: one large frame, several
    (strided and inline ones among them), small batched ones before and between, in both
    orders."""
    big = np.arange(MiB // 8, dtype=np.float64)
    strided = np.arange(3 * 40_000, dtype=np.int32)[::3]
    small = np.arange(10, dtype=np.int16)
    sent = []
    for number, after in enumerate((True, False, True, True, False, True)):
        sent.append((b"small %d" % number, [small + number], True, after))
        sent.append((b"one %d" % number, [big + number], False, after))
        sent.append((b"several %d" % number, [small, big - number, strided + number], False, after))
    sent.append((b"last", [], True, True))
    return sent


@pytest.fixture
def transport() -> Iterator[MPITransport]:
    """An MPI transport on COMM_WORLD, closed at the end (skips below two ranks)."""
    if MPI.COMM_WORLD.Get_size() < 2:
        pytest.skip("needs two ranks")  # the same on every rank
    made = MPITransport(MPI.COMM_WORLD)
    yield made
    made.close(TIMEOUT)  # (a frame whose envelope was refused: received here, as late)


def test_frames_after_and_before_their_envelopes_mix_in_order(transport: MPITransport) -> None:
    arrived: list[tuple[int, bytes, list[Any]]] = []
    transport.attach(lambda rank, meta, frames, nbytes: arrived.append((rank, bytes(meta), frames)))
    sent = messages()
    if transport.rank == 0:
        tickets = []
        for meta, frames, batched, after in sent:
            transport.frames_after = lambda rank, after=after: after  # (to rank 1)
            tickets.append(transport.send(1, meta, frames, batched))
        transport.flush()
        done = transport.wait(lambda: all(t.done for t in tickets), time.monotonic() + TIMEOUT)
        assert done, transport.pending_summary()
    elif transport.rank == 1:
        assert transport.wait(lambda: len(arrived) == len(sent), time.monotonic() + TIMEOUT)
        assert [meta for _, meta, _ in arrived] == [meta for meta, _, _, _ in sent]
        for (source, _, got), (_, frames, _, _) in zip(arrived, sent, strict=True):
            assert source == 0
            assert [bytes(frame) for frame in got] == [frame.tobytes() for frame in frames]
        assert not transport.busy


@pytest.mark.parametrize(
    ("frame_first", "announced", "error"),
    [
        (True, MiB, "rank 0 sent frames before an envelope that says they follow"),
        (False, MiB + 16, r"rank 0 sent frames of \[1048576\] bytes where its envelope says"),
    ],
    ids=["frame before its envelope", "frame shorter than announced"],
)
def test_a_frame_that_does_not_follow_its_envelope_as_announced_is_refused(
    transport: MPITransport, frame_first: bool, announced: int, error: str
) -> None:
    transport.attach(lambda rank, meta, frames, nbytes: None)
    data = np.zeros(MiB, np.uint8)
    comm = transport.comm
    if transport.rank == 0:
        envelope = one_frame_envelope(b"meta", announced, 0, FRAMES_AFTER)
        if frame_first:
            frame = comm.Isend([data, MPI.BYTE], 1, TAG_FRAME)
        comm.Send(envelope, 1, TAG_ENVELOPE)
        transport.sent_to[1] += 1  # (as send() counts it, for close())
        if not frame_first:
            frame = comm.Isend([data, MPI.BYTE], 1, TAG_FRAME)
        assert transport.wait(lambda: bool(frame.Test()), time.monotonic() + TIMEOUT)
    elif transport.rank == 1:
        with pytest.raises(DecodeError, match=error):
            transport.wait(lambda: False, time.monotonic() + TIMEOUT)
