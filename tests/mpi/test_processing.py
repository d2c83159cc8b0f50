"""Handlers and the run loop at any size: pipelines ending by quiescence, replies, retries."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from geode_mpi import AckTimeout, Geode, Message, QueueConfig

TIMEOUT = 60.0


class Hop(Message):
    """Travels around the ring of nodes until its hop count runs out."""


class Square(Message):
    pass


class Flaky(Message):
    """Fails its first delivery when its data is even; always fails when it is 13."""


class Go(Message):
    pass


def job_sum(geode: Geode, value: int) -> int:
    """``value`` summed over the ranks (the test's own bookkeeping, not geode_mpi's)."""
    if geode.size == 1:
        return value
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.allreduce(value))


def test_a_pipeline_of_handlers_ends_everywhere_by_quiescence(geode: Geode) -> None:
    nodes = geode.nodes
    handled: Counter[str] = Counter()

    @geode.on(Hop)
    def hop(msg: Message) -> None:
        assert msg.dest is not None
        handled[msg.dest] += 1
        hops, grid = msg.data
        assert np.array_equal(grid, np.full(500, float(hops)))
        if hops:
            after = nodes[(nodes.index(msg.dest) + 1) % len(nodes)]
            geode.send(Hop((hops - 1, np.full(500, float(hops - 1)))), msg.dest, after)

    starts, hops = 3, 12
    for node in geode.local_nodes:
        for _ in range(starts):
            after = nodes[(nodes.index(node) + 1) % len(nodes)]
            geode.send(Hop((hops, np.full(500, float(hops)))), node, after)
    summary = geode.run(timeout=TIMEOUT)
    assert summary.reason == "quiescent", summary
    assert summary.failed == 0 and summary.dead_letters == 0
    total = job_sum(geode, sum(handled.values()))
    assert total == len(nodes) * starts * (hops + 1)
    assert summary.processed == sum(handled.values())
    for node in geode.local_nodes:
        assert geode.pending(node) == 0


def test_request_reply_across_ranks(geode: Geode) -> None:
    @geode.on(Square)
    def square(msg: Message) -> int:
        return int(msg.data) ** 2

    if geode.rank == 0:
        for k, node in enumerate(geode.nodes[1:], start=2):
            reply = geode.request(Square(k), node, timeout=TIMEOUT)
            assert reply.data == k * k and reply.source == node and reply.reply_to is not None
        for node in geode.nodes:
            if not geode.hosts(node):
                geode.stop(node)
    else:
        summary = geode.run(timeout=TIMEOUT)
        assert summary.reason == "stopped", summary
        assert summary.replies == len(geode.local_nodes)


@pytest.mark.parametrize("ack", ["auto", "explicit"])
def test_failed_processing_is_retried_then_dead_lettered(ack: str) -> None:
    queue = QueueConfig(ack=ack, max_attempts=3, retry_delay=0.001)
    with Geode(queue=queue) as geode:
        last = geode.nodes[-1]
        seen: list[int] = []

        @geode.on(Flaky)
        def flaky(msg: Message) -> None:
            seen.append(msg.data)
            if msg.data == 13 or (msg.data % 2 == 0 and seen.count(msg.data) == 1):
                raise ValueError(f"cannot process {msg.data}")

        if geode.hosts(geode.nodes[0]):
            for k in range(10, 20):
                geode.send(Flaky(k), geode.nodes[0], last)
        summary = geode.run(timeout=TIMEOUT)
        assert summary.reason == "quiescent", summary
        if geode.hosts(last):
            # Per-source order holds across retries: each failed message came back first.
            expected = []
            for k in range(10, 20):
                expected += [k] * (3 if k == 13 else 2 if k % 2 == 0 else 1)
            assert seen == expected
            (dead,) = geode.dead_letters(last)
            assert dead.message is not None and dead.message.data == 13
            assert dead.attempts == 3 and dead.error == "ValueError: cannot process 13"
            stats = geode.stats(last)
            assert stats.retries == 5 + 2 and stats.dead_letters == 1 and stats.processed == 10


def test_an_ack_timeout_names_the_message_and_the_ack_still_comes(geode: Geode) -> None:
    first, last = geode.nodes[0], geode.nodes[-1]
    if geode.hosts(first):
        with pytest.raises(
            AckTimeout, match=rf"\({first}->{last} seq 0\) was not acknowledged"
        ) as e:
            geode.send("wait for me", first, last, ack=True, timeout=0.3)
        late = e.value.handle
        assert late is not None and not late.acked
        geode.send(Go(), first, last)
    if geode.hosts(last):
        assert geode.receive(last, type=Go, timeout=TIMEOUT).source == first
        assert geode.receive(last, timeout=TIMEOUT).data == "wait for me"  # acks it
    if geode.hosts(first):
        late.wait(timeout=TIMEOUT)  # the ack of the same message, once it was processed
        assert late.acked


def test_a_group_delivers_in_one_total_order_to_every_member(geode: Geode) -> None:
    group = geode.group(geode.nodes, sequencer=geode.nodes[-1])
    per_node = 20
    for node in geode.local_nodes:
        for k in range(per_node):
            group.send({"k": k, "grid": np.full(3000, k)}, node)  # 24 kB: frames out of band
    seen: dict[str, list[tuple[str, int, int]]] = {}
    for node in geode.local_nodes:
        got = []
        for _ in range(per_node * len(geode.nodes)):
            msg = geode.receive(node, timeout=TIMEOUT)
            assert msg.source == group.sequencer and msg.group == group.name
            assert np.array_equal(msg.data["grid"], np.full(3000, msg.data["k"]))
            got.append((msg.origin, msg.data["k"], msg.group_seq))
        assert [seq for _, _, seq in got] == list(range(len(got)))
        for origin in geode.nodes:  # each origin's own messages keep their order
            assert [k for o, k, _ in got if o == origin] == list(range(per_node))
        seen[node] = got
    orders = list(seen.values())
    if geode.size > 1:
        from mpi4py import MPI

        orders = [order for part in MPI.COMM_WORLD.allgather(orders) for order in part]
    assert len(orders) == len(geode.nodes)
    assert all(order == orders[0] for order in orders)  # one order, seen by every member


def test_a_quiescence_wait_names_the_ranks_not_in_run(
    geode: Geode, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from geode_mpi.core import quiescence

    monkeypatch.setattr(quiescence, "STUCK_WAVE", 0.2)
    last = geode.size - 1
    if geode.rank == last and geode.size > 1:
        time.sleep(1.0)  # busy elsewhere: not in run() yet
    with caplog.at_level("WARNING", logger="geode_mpi"):
        summary = geode.run(timeout=TIMEOUT)
    assert summary.reason == "quiescent"
    if geode.rank == 0 and geode.size > 1:
        assert "to report idle" in caplog.text and f"rank(s) [{last}]" in caplog.text


def test_a_stop_is_not_held_back_while_the_sender_blocks_elsewhere(geode: Geode) -> None:
    """Only isend batches: a stop (or a send, reply, group send) goes out before it returns."""
    last = geode.nodes[-1]
    if geode.rank == 0:
        geode.stop(last)
    if geode.hosts(last):
        assert geode.run(last, timeout=TIMEOUT, quiescent=False).reason == "stopped"
    if geode.size > 1:
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()  # rank 0 blocks here, outside geode_mpi, right after stop()


class Noted(Message):
    pass


def test_a_waited_for_message_is_processed_after_the_older_ones_of_its_source() -> None:
    """Per-source FIFO between a plain message and a later one sent with ack=True, both with
    a handler, while the receiver waits elsewhere: the wait serves the waited-for one, and the
    older one before it (it was served alone, first)."""
    geode = Geode()
    first, last = geode.nodes[0], geode.nodes[-1]  # (one node at 1 rank: a send to itself)
    order: list[int] = []
    geode.on(Noted)(lambda message: order.append(message.data))
    if geode.hosts(first):
        geode.send(Noted(1), source=first, dest=last)
        handle = geode.isend(Noted(2), source=first, dest=last, ack=True)
        geode.send(Go("go"), source=first, dest=last)
        if geode.size > 1:
            handle.wait(timeout=TIMEOUT)
    if geode.hosts(last):
        geode.receive(last, type=Go, timeout=TIMEOUT)  # a wait: it serves the waited-for one
        if len(order) < 2:  # (what the wait left, a run takes)
            geode.run(last, count=2 - len(order), timeout=TIMEOUT)
        assert order == [1, 2]
    geode.close(timeout=TIMEOUT)
