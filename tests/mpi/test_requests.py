"""Request/reply between ranks at any size: every rank requesting at once (a ring, all to all),
requests answered whatever the serving rank waits in, and the SPMD forms of send and work
queues (tests/test_mpi_suite.py runs these at 1 to 4 ranks, tests/test_requests.py at 5)."""

from __future__ import annotations

import time

import pytest

from geode_mpi import (
    DecodeError,
    Geode,
    HandlerError,
    Message,
    NotProcessed,
    QueueConfig,
    ReceiveTimeout,
)

TIMEOUT = 30.0  # a request not served at all times out: long enough for a loaded machine


class Ask(Message):
    pass


class Answer(Message):
    """The handlers' reply: the requester must get this class back, not a plain Message."""


class Go(Message):
    pass


def answering(geode: Geode) -> None:
    @geode.on(Ask)
    def answer(msg: Message) -> Answer:
        return Answer((msg.data, msg.dest))


def job_sum(geode: Geode, value: int) -> int:
    if geode.size == 1:
        return value
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.allreduce(value))


def ring_of_requests(geode: Geode) -> None:
    """Every node requests from the next one at once (`answering`'s handlers reply)."""
    nodes = geode.nodes
    for node in geode.local_nodes:
        after = nodes[(nodes.index(node) + 1) % len(nodes)]
        reply = geode.request(Ask(node), after, source=node, timeout=TIMEOUT)
        assert type(reply) is Answer
        assert (reply.data, reply.source, reply.dest) == ((node, after), after, node)


def test_every_node_requests_from_the_next_one_at_once(geode: Geode) -> None:
    answering(geode)
    ring_of_requests(geode)


@pytest.mark.parametrize("step", ["topic", "work queue", "subscribe", "checkpoint"])
def test_a_collective_step_after_a_ring_of_requests_serves_the_last_ones_first(step: str) -> None:
    # A rank whose own reply came first went on into the collective step while the rank
    # before it still waited for its reply from there: both waited until the timeout (2 ranks,
    # 3 runs in 5 under load). Every collective step now waits for all ranks while serving.
    directory = None
    if step == "checkpoint":
        from mpi4py import MPI
        from test_checkpoints import shared_directory

        directory = shared_directory(MPI.COMM_WORLD.Get_size())
    with Geode(checkpoint_dir=directory) as geode:
        answering(geode)
        topic = geode.topic("first", publishers=geode.nodes[:1], subscribers=geode.nodes[:1])
        for _ in range(3):  # a few turns: which rank leaves its request first varies
            ring_of_requests(geode)
            if step == "topic":
                geode.topic(f"t{_}", publishers=geode.nodes, subscribers=geode.nodes)
            elif step == "work queue":
                geode.work_queue(f"q{_}", consumers=geode.nodes)
            elif step == "subscribe":
                topic.subscribe(geode.nodes[-1])
                topic.unsubscribe(geode.nodes[-1])
            else:
                geode.checkpoint(timeout=TIMEOUT)


def test_every_node_requests_from_every_node_at_once(geode: Geode) -> None:
    answering(geode)
    nodes = geode.nodes
    for node in geode.local_nodes:
        start = nodes.index(node)
        for shift in range(len(nodes)):  # its own node first, then each of the others
            target = nodes[(start + shift) % len(nodes)]
            reply = geode.request(Ask(shift), target, source=node, timeout=TIMEOUT)
            assert type(reply) is Answer and reply.data == (shift, target)


def test_a_request_is_answered_while_its_node_waits_in_receive(geode: Geode) -> None:
    answering(geode)
    first, last = geode.nodes[0], geode.nodes[-1]
    if geode.hosts(first):
        assert geode.request(Ask(1), last, source=first, timeout=TIMEOUT).data == (1, last)
        geode.send(Go(), first, last)
    if geode.hosts(last):  # the Go comes only after the reply: it waits here meanwhile
        assert geode.receive(last, type=Go, timeout=TIMEOUT + 30).source == first


def test_a_request_is_answered_while_its_node_waits_for_an_ack(geode: Geode) -> None:
    answering(geode)
    first, last = geode.nodes[0], geode.nodes[-1]
    handle = geode.isend(Go(), last, first, ack=True)
    if geode.hosts(last) and not geode.hosts(first):
        handle.wait(timeout=TIMEOUT + 30)  # acked only after first got its reply
    if geode.hosts(first):
        assert geode.request(Ask(2), last, source=first, timeout=TIMEOUT).data == (2, last)
        assert geode.receive(first, type=Go, timeout=TIMEOUT).source == last
    handle.wait(timeout=TIMEOUT)
    assert handle.done() and handle.acked


def test_a_request_is_answered_while_its_node_waits_for_a_task(geode: Geode) -> None:
    answering(geode)
    first, last = geode.nodes[0], geode.nodes[-1]
    queue = geode.work_queue("tasks", [last], dispatcher=first, producers=[first])
    if geode.hosts(first):
        assert geode.request(Ask(3), last, source=first, timeout=TIMEOUT).data == (3, last)
        queue.put("the task", first)
        queue.finish(first)
    if geode.hosts(last):
        task = queue.get(last, timeout=TIMEOUT + 30)
        assert task is not None and task.data == "the task"
        assert queue.get(last, timeout=TIMEOUT) is None


def test_a_request_is_answered_by_a_rank_already_in_close() -> None:
    with Geode() as geode:
        answering(geode)
        first, last = geode.nodes[0], geode.nodes[-1]
        if geode.hosts(first):  # last's rank leaves the block at once: close() serves it
            assert geode.request(Ask(4), last, source=first, timeout=TIMEOUT).data == (4, last)


def test_a_send_from_another_ranks_node_returns_a_done_handle(geode: Geode) -> None:
    first, last = geode.nodes[0], geode.nodes[-1]
    handle = geode.isend("x", first, last, ack=True)
    assert handle.local == geode.hosts(first)
    if geode.hosts(last):
        assert geode.receive(last, source=first, timeout=TIMEOUT).data == "x"
    handle.wait(timeout=TIMEOUT)
    assert handle.done() and handle.acked
    sent = geode.send("y", first, last)
    assert sent.done() and (sent.id is None) == (not geode.hosts(first))
    if geode.hosts(last):
        assert geode.receive(last, source=first, timeout=TIMEOUT).data == "y"


@pytest.mark.parametrize("prefetch", [1, 2])
def test_a_work_queue_needs_no_serve_call(prefetch: int) -> None:
    tasks = 24
    with Geode() as geode:
        nodes = geode.nodes
        dispatcher = nodes[0]
        consumers = nodes[1:]
        queue = geode.work_queue("no serve", consumers, producers=[dispatcher], prefetch=prefetch)
        if geode.hosts(dispatcher):
            for k in range(tasks):
                queue.put(k, dispatcher)
            queue.finish(dispatcher)
        got = []
        for node in geode.local_nodes:  # the dispatcher's rank goes on to close() at once
            if node in consumers:
                got += [task.data for task in iter(lambda n=node: queue.get(n, timeout=60), None)]
    assert job_sum(geode, len(got)) == tasks
    assert job_sum(geode, sum(got)) == sum(range(tasks))


def test_ranks_that_request_before_run_still_end_by_quiescence(geode: Geode) -> None:
    """Node0's rank is in run() (sending quiescence waves) while the others still wait for
    their replies: a wave reaching a rank before its first run() waits for it."""
    answering(geode)
    first = geode.nodes[0]
    if not geode.hosts(first):
        assert geode.request(Ask(5), first, timeout=TIMEOUT).data == (5, first)
    summary = geode.run(timeout=TIMEOUT)
    assert summary.reason == "quiescent", summary


def test_a_ring_of_requests_whose_handlers_fail_gets_handler_errors(geode: Geode) -> None:
    """Every node requests from the next one (itself at 1 rank), whose handler raises: each
    requester gets a HandlerError naming the node and the error, well before its timeout,
    where it used to wait for a reply that never came."""

    @geode.on(Ask)
    def refuse(msg: Message) -> None:
        raise ValueError(f"{msg.dest} cannot answer {msg.data}")

    nodes = geode.nodes
    for node in geode.local_nodes:
        after = nodes[(nodes.index(node) + 1) % len(nodes)]
        started = time.monotonic()
        with pytest.raises(HandlerError) as caught:
            geode.request(Ask(node), after, source=node, timeout=TIMEOUT)
        assert time.monotonic() - started < TIMEOUT / 2
        error = caught.value
        assert (error.node, error.type_name, error.error_type, error.attempts) == (
            after,
            "Ask",
            "ValueError",
            3,
        )
        assert (
            f"failed on {after} after 3 attempt(s): ValueError: {after} cannot answer {node}"
            in (str(error))
        )


def test_a_request_whose_handler_returns_none_gets_none_from_another_rank() -> None:
    seen: list[str] = []
    with Geode() as geode:
        geode.on(Ask)(lambda msg: seen.append(msg.data))  # returns None
        nodes = geode.nodes
        for node in geode.local_nodes:
            after = nodes[(nodes.index(node) + 1) % len(nodes)]
            reply = geode.request(Ask(node), after, source=node, timeout=TIMEOUT)
            assert (reply.data, reply.source) == (None, after)
    # close() served the requests still coming: each node was asked once, by the one before
    assert sorted(seen) == sorted(nodes[nodes.index(node) - 1] for node in geode.local_nodes)


def test_a_request_failing_in_a_run_loop_gets_a_handler_error(geode: Geode) -> None:
    """The last node serves in run(count=3) (its three failed attempts); the first one asks
    it (on one rank, the request is answered while it waits)."""
    geode.on(Ask)(lambda msg: 1 // 0)
    first, last = geode.nodes[0], geode.nodes[-1]
    if geode.hosts(first):
        with pytest.raises(HandlerError, match=f"failed on {last} .*ZeroDivisionError"):
            geode.request(Ask(1), last, timeout=TIMEOUT)
    if geode.hosts(last) and not geode.hosts(first):  # (else answered while it waits)
        summary = geode.run(last, count=3, timeout=TIMEOUT)
        assert (summary.failed, summary.dead_letters, summary.reason) == (3, 1, "count")


@pytest.mark.parametrize("take", ["receive", "receive_many", "receive_from"])
def test_a_request_its_server_cannot_decode_in_a_receive_gets_a_handler_error(
    geode: Geode, take: str
) -> None:
    """A request of a class only the requester's rank has, taken by a receive (not run()):
    the receiver raises DecodeError, and the requester is answered with it (it waited for
    ever before: only run() answered an undecodable request)."""
    if geode.size == 1:
        pytest.skip("needs a rank that cannot find the request's class")
    first, last = geode.nodes[0], geode.nodes[-1]
    if geode.hosts(first):
        only_here = type("OnlyOnTheFirstRank", (Message,), {"__module__": __name__})
        globals()["OnlyOnTheFirstRank"] = only_here  # (found by name here, not elsewhere)
        try:
            with pytest.raises(HandlerError, match=f"on {last} .*DecodeError.*OnlyOnTheFirst"):
                geode.request(only_here(1), last, timeout=TIMEOUT)
        finally:
            del globals()["OnlyOnTheFirstRank"]
    if geode.hosts(last):
        with pytest.raises(DecodeError, match="OnlyOnTheFirstRank"):
            if take == "receive":
                geode.receive(last, timeout=TIMEOUT)
            elif take == "receive_from":
                geode.receive(last, source=first, timeout=TIMEOUT)
            else:
                geode.receive_many(last, timeout=TIMEOUT)


def test_a_request_dropped_in_its_receivers_queue_raises_not_processed_at_once() -> None:
    """The last node's full drop_oldest queue (capacity 1, no handler for `Ask`) drops
    node0's request for a message of its own: node0 is told (before: it waited out its
    timeout, `ReceiveTimeout`)."""
    with Geode() as probe:
        size = probe.size
    if size == 1:
        pytest.skip("one process: the request would be dropped before request() waits")
    g = Geode(queue=QueueConfig(capacity=1, policy="drop_oldest"))
    last = g.nodes[-1]
    if g.hosts("node0"):
        started = time.monotonic()
        with pytest.raises(NotProcessed, match=f"{last}'s full drop_oldest queue dropped it"):
            g.request(Ask(1), last, source="node0", timeout=20.0)
        assert time.monotonic() - started < 8.0
    if g.hosts(last):
        deadline = time.monotonic() + TIMEOUT
        while g.stats(last).received < 1:  # (stats() drives progress: the request arrives)
            assert time.monotonic() < deadline, "timed out waiting for node0's request"
        g.send("push", last, last)  # drops the request
        assert g.receive(last, timeout=TIMEOUT).data == "push"
    g.close(timeout=TIMEOUT)


class Slow(Message):
    pass


def slow_last(geode: Geode) -> tuple[str, str]:
    """The first and last nodes, the last with a handler that answers a `Slow` in 0.5 s."""
    nodes = geode.nodes
    first, last = nodes[0], nodes[-1]

    @geode.on(Slow, node=last)
    def slow(msg: Message) -> str:
        time.sleep(0.5)
        return "late"

    return first, last


def test_a_reply_after_its_request_timed_out_waits_in_the_queue_with_the_id_the_error_named() -> (
    None
):
    """A request that gave up said nothing of its reply, which came later and was taken by
    an unrelated receive() as a new message: the error now names the id its reply carries."""
    with Geode() as geode:
        if geode.size == 1:
            pytest.skip("in one process the request's own wait runs the handler: no timeout")
        first, last = slow_last(geode)
        if geode.hosts(first):
            with pytest.raises(ReceiveTimeout) as caught:
                geode.request(Slow(1), last, source=first, timeout=0.05)
            wanted = caught.value.reply_to
            assert wanted is not None and f"reply_to={wanted}" in str(caught.value)
            late = geode.receive(first, source=last, timeout=TIMEOUT)
            assert (late.data, late.reply_to) == ("late", wanted)
        if geode.hosts(last) and not geode.hosts(first):
            geode.run(count=1, timeout=TIMEOUT)


def test_a_late_reply_that_run_finds_is_dead_lettered_as_a_late_reply() -> None:
    """Before: run() dead-lettered it as "no handler for Message on node0: register one
    with @geode.on(Message)" (a probe porting ZeroMQ's Lazy Pirate, at 2 and 4 ranks)."""
    with Geode() as geode:
        first, last = slow_last(geode)
        if geode.hosts(first) and geode.hosts(last):  # one process: the wait runs it
            assert geode.request(Slow(1), last, source=first, timeout=0.05).data == "late"
        elif geode.hosts(first):
            with pytest.raises(ReceiveTimeout) as caught:
                geode.request(Slow(1), last, source=first, timeout=0.05)
            wanted = caught.value.reply_to
        geode.run(timeout=TIMEOUT)  # until quiescent: the reply reaches first's run()
        if geode.hosts(first) and not geode.hosts(last):
            [dead] = geode.dead_letters(first)
            assert dead.message is not None and dead.message.data == "late"
            assert dead.error == (
                f"TimeoutError: late reply from {last} to request {wanted} of {first}: its "
                "request() had stopped waiting (timed out, interrupted or cancelled); a "
                f"receive() at {first} before run() takes such a reply (reply_to={wanted})"
            )
        elif geode.hosts(first):
            assert geode.dead_letters(first) == []  # its reply was the request's
