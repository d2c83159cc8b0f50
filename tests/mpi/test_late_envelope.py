"""A large frame whose envelope is late (the network path: the envelope waits behind the
frame's bytes) is received at once, before its envelope comes."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from mpi4py import MPI

from geode_mpi.transport.envelope import one_frame_envelope
from geode_mpi.transport.mpi import TAG_ENVELOPE, TAG_FRAME, MPITransport

TIMEOUT = 60.0
NBYTES = 4 * 2**20
STEP = 10.0  # what a step may take here; they take milliseconds


def test_a_frame_whose_envelope_is_late_is_received_before_it() -> None:
    world = MPI.COMM_WORLD
    if world.Get_size() < 2:
        pytest.skip("needs two ranks")  # the same on every rank
    transport = MPITransport(world)
    arrived: list[tuple[int, bytes, list[Any]]] = []
    transport.attach(lambda rank, meta, frames, nbytes: arrived.append((rank, meta, frames)))
    rank = world.Get_rank()
    data = np.arange(NBYTES, dtype=np.uint8)
    meta = b"meta of a late envelope"
    try:
        if rank == 0:
            request = transport.comm.Isend([data, MPI.BYTE], 1, TAG_FRAME)
            # Past the eager limit, the frame's send completes only into a posted receive:
            # rank 1 must post it while its envelope is still here.
            sent = transport.wait(lambda: bool(request.Test()), time.monotonic() + STEP)
            envelope = one_frame_envelope(meta, data.nbytes, MPI.Get_address(data))
            transport.comm.Send(envelope, 1, TAG_ENVELOPE)
            transport.sent_to[1] += 1  # (as send() counts it, for close())
            assert sent, "the frame was not received before its envelope"
        elif rank == 1:
            deadline = time.monotonic() + STEP
            held = "1 frame(s) from rank 0 waiting for their envelopes"
            while held not in transport.pending_summary() and time.monotonic() < deadline:
                transport.progress()
            assert held in transport.pending_summary()
            assert transport.wait(lambda: bool(arrived), time.monotonic() + TIMEOUT)
            source, got_meta, frames = arrived[0]
            assert (source, bytes(got_meta)) == (0, meta)
            assert np.array_equal(np.frombuffer(frames[0], np.uint8), data)
            assert not transport.busy
    finally:
        transport.close(TIMEOUT)
