"""The plain send path (`SendPath.plain`, `Runtime.send_plain`) against the general one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, Message
from geode_mpi.delivery.pairs import PairOut
from geode_mpi.delivery.sending import SendPath
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.transport import SendTicket

NODES = ["node0", "node1", "node2"]


class Recorder:
    """A transport that records what it is asked to send, and how."""

    rank = 0

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, bytes, int]] = []

    def send(self, dest: int, meta: bytes, frames: Any, batch: bool = False) -> SendTicket:
        self.sent.append(("send batched" if batch else "send", dest, meta, len(frames)))
        return SendTicket(dest, len(meta), done=not batch, held=batch)

    def batch_meta(self, dest: int, meta: bytes) -> SendTicket:
        self.sent.append(("send batched", dest, meta, 0))
        return SendTicket(dest, len(meta), held=True)


def payloads() -> list[Any]:
    return ["hello", 7, {"k": [1, 2]}, np.arange(4), np.zeros(10_000), Message(b"x")]


@pytest.mark.parametrize("acks", [False, True])
@pytest.mark.parametrize("resend_after", [None, 5.0])
@pytest.mark.parametrize("batch", [False, True])
def test_plain_matches_to_node(
    acks: bool, resend_after: float | None, batch: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same stamps, bytes, transport calls, outbox entries and counters as `to_node`."""
    monkeypatch.setattr("time.time", lambda: 1234.5)
    monkeypatch.setattr("time.monotonic", lambda: 99.0)
    paths, pairs, recorders = [], [], []
    for _ in range(2):
        recorder = Recorder()
        stats = {1: NodeStats("node1")}
        paths.append(SendPath(recorder, NODES, stats, lambda node: node, [1], acks, resend_after))  # type: ignore[arg-type]
        pairs.append(PairOut(None))
        recorders.append(recorder)
    plain, general = paths
    for value in payloads():
        message = value if isinstance(value, Message) else Message(value)
        _, stamp = plain.plain(message, 1, 2, 2, pairs[0], batch)
        _, expected = general.to_node(message, 1, 1, 2, 2, pairs[1], False, batch=batch)
        assert stamp == expected
    assert recorders[0].sent == recorders[1].sent
    assert len(recorders[0].sent) == len(payloads())
    assert plain.counter == general.counter == {1: len(payloads())}
    assert pairs[0].next_seq == pairs[1].next_seq == len(payloads())
    assert pairs[0].outbox == pairs[1].outbox
    assert len(pairs[0].outbox) == (len(payloads()) if acks else 0)
    assert pairs[0].resends == pairs[1].resends
    assert plain.stats[1].as_dict() == general.stats[1].as_dict()
    assert plain.stats[1].sent == len(payloads())


@pytest.mark.parametrize("acks", [False, True])
def test_isend_and_send_on_a_route_deliver_in_order(acks: bool) -> None:
    """Sends that take the plain path (from the second on) and sends that do not (an ack,
    another source) interleave on one pair: every message arrives once, in order, and with
    acks the outbox empties."""
    geode = Geode(nodes=2, acks=acks)
    try:
        handles = []
        for k in range(40):
            if k % 7 == 3:
                handles.append(geode.isend(k, "node0", "node1"))  # a source given: general
            elif k % 11 == 5:
                handles.append(geode.send(k, dest="node1"))  # blocking, plain
            else:
                handles.append(geode.isend(Message(k), dest="node1"))
        got = [geode.receive("node1", timeout=5) for _ in range(40)]
        assert [message.data for message in got] == list(range(40))
        assert [message.seq for message in got] == list(range(40))
        assert [handle.seq for handle in handles] == list(range(40))
        assert len({handle.id for handle in handles}) == 40
        geode.flush()
        geode.pending()
        stats = geode.stats("node0")
        assert stats.sent == 40
        assert stats.unacked == 0
        assert all(handle.acked for handle in handles) == acks
    finally:
        geode.close()
