"""Credits across ranks: a send that found no room says it was not sent, and a send to a full
queue of a node on its own rank refuses at once instead of waiting for ever.

Each test asks for two nodes a rank (node r and node r + size on rank r), so that a pair of
nodes on different ranks and a pair on one rank exist at every size; at size 1 (the embedded
world) a send to a full ``block`` queue raises QueueFull at once, which is checked instead.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from geode_mpi import Geode, Message, NotProcessed, QueueConfig, QueueFull, SendTimeout

TIMEOUT = 60.0


def window_one(size: int) -> QueueConfig:
    return QueueConfig(capacity=2 * size, policy="block", window=1)


def world_size() -> int:
    """The number of ranks (a Geode made and closed to ask, before the test's own)."""
    probe = Geode()
    size = probe.size
    probe.close(timeout=TIMEOUT)
    return size


def four_or_more() -> int:
    """4 (node0..node3, for the tests that name them), or the number of ranks beyond 4 ranks:
    a job's nodes (or a bounded queue's capacity) are never fewer than its ranks."""
    return max(4, world_size())


def receiver_closes(why_not_alone: str) -> tuple[Geode, str]:
    """A Geode with a window of 1 per sender, and its last node, whose rank closes without
    receiving (skipped at size 1, where that cannot be shown: ``why_not_alone``)."""
    size = world_size()
    if size == 1:
        pytest.skip(why_not_alone)
    g = Geode(queue=QueueConfig(capacity=size, policy="block"))
    return g, g.nodes[-1]


def test_a_send_that_found_no_room_says_not_sent_and_sending_again_delivers_it_once() -> None:
    size = world_size()
    g = Geode(nodes=2 * size, queue=window_one(size))
    if size == 1:
        g.send("first", "node0", "node1")
        with pytest.raises(QueueFull, match="in a one-process world"):
            g.send("second", "node0", "node1", timeout=0.2)
        g.close(timeout=TIMEOUT)
        return
    # node0 (rank 0) -> node1 (rank 1); node2 (rank 0) tells node1 when node0 is done waiting
    signal = g.nodes[size]
    if g.hosts("node0"):
        g.send("first", "node0", "node1")
        with pytest.raises(SendTimeout) as err:
            g.send("second", "node0", "node1", timeout=0.3)
        error = err.value
        assert error.in_flight is False and error.message_id == -1
        assert "not sent: no room at node1 within 0.3 s" in str(error), str(error)
        assert str(error).endswith("send it again") and "in flight" not in str(error)
        g.send("go", signal, "node1")
        g.send("second", "node0", "node1", timeout=TIMEOUT)  # as the error says
    if g.hosts("node1"):
        assert g.receive("node1", source=signal, timeout=TIMEOUT).data == "go"
        got = [g.receive("node1", source="node0", timeout=TIMEOUT).data for _ in range(2)]
        assert got == ["first", "second"]
    g.close(timeout=TIMEOUT)
    if g.hosts("node1"):
        assert g.try_receive("node1") is None  # "second" once, not twice


def test_isend_many_that_found_no_room_names_the_timeout_it_was_given() -> None:
    size = world_size()
    if size == 1:
        pytest.skip("one process: a full block queue raises QueueFull at once (unit tests)")
    g = Geode(nodes=2 * size, queue=window_one(size))
    signal = g.nodes[size]  # (node1's rank stays out of close() until node0 is done)
    if g.hosts("node0"):
        with pytest.raises(SendTimeout) as err:
            g.isend_many(["a", "b", "c"], dest="node1", timeout=0.3)
        assert err.value.sent == 1
        assert "no room at node1 within 0.3 s" in str(err.value), str(err.value)
        g.send("go", signal, "node1")
    if g.hosts("node1"):
        assert g.receive("node1", source=signal, timeout=TIMEOUT).data == "go"
    g.close(timeout=TIMEOUT)
    if g.hosts("node1"):
        assert [m.data for m in g.receive_many("node1", timeout=TIMEOUT)] == ["a"]


def test_a_full_queue_of_a_node_on_the_same_rank_refuses_at_once() -> None:
    size = world_size()
    g = Geode(nodes=2 * size, queue=window_one(size))
    sender, receiver = g.local_nodes  # both on this rank: nothing takes while a send waits
    g.send("one", sender, receiver)
    started = time.monotonic()
    where = "in a one-process world" if size == 1 else f"{receiver} is hosted on this rank"
    with pytest.raises(QueueFull, match=where) as err:
        g.send("two", sender, receiver, timeout=5.0)  # (before the fix: SendTimeout in 5 s)
    assert time.monotonic() - started < 2.0
    assert str(err.value).endswith("nothing was sent")
    assert g.receive(receiver, timeout=TIMEOUT).data == "one"
    g.send("two", sender, receiver, timeout=TIMEOUT)  # room again
    assert g.receive(receiver, timeout=TIMEOUT).data == "two"
    g.close(timeout=TIMEOUT)
    assert g.try_receive(receiver) is None


class Served(Message):
    pass


def test_a_full_queue_of_a_node_on_the_same_rank_drains_by_its_handler_in_the_wait() -> None:
    """Waited-for messages (ack=True) to a node of this rank with a handler: the credit wait
    serves them, so it ends (the refusal above is for queues nothing here can take from)."""
    size = world_size()
    g = Geode(nodes=2 * size, queue=window_one(size))
    sender, receiver = g.local_nodes
    seen: list[int] = []
    g.on(Served, node=receiver)(lambda message: seen.append(message.data))
    handles = [g.isend(Served(k), sender, receiver, ack=True, timeout=TIMEOUT) for k in range(6)]
    for handle in handles:
        handle.wait(timeout=TIMEOUT)
    assert seen == list(range(6))
    g.close(timeout=TIMEOUT)


def test_a_send_waiting_for_room_at_a_node_whose_rank_closes_gets_queue_full() -> None:
    g, receiver = receiver_closes("one process: a full block queue raises QueueFull at once")
    size = g.size
    sent: list[int] = []
    if g.hosts("node0"):
        with pytest.raises(QueueFull) as err:
            for k in range(5):
                g.send(k, "node0", receiver, timeout=20.0)  # (before the fix: SendTimeout)
                sent.append(k)
        assert sent == [0]
        text = str(err.value)
        assert f"{receiver}'s queue is full for node0" in text, text
        assert f"{receiver} is closing (rank {size - 1} called close())" in text, text
        assert text.endswith("nothing was sent")
    started = time.monotonic()
    g.close(timeout=TIMEOUT)
    assert time.monotonic() - started < 20.0
    if g.hosts(receiver):
        assert g.pending(receiver) == 1  # still receivable: reported at exit if left there
        assert g.receive(receiver, timeout=TIMEOUT).data == 0


def test_a_message_sent_with_ack_then_dropped_or_expired_raises_not_processed() -> None:
    size = world_size()
    g = Geode(queue=QueueConfig(capacity=2, policy="drop_oldest"))
    receiver = g.nodes[-1]
    if g.hosts("node0"):
        handle = g.isend("important", "node0", receiver, ack=True)
        for k in range(3):
            g.send(k, "node0", receiver)  # the receiver drops "important", then 0
        with pytest.raises(NotProcessed, match=f"{receiver}'s full drop_oldest queue dropped"):
            handle.wait(timeout=TIMEOUT)
        assert handle.acked and handle.lost == "dropped"
        if size > 1:  # (one process: send(ack=True) cannot wait for a receive)
            with pytest.raises(NotProcessed, match="its ttl ran out") as err:
                g.send("expiring", "node0", receiver, ack=True, ttl=0.2, timeout=TIMEOUT)
            assert err.value.why == "expired"
        g.send("end", "node0", receiver)
    if g.hosts(receiver):
        deadline = time.monotonic() + TIMEOUT
        # (without taking anything: stats() drives progress and drops what expired)
        while g.stats(receiver).dropped < 2 or (size > 1 and g.stats(receiver).expired < 1):
            assert time.monotonic() < deadline, "timed out waiting for the drops and expiry"
        got = []
        while not got or got[-1] != "end":
            got.append(g.receive(receiver, timeout=TIMEOUT).data)
        assert got == [2, "end"]  # (1 dropped for "expiring", or at size 1 for "end")
    g.close(timeout=TIMEOUT)


def test_every_handle_kept_of_a_dropped_message_says_so_beyond_the_table_s_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The table of records for handles nobody keeps holds 3 here (4096 in a job): a handle
    still held learns all the same that its message was dropped. Before: a handle whose
    record the table had let go said None, and its wait() returned as if processed."""
    monkeypatch.setattr("geode_mpi.delivery.acks.LOST_KEPT", 3)
    count = 20
    g = Geode(queue=QueueConfig(capacity=2, policy="drop_oldest"))
    receiver = g.nodes[-1]
    handles = []
    if g.hosts("node0"):
        handles = [g.isend(k, "node0", receiver, ack=True) for k in range(count)]
    if g.hosts(receiver):
        deadline = time.monotonic() + TIMEOUT
        while g.stats(receiver).dropped < count - 2:  # (stats() drives progress)
            assert time.monotonic() < deadline, "timed out waiting for the drops"
        got = [g.receive(receiver, timeout=TIMEOUT).data for _ in range(2)]
        assert got == [count - 2, count - 1]
    if handles:
        with pytest.raises(NotProcessed):  # (the last record dropped: all of them came)
            handles[count - 3].wait(timeout=TIMEOUT)
        processed, lost = [], set()
        for k, handle in enumerate(handles):
            try:
                handle.wait(timeout=TIMEOUT)
                processed.append(k)
            except NotProcessed as error:
                lost.add(error.why)
        assert processed == [count - 2, count - 1] and lost == {"dropped"}
    g.close(timeout=TIMEOUT)


def test_an_awaited_send_waiting_for_room_at_a_node_whose_rank_closes_gets_queue_full() -> None:
    g, receiver = receiver_closes("one process: an awaited send waits for another coroutine")

    async def send_five() -> list[int]:
        sent = []
        for k in range(5):
            await g.asend(k, "node0", receiver, timeout=20.0)  # (before the fix: SendTimeout)
            sent.append(k)
        return sent

    if g.hosts("node0"):
        with pytest.raises(QueueFull, match=f"{receiver} is closing"):
            asyncio.run(send_five())
    g.close(timeout=TIMEOUT)
    if g.hosts(receiver):
        assert g.receive(receiver, timeout=TIMEOUT).data == 0


class Ping(Message):
    """A request node0's handler answers while node0 waits for room."""


def test_isend_many_whose_wait_for_room_answers_a_request_says_the_item_was_not_sent() -> None:
    size = world_size()
    if size == 1:
        pytest.skip("one process: a full block queue raises QueueFull at once (unit tests)")
    g = Geode(nodes=2 * size, queue=window_one(size))

    @g.on(Ping)
    def pong(message: Message) -> str:
        return "pong"

    signal = g.nodes[size]  # (node1's rank stays out of close() until node0 is done)
    asking = g.nodes[size + 1]  # (on node1's rank, its queue not full for node0's reply)
    if g.hosts("node0"):
        g.send("first", "node0", "node1")
        # a request of node1's rank arrives while node0 waits for room: the reply node0's handler
        # sends then is not the batch's item (before the fix: sent == 1, "second" lost)
        with pytest.raises(SendTimeout) as err:
            g.isend_many(["second"], dest="node1", timeout=2.0)
        assert err.value.sent == 0, str(err.value)
        assert "no item was sent" in str(err.value), str(err.value)
        g.send("go", signal, "node1")
        g.send("second", "node0", "node1", timeout=TIMEOUT)  # as the error says
    if g.hosts("node1"):
        assert g.request(Ping("ping"), "node0", source=asking, timeout=TIMEOUT).data == "pong"
        assert g.receive("node1", source=signal, timeout=TIMEOUT).data == "go"
        got = [g.receive("node1", source="node0", timeout=TIMEOUT).data for _ in range(2)]
        assert got == ["first", "second"]
    g.close(timeout=TIMEOUT)
    if g.hosts("node1"):
        assert g.try_receive("node1") is None


def test_a_publish_waiting_for_room_at_a_rank_in_maybe_checkpoint_ends_only_by_its_timeout(
    directory: Path,
) -> None:
    """docs/checkpoints.md (the trap): maybe_checkpoint() takes nothing from the queues, so a
    publisher waiting for room at a subscriber whose rank already waits in maybe_checkpoint()
    waits for a rank that waits for it. Its timeout ends the wait (`SendTimeout`, nothing
    sent); it then joins the vote, and sends again once the subscriber takes. At size 1 the
    subscriber is on the publisher's rank: `QueueFull` at once."""
    size = world_size()
    receiver = f"node{size - 1}"
    bounded = {receiver: QueueConfig(capacity=2, policy="block", window=2)}
    g = Geode(checkpoint_dir=directory, checkpoint_every=3600.0, queues=bounded)
    topic = g.topic("feed", ["node0"], [receiver])
    if g.hosts("node0"):
        for k in range(2):  # the window
            topic.publish(k, timeout=20.0)
        started = time.monotonic()
        with pytest.raises(SendTimeout if size > 1 else QueueFull) as err:
            topic.publish(2, timeout=2.0)  # (without a timeout: for ever)
        if size > 1:
            assert time.monotonic() - started >= 2.0
            assert f"no room at subscriber {receiver} within 2 s" in str(err.value), err.value
            assert err.value.topic == topic.name and "publish it again" in str(err.value)
    assert g.maybe_checkpoint() is None  # (the subscriber's rank came here first)
    got = []
    if g.hosts(receiver):  # (the subscriber takes first: at size 1 nothing else would)
        got = [g.receive(receiver, timeout=TIMEOUT).data for _ in range(2)]
    if g.hosts("node0"):
        topic.publish(2, timeout=20.0)  # sent again: room once the subscriber took
    if g.hosts(receiver):
        assert [*got, g.receive(receiver, timeout=TIMEOUT).data] == [0, 1, 2]
    g.close(timeout=TIMEOUT)
