"""A receive that waits for a message of a node whose rank is in close() and can send nothing
more: it raises `ReceiveTimeout` ("none can arrive") once every message that rank sent this
one has arrived, as a receive in a one-process world does at once, instead of waiting for
ever (or for its whole timeout). Never while a message of that node may still be on its way,
nor while a handler of that node, or another thread of its rank (a daemon one too), may
still send.

The last rank closes at once (after its sends); every other rank waits for its node. At size
1 there is no other rank: skipped.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from geode_mpi import Geode, Message, ReceiveTimeout

TIMEOUT = 60.0
PROMPT = 8.0  # well under the receives' own timeouts (30 s): told, not timed out
ROUNDS = 300  # Geodes made in the no-false-raise loop


class Ping(Message):
    """What the closing rank's handler answers."""


def _last(geode: Geode) -> str:
    if geode.size == 1:
        geode.close()
        pytest.skip("one process: no other rank to close")
    return f"node{geode.size - 1}"


def test_a_receive_from_a_closing_ranks_node_raises_at_once() -> None:
    geode = Geode()
    last = _last(geode)
    if geode.rank != geode.size - 1:
        started = time.monotonic()
        with pytest.raises(ReceiveTimeout) as err:  # (before: waited out its 30 s)
            geode.receive(source=last, timeout=30.0)
        assert time.monotonic() - started < PROMPT
        text = str(err.value)
        assert f"found no message (source={last}), and none can arrive" in text, text
        assert f"{last}'s rank (rank {geode.size - 1}) is in close()" in text, text
        assert err.value.source == last
        # Known from now on: a second receive raises without asking again.
        with pytest.raises(ReceiveTimeout, match="none can arrive"):
            geode.receive(source=last, timeout=30.0)
    geode.close(timeout=TIMEOUT)


def test_every_message_a_closing_rank_sent_is_received_before_it_raises() -> None:
    """No false raise: each other rank waits for the last rank's node at once (so it asks
    before anything is sent, and says "ready"); the last rank, once told, sends small
    messages, then often a large array that travels apart (its "done" answer, small, can
    arrive first: its count says the array is still to come), and closes at once. Each
    receive gets every message, then the next one raises."""
    with Geode() as probe:
        size = probe.size
    if size == 1:
        pytest.skip("one process: no other rank to close")
    big = np.arange(1 << 19, dtype=np.float64)  # 4 MiB
    for round_ in range(ROUNDS):
        geode = Geode()
        last = f"node{size - 1}"
        count = 1 + round_ % 4
        with_big = round_ % 3 == 0
        if geode.rank == size - 1:
            for other in range(size - 1):
                assert geode.receive(source=f"node{other}", timeout=30.0).data == "ready"
            for other in range(size - 1):
                for k in range(count):
                    geode.send(k, dest=f"node{other}")
                if with_big:
                    geode.send(big, dest=f"node{other}")
        else:
            geode.send("ready", dest=last)
            got = [geode.receive(source=last, timeout=30.0).data for _ in range(count)]
            assert got == list(range(count)), (round_, got)
            if with_big:
                assert np.array_equal(geode.receive(source=last, timeout=30.0).data, big)
            with pytest.raises(ReceiveTimeout, match="none can arrive"):
                geode.receive(source=last, timeout=30.0)
        geode.close(timeout=TIMEOUT)


def test_a_closing_ranks_node_with_a_handler_is_waited_for() -> None:
    """A handler there may still send (close() serves what is sent with ack=True, and
    requests): no "none can arrive" for it."""
    geode = Geode()
    last = _last(geode)

    @geode.on(Ping, node=last)
    def answer(message: Ping) -> None:
        geode.send(message.data, last, message.source)

    if geode.rank != geode.size - 1:
        with pytest.raises(ReceiveTimeout) as err:
            geode.receive(source=last, timeout=2.0)
        assert "none can arrive" not in str(err.value) and "timed out after 2 s" in str(err.value)
        geode.send(Ping(geode.rank), dest=last, ack=True, timeout=30.0)
        assert geode.receive(source=last, timeout=30.0).data == geode.rank  # sent in close()
    geode.close(timeout=TIMEOUT)


def test_a_daemon_thread_of_a_closing_rank_is_waited_for() -> None:
    """A daemon thread of the last rank sends as its node 1.5 s after that rank entered
    close() (close() serves meanwhile: the send goes). Each other rank gets it (before:
    "none can arrive" at once, then the message came); the thread ended, it raises."""
    geode = Geode()
    last = _last(geode)
    if geode.rank == geode.size - 1:

        def later() -> None:
            time.sleep(1.5)
            for other in range(geode.size - 1):
                geode.send("late", dest=f"node{other}")

        threading.Thread(target=later, daemon=True).start()
    else:
        assert geode.receive(source=last, timeout=30.0).data == "late"
        started = time.monotonic()
        with pytest.raises(ReceiveTimeout, match="none can arrive"):
            geode.receive(source=last, timeout=30.0)
        assert time.monotonic() - started < PROMPT
    geode.close(timeout=TIMEOUT)


def test_a_groups_sequencer_in_close_is_waited_for() -> None:
    """A group's sequencer forwards other nodes' messages in close(): rank 1's node1 sequences
    a group of node0 and closes at once; rank 2 sends to the group 1.5 s later. Before,
    rank 0's receive(source="node1") raised "none can arrive" at 1.5 s (node1's rank had said
    it sends nothing more before the message reached it), and the message came after."""
    geode = Geode()
    if geode.size < 3:
        geode.close()
        pytest.skip("needs three ranks: the receiver, the sequencer and the sender")
    group = geode.group(["node0"], sequencer="node1")
    if geode.rank == 0:
        msg = geode.receive(source="node1", timeout=30.0)
        assert (msg.origin, msg.group, int(msg.data.sum())) == ("node2", group.name, 45)
    elif geode.rank == 2:
        time.sleep(1.5)  # (its work: the sequencer's rank is in close() meanwhile)
        group.send(np.arange(10), source="node2")
    geode.close(timeout=TIMEOUT)
