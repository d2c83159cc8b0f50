"""Frames received as memoryviews (inline frames: slices of a receive buffer), copied for the
second and further subscribers of a topic on one rank."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode
from geode_mpi.transport import InProcHub
from geode_mpi.transport.base import Frame, copy_frame, frame_bytes
from geode_mpi.transport.envelope import INLINE_MAX
from geode_mpi.transport.sealed import keep_or_copy


@pytest.mark.parametrize("nbytes", [0, 1, 8, 4096, INLINE_MAX])
def test_a_memoryview_frame_is_copied_into_a_private_writable_array(nbytes: int) -> None:
    buffer = bytearray(range(256)) * (nbytes // 256 + 2)
    view = memoryview(buffer)[16 : 16 + nbytes]  # (a slice of a batch's buffer)
    want = bytes(view)
    for copy in (copy_frame(view), keep_or_copy(view)):  # type: ignore[arg-type]
        assert isinstance(copy, np.ndarray) and copy.dtype == np.uint8
        assert copy.tobytes() == want and copy.flags.writeable
        copy[...] = 0
        assert bytes(view) == want  # the copy's own memory
    assert frame_bytes(view).tobytes() == want  # type: ignore[arg-type]


class InlineHub(InProcHub):
    """Delivers frames of up to `INLINE_MAX` bytes as the MPI transport does: memoryviews
    into one receive buffer, as a batch's entries arrive."""

    def post(self, source: int, dest: int, meta: bytes, frames: Sequence[Frame]) -> int:
        buffer = bytearray(b"".join(bytes(frame_bytes(f)) for f in frames))
        view = memoryview(buffer)
        delivered: list[Any] = []
        at = 0
        for frame in frames:
            if frame.nbytes <= INLINE_MAX:
                delivered.append(view[at : at + frame.nbytes])
            else:
                delivered.append(keep_or_copy(frame))
            at += frame.nbytes
        nbytes = len(meta) + len(buffer)
        self.endpoints[dest].deliver(source, memoryview(meta), delivered, nbytes)
        return nbytes


@pytest.mark.parametrize("count", [0, 1, 500, 2048, 3000])
def test_two_subscribers_on_one_rank_get_inline_frames_each_their_own(count: int) -> None:
    hub = InlineHub(2)
    geodes = [Geode(4, transport=hub.endpoint(rank)) for rank in range(2)]
    try:
        topics = [g.topic("t", ["node0"], ["node1", "node3"]) for g in geodes]
        sent = [np.arange(count), {"step": 1, "arr": np.arange(count)}]
        for data in sent:
            topics[0].publish(data, "node0")
        got = {
            node: [geodes[1].receive(node, topic="t", timeout=5).data for _ in sent]
            for node in ("node1", "node3")
        }
        for node, (array, held) in got.items():
            assert np.array_equal(array, sent[0]) and np.array_equal(held["arr"], sent[0]), node
        if count:
            got["node1"][0][...] = -1
            got["node1"][1]["arr"][...] = -1
            assert np.array_equal(got["node3"][0], sent[0])
            assert np.array_equal(got["node3"][1]["arr"], sent[0])
    finally:
        for g in geodes:
            g.close(timeout=5)
