"""A receive with no source (or with a type filter but no source), and an awaited receive
with a source, that waits once every other rank is in close() and everything those ranks
sent this one has arrived: it raises `ReceiveTimeout` ("none can arrive"), naming the ranks
in close(), instead of waiting for ever (or for its whole timeout). Never while a message
may still be on its way, nor while a rank that has not entered close() may still send, nor
while a handler on a closing rank may still send, nor while another thread (a daemon one
too) runs on the waiting rank or on a closing one. An awaited receive with no source waits
its timeout, as before: a callback of its event loop may send, unseen.

Rank 0 waits; the other ranks close at once (after their sends). At size 1 there is no
other rank: skipped.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from test_closed_sources import PROMPT, ROUNDS, TIMEOUT, Ping

from geode_mpi import Geode, ReceiveTimeout
from geode_mpi.core import runtime_receiving

BIG = np.arange(1 << 19, dtype=np.float64)  # 4 MiB: travels apart from its envelope


def _others(geode: Geode) -> str:
    if geode.size == 1:
        geode.close()
        pytest.skip("one process: no other rank to close")
    return "rank 1" if geode.size == 2 else f"ranks 1-{geode.size - 1}"


def test_a_receive_with_no_source_raises_once_every_other_rank_is_in_close() -> None:
    geode = Geode()
    others = _others(geode)
    if geode.rank == 0:
        started = time.monotonic()
        with pytest.raises(ReceiveTimeout) as err:  # (before: waited out its 30 s)
            geode.receive(timeout=30.0)
        assert time.monotonic() - started < PROMPT
        text = str(err.value)
        assert "receive on node0 found no message, and none can arrive" in text, text
        assert f"every other rank ({others}) is in close() and sends nothing more" in text, text
        # Known from now on: with a type filter too, at once.
        started = time.monotonic()
        with pytest.raises(ReceiveTimeout, match=r"found no message \(type=Ping\), and none"):
            geode.receive(type=Ping, timeout=30.0)
        assert time.monotonic() - started < 1.0
    geode.close(timeout=TIMEOUT)


def test_a_receive_with_no_source_waits_for_a_rank_not_in_close() -> None:
    """The last rank computes for a while (past the first asks) before it sends: rank 0 gets
    its message, though the ranks between are in close() already."""
    geode = Geode()
    _others(geode)
    last = geode.size - 1
    if geode.rank == last:
        time.sleep(2.0)  # (its work: not a wait for a message)
        geode.send("late", dest="node0")
    elif geode.rank == 0:
        assert geode.receive(timeout=30.0).data == "late"
        with pytest.raises(ReceiveTimeout, match="none can arrive"):
            geode.receive(timeout=30.0)
    geode.close(timeout=TIMEOUT)


def test_every_message_the_closing_ranks_sent_is_received_before_it_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No false raise: rank 0 asks at once (not after its first back-off steps), so its ask
    often reaches a rank before that rank sends; each other rank sends small messages, then
    often a large array that travels apart (the "done" answer, small, can arrive first: its
    count says the array is still to come), and closes at once. Rank 0 gets every message,
    then its next receive raises."""
    _ask_at_once(monkeypatch)
    with Geode() as probe:
        size = probe.size
    if size == 1:
        pytest.skip("one process: no other rank to close")
    for round_ in range(ROUNDS):
        geode = Geode()
        count = 1 + round_ % 4
        with_big = round_ % 3 == 0
        if geode.rank == 0:
            _ready(geode)
            got: dict[str, list[object]] = {f"node{other}": [] for other in range(1, size)}
            for _ in range((size - 1) * (count + with_big)):
                message = geode.receive(timeout=30.0)
                got[message.source].append(message.data)
            for source, data in got.items():
                assert data[:count] == list(range(count)), (round_, source, data)
                if with_big:
                    assert np.array_equal(data[count], BIG), (round_, source)
            with pytest.raises(ReceiveTimeout, match="none can arrive"):
                geode.receive(timeout=30.0)
        else:
            _send_when_ready(geode, count, with_big)
        geode.close(timeout=TIMEOUT)


def _ask_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiting receive asks at once (not after its first back-off steps, nor after 0.5 s):
    its ask often reaches a rank before that rank sends, the hardest case."""
    monkeypatch.setattr(runtime_receiving, "ASK_ALL_AFTER", 0.0)
    monkeypatch.setattr(runtime_receiving, "LOOK_AFTER", 0.0)


def _ready(geode: Geode) -> None:
    """Rank 0 tells every other rank to send (its wait, and so its ask, comes next)."""
    for other in range(1, geode.size):
        geode.send("ready", dest=f"node{other}")


def _send_when_ready(geode: Geode, count: int, with_big: bool) -> None:
    """Another rank's part: ``count`` small messages, maybe `BIG`, then (its caller) close()."""
    assert geode.receive(source="node0", timeout=30.0).data == "ready"
    for k in range(count):
        geode.send(k, dest="node0")
    if with_big:
        geode.send(BIG, dest="node0")


def test_a_closing_rank_with_a_handler_is_waited_for() -> None:
    """A handler there may still send (close() serves what is sent with ack=True, and
    requests): no "none can arrive"."""
    geode = Geode()
    _others(geode)
    last = f"node{geode.size - 1}"

    @geode.on(Ping, node=last)
    def answer(message: Ping) -> None:
        geode.send(message.data, last, message.source)

    if geode.rank == 0:
        with pytest.raises(ReceiveTimeout) as err:
            geode.receive(timeout=2.0)
        assert "none can arrive" not in str(err.value) and "timed out after 2 s" in str(err.value)
        geode.send(Ping("back"), dest=last, ack=True, timeout=30.0)
        assert geode.receive(timeout=30.0).data == "back"  # sent in close()
    geode.close(timeout=TIMEOUT)


def test_an_awaited_receive_raises_as_the_blocking_one() -> None:
    """areceive(source=...) raises once nothing can come (it waited out its timeout before);
    areceive() with no source waits its timeout (a callback of its loop may send)."""
    geode = Geode()
    others = _others(geode)
    last = f"node{geode.size - 1}"

    async def wait() -> None:
        started = time.monotonic()
        with pytest.raises(ReceiveTimeout) as err:
            await geode.areceive(source=last, timeout=30.0)
        text = str(err.value)
        assert f"areceive on node0 found no message (source={last}), and none can" in text, text
        assert time.monotonic() - started < PROMPT
        with pytest.raises(ReceiveTimeout) as err:
            await geode.areceive(timeout=1.0)
        text = str(err.value)
        assert "areceive on node0 timed out after 1 s" in text and others not in text, text

    if geode.rank == 0:
        asyncio.run(wait())
    geode.close(timeout=TIMEOUT)


def test_an_awaited_receive_gets_every_message_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """No false raise, awaited: as the blocking loop above, fewer rounds (asyncio.run each)."""
    _ask_at_once(monkeypatch)
    with Geode() as probe:
        size = probe.size
    if size == 1:
        pytest.skip("one process: no other rank to close")

    async def collect(geode: Geode, count: int, with_big: bool) -> None:
        for _ in range((size - 1) * (count + with_big)):
            await geode.areceive(timeout=30.0)
        for other in range(1, size):
            with pytest.raises(ReceiveTimeout, match="none can arrive"):
                await geode.areceive(source=f"node{other}", timeout=30.0)

    for round_ in range(ROUNDS // 3):
        geode = Geode()
        count = 1 + round_ % 3
        with_big = round_ % 2 == 0
        if geode.rank == 0:
            _ready(geode)
            asyncio.run(collect(geode, count, with_big))
        else:
            _send_when_ready(geode, count, with_big)
        geode.close(timeout=TIMEOUT)


def test_a_group_message_through_a_closing_sequencer_is_received(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No false raise through a relay: rank 2 makes a group of node0 sequenced by node1 (rank
    1, in close() at once, knows no group; rank 0 neither), sends to it and closes at once,
    sometimes a 4 MiB array (node1 receives it, then forwards it). Rank 0 gets every one; a
    rank that knows a group says so in its answer, and the receive with no source never
    concludes then (before: "none can arrive" while the message was on its way through
    node1; the review's case, 1.5 s late, raised at 1.5 s)."""
    _ask_at_once(monkeypatch)
    with Geode() as probe:
        size = probe.size
    if size < 3:
        pytest.skip("needs three ranks: the receiver, the sequencer and the sender")
    for round_ in range(ROUNDS):
        geode = Geode()
        with_big = round_ % 2 == 1
        if geode.rank == 0:
            geode.send("ready", dest="node2")
            message = geode.receive(timeout=30.0)
            assert (message.origin, message.source) == ("node2", "node1"), round_
            if with_big:
                assert np.array_equal(message.data, BIG), round_
            else:
                assert message.data == round_
            if round_ == 0:  # (a relay known: it waits its timeout, as before)
                with pytest.raises(ReceiveTimeout, match="timed out after 1 s"):
                    geode.receive(timeout=1.0)
        elif geode.rank == 2:
            group = geode.group(["node0"], sequencer="node1")
            assert geode.receive(source="node0", timeout=30.0).data == "ready"
            group.send(BIG if with_big else round_, source="node2")
        geode.close(timeout=TIMEOUT)


def test_an_awaited_receive_with_no_source_waits_for_a_callback_of_its_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No false raise in asyncio: every other rank is in close() at once, but a callback of
    rank 0's event loop sends to node0 after a while (1.5 s in the first rounds, well past
    the asks; then 1-40 ms): a timer's (call_later), a task a timer starts, a future's
    done-callback, another task. areceive() gets it (before: "none can arrive" at 0.55 s,
    the message queued after; asyncio.all_tasks() sees no timer nor callback). With no
    source it never concludes: it waits its timeout, as before."""
    _ask_at_once(monkeypatch)
    with Geode() as probe:
        size = probe.size
    if size == 1:
        pytest.skip("one process: no other rank to close")

    async def collect(geode: Geode, round_: int) -> None:
        loop = asyncio.get_running_loop()
        after = 1.5 if round_ < 4 else 1e-3 * (1 + round_ % 40)

        def send() -> None:
            geode.send(round_, dest="node0")  # (from node0 to itself)

        async def sending() -> None:
            send()

        async def later() -> None:
            await asyncio.sleep(after)
            send()

        how = round_ % 4
        sender = None
        if how == 0:
            loop.call_later(after, send)
        elif how == 1:
            loop.call_later(after, lambda: loop.create_task(sending()))
        elif how == 2:
            future = loop.create_future()
            future.add_done_callback(lambda _: send())
            loop.call_later(after, future.set_result, None)
        else:
            sender = asyncio.create_task(later())
        assert (await geode.areceive(timeout=30.0)).data == round_, round_
        if sender is not None:
            await sender
        if round_ == 0:
            with pytest.raises(ReceiveTimeout, match="timed out after 1 s"):
                await geode.areceive(timeout=1.0)

    for round_ in range(ROUNDS // 3):
        geode = Geode()
        if geode.rank == 0:
            asyncio.run(collect(geode, round_))
        geode.close(timeout=TIMEOUT)


def test_a_daemon_thread_of_the_waiting_rank_is_waited_for() -> None:
    """No false raise: every other rank is in close() at once, but a daemon thread of rank 0
    sends to node0 after 1.5 s. receive() gets it (before: "none can arrive" at 0.5 s, its
    text saying no other thread of this rank can send); the thread ended, it raises."""
    geode = Geode()
    others = _others(geode)
    if geode.rank == 0:

        def later() -> None:
            time.sleep(1.5)
            geode.send("late", dest="node0")

        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        assert geode.receive(timeout=30.0).data == "late"
        thread.join(TIMEOUT)
        started = time.monotonic()
        with pytest.raises(ReceiveTimeout, match=f"every other rank \\({others}\\) is in close"):
            geode.receive(timeout=30.0)
        assert time.monotonic() - started < PROMPT
    geode.close(timeout=TIMEOUT)


def test_a_daemon_thread_of_a_closing_rank_is_waited_for() -> None:
    """No false raise: the last rank starts a daemon thread that sends to node0 1.5 s later,
    and enters close() at once (close() serves meanwhile: the send goes). Rank 0 gets it
    (before: "none can arrive", then the message came); the thread ended, it raises."""
    geode = Geode()
    _others(geode)
    if geode.rank == geode.size - 1:

        def later() -> None:
            time.sleep(1.5)
            geode.send("late", dest="node0")

        threading.Thread(target=later, daemon=True).start()
    elif geode.rank == 0:
        assert geode.receive(timeout=30.0).data == "late"
        started = time.monotonic()
        with pytest.raises(ReceiveTimeout, match="none can arrive"):
            geode.receive(timeout=30.0)
        assert time.monotonic() - started < PROMPT
    geode.close(timeout=TIMEOUT)
