"""A run() handler that a close() in another thread interrupts while that close() still serves
the other ranks: a handler that had done nothing others can see is called again by the
closing rank, and its requester on another rank gets the reply (nothing lost, no hang); one
that had sent or replied is not called again (that would do it twice): its request fails,
its requester raises `HandlerError`, and what it sent arrives once."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from geode_mpi import (
    ClosedError,
    Geode,
    HandlerError,
    Message,
    QueueConfig,
    QueueFull,
    ReceiveTimeout,
)

TIMEOUT = 60.0


class Ask(Message):
    pass


def _interrupted(geode: Geode, handler: Callable[[Message], Any]) -> tuple[list[str], list[Any]]:
    """On the rank of the last node: run() it with ``handler`` in a thread, and once the
    handler is inside (it sets ``handler.inside``) close() in another thread, named "closer";
    then ``handler.resume`` is set. The handler's calls (thread names) and what run() ended
    with."""
    ended: list[Any] = []
    last = geode.nodes[-1]

    def runner() -> None:
        try:
            ended.append(geode.run(last, quiescent=False, timeout=TIMEOUT))
        except ClosedError as exc:
            ended.append(exc)

    thread = threading.Thread(target=runner, name="runner", daemon=True)
    thread.start()
    assert handler.inside.wait(TIMEOUT)  # type: ignore[attr-defined]
    closer = threading.Thread(target=geode.close, args=(TIMEOUT,), name="closer")
    closer.start()
    time.sleep(0.3)  # (into close()'s serving: rank 0 waits for its reply)
    handler.resume.set()  # type: ignore[attr-defined]
    closer.join(TIMEOUT)
    thread.join(TIMEOUT)
    assert not closer.is_alive() and not thread.is_alive()
    assert geode.stats(last).retries == 0
    return handler.calls, ended  # type: ignore[attr-defined]


def _handler(body: Callable[[Message, int], Any]) -> Callable[[Message], Any]:
    calls: list[str] = []
    inside, resume = threading.Event(), threading.Event()

    def handler(message: Message) -> Any:
        calls.append(threading.current_thread().name)
        return body(message, len(calls))

    handler.calls = calls  # type: ignore[attr-defined]
    handler.inside, handler.resume = inside, resume  # type: ignore[attr-defined]
    return handler


def _rest(geode: Geode) -> list[Any]:
    """What else reaches node 0 (a late duplicate would come within a second or two)."""
    got = []
    while True:
        try:
            message = geode.receive(geode.nodes[0], timeout=3.0)
        except ReceiveTimeout:
            return got
        got.append((message.data, message.reply_to))


def _alone(geode: Geode) -> None:
    if geode.size == 1:  # (alone, close() serves no other rank: nobody waits for a reply)
        geode.close(timeout=TIMEOUT)
        pytest.skip("a requester on another rank is needed")


def test_a_request_whose_handler_close_interrupted_is_answered_by_the_closing_rank() -> None:
    """Its handler did nothing others can see before close() interrupted it: the message was
    put back (or, before, retried) but never handled again: the requester waited out its
    timeout, and the closing rank waited for it in close()."""
    _answered_again(Geode())


def test_a_request_put_back_and_handled_again_returns_one_credit_to_its_sender() -> None:
    """The last node's queue gives each sender a window of one message. Its handler, put
    back untried when close() interrupted it, is taken again by that close(): the second
    take returned a second credit for the one request, and node0 could then send two
    messages into its window of one (no QueueFull at the second)."""
    with Geode() as probe:
        last = probe.nodes[-1]
    geode = Geode(queues={last: QueueConfig(capacity=8, policy="raise", window=1)})

    def after() -> None:
        deadline = time.monotonic() + TIMEOUT
        while geode.stats("node0").unacked:  # (the ack record that says what was taken)
            assert time.monotonic() < deadline, "the request was never acknowledged"
            with contextlib.suppress(ReceiveTimeout):
                geode.receive("node0", timeout=0.05)
        geode.send("first", "node0", last)  # the window's one message
        with pytest.raises(QueueFull):
            geode.send("second", "node0", last)

    _answered_again(geode, after)


def _answered_again(geode: Geode, after: Callable[[], None] = lambda: None) -> None:
    """Node 0 requests of the last node, whose handler close() interrupts before it did
    anything others see: that close() calls it again and node 0 gets its reply, then runs
    ``after()``."""
    _alone(geode)
    last = geode.nodes[-1]
    sent: list[Any] = []  # (an ack=True send made before run(): the handler waits for it)

    def body(message: Message, call: int) -> str:
        if call == 1:  # (in run()'s thread: interrupted by the close() begun meanwhile)
            handler.inside.set()  # type: ignore[attr-defined]
            assert handler.resume.wait(TIMEOUT)  # type: ignore[attr-defined]
            sent[0].wait(TIMEOUT)  # ClosedError
        return f"answered {message.data}"

    handler = _handler(body)
    geode.on(Ask, node=last)(handler)
    if geode.rank == 0:
        reply = geode.request(Ask(1), last, timeout=TIMEOUT)
        assert reply.data == "answered 1"
        after()
        geode.close(timeout=TIMEOUT)
    elif geode.hosts(last):
        sent.append(geode.isend("x", last, geode.nodes[0], ack=True))
        calls, [error] = _interrupted(geode, handler)
        assert calls == ["runner", "closer"]
        assert isinstance(error, ClosedError) and error.closer == "closer"
    else:
        geode.close(timeout=TIMEOUT)


def test_a_handler_close_interrupted_after_it_sent_is_not_called_again() -> None:
    """It sent a message, then a wait in it raised ClosedError: called again by close(), it
    sent that message twice and answered the request."""
    geode = Geode()
    _alone(geode)
    last = geode.nodes[-1]

    def body(message: Message, call: int) -> str:
        geode.send(("side effect", message.data), last, geode.nodes[0])
        if call == 1:
            handler.inside.set()  # type: ignore[attr-defined]
            assert handler.resume.wait(TIMEOUT)  # type: ignore[attr-defined]
            geode.isend("x", last, geode.nodes[0], ack=True).wait(TIMEOUT)  # ClosedError
        return f"answered {message.data}"

    handler = _handler(body)
    geode.on(Ask, node=last)(handler)
    _called_once(geode, handler)


def _called_once(geode: Geode, handler: Any, sent: list[Any] | None = None) -> None:
    """The handler of the last node, which sent a side effect to node 0 before close()
    interrupted it, is not called again: the request fails, the side effect arrives once, the
    request is a dead letter. ``sent``: where an ack=True send made before run() goes."""
    last = geode.nodes[-1]
    if geode.rank == 0:
        with pytest.raises(HandlerError, match="ClosedError.*'closer' began close"):
            geode.request(Ask(1), last, timeout=TIMEOUT)
        effects = [data for data, _ in _rest(geode) if data != "x"]
        assert [tuple(data) for data in effects] == [("side effect", 1)]
        geode.close(timeout=TIMEOUT)
    elif geode.hosts(last):
        if sent is not None:
            sent.append(geode.isend("x", last, geode.nodes[0], ack=True))
        calls, [error] = _interrupted(geode, handler)
        assert calls == ["runner"]
        assert isinstance(error, ClosedError)
        [dead] = geode.dead_letters(last)
        assert isinstance(dead.message, Ask)
    else:
        geode.close(timeout=TIMEOUT)


def test_a_handler_close_interrupted_after_it_replied_is_not_called_again() -> None:
    """It replied by hand, then a wait in it raised ClosedError: called again by close(), it
    replied a second time, a stray reply left in the requester's queue."""
    geode = Geode()
    _alone(geode)
    last = geode.nodes[-1]

    def body(message: Message, call: int) -> None:
        geode.reply(message, f"by hand {call}")
        if call == 1:
            handler.inside.set()  # type: ignore[attr-defined]
            assert handler.resume.wait(TIMEOUT)  # type: ignore[attr-defined]
            geode.isend("x", last, geode.nodes[0], ack=True).wait(TIMEOUT)  # ClosedError

    handler = _handler(body)
    geode.on(Ask, node=last)(handler)
    if geode.rank == 0:
        reply = geode.request(Ask(1), last, timeout=TIMEOUT)
        assert reply.data == "by hand 1"
        assert _rest(geode) == [("x", None)]
        geode.close(timeout=TIMEOUT)
    elif geode.hosts(last):
        calls, _ = _interrupted(geode, handler)
        assert calls == ["runner"]
    else:
        geode.close(timeout=TIMEOUT)


def _world_size() -> int:
    from mpi4py import MPI

    return int(MPI.COMM_WORLD.Get_size())


@pytest.mark.parametrize("how", ["send", "publish"])
def test_a_handler_close_interrupted_after_it_sent_as_another_local_node_is_not_called_again(
    how: str,
) -> None:
    """It sent (or published on a topic) as another node of its rank, then a wait in it
    raised ClosedError: only its own node's messages counted, so the message was put back
    ("before it sent, published or replied") and close() called it again: the side effect
    went out twice."""
    geode = Geode(2 * _world_size())  # (two nodes a rank: the last node's rank hosts another)
    _alone(geode)
    last = geode.nodes[-1]
    other = geode.nodes[geode.size - 1]  # (the other node of the last node's rank)
    topic = geode.topic("effects", publishers=[other], subscribers=[geode.nodes[0]])
    sent: list[Any] = []  # (an ack=True send made before run(): the handler waits for it)

    def body(message: Message, call: int) -> str:
        if how == "send":
            geode.send(("side effect", message.data), other, geode.nodes[0])
        else:
            topic.publish(("side effect", message.data), source=other)
        if call == 1:
            handler.inside.set()  # type: ignore[attr-defined]
            assert handler.resume.wait(TIMEOUT)  # type: ignore[attr-defined]
            sent[0].wait(TIMEOUT)  # ClosedError (nothing of node `last` sent in it)
        return f"answered {message.data}"

    handler = _handler(body)
    geode.on(Ask, node=last)(handler)
    _called_once(geode, handler, sent)


class _Job(Message):
    pass


def test_a_dispatcher_handing_out_tasks_in_a_handler_s_wait_is_not_the_handler_s_doing() -> None:
    """A handler that sent nothing waited in a receive while its rank's work-queue dispatcher
    handed out tasks in that wait's polls, then close() in another thread interrupted it:
    the dispatcher's sends counted as the handler's, so its message was dead-lettered
    ("after it sent") instead of put back."""
    size = _world_size()
    geode = Geode(3 * size)  # (three nodes a rank)
    _alone(geode)
    handler_node, dispatcher, idle = geode.nodes[0], geode.nodes[size], geode.nodes[2 * size]
    producer, consumer = geode.nodes[1], geode.nodes[size + 1]  # (rank 1's)
    queue = geode.work_queue(
        "tasks", consumers=[consumer], dispatcher=dispatcher, producers=[producer]
    )
    if geode.rank == 0:
        dispatched, calls = threading.Event(), []

        @geode.on(_Job, node=handler_node)
        def handle(message: Message) -> None:
            calls.append(message.data)
            while geode.stats(dispatcher).sent < 3:  # (its polls hand the tasks out)
                with contextlib.suppress(ReceiveTimeout):
                    geode.receive(idle, timeout=0.05)
            dispatched.set()
            geode.receive(idle, timeout=TIMEOUT)  # ClosedError once close() begins

        ended: list[Any] = []
        runner = threading.Thread(
            target=lambda: ended.append(_run_until_closed(geode, handler_node)), name="runner"
        )
        runner.start()
        assert dispatched.wait(TIMEOUT)
        closer = threading.Thread(target=geode.close, args=(TIMEOUT,), name="closer")
        closer.start()
        closer.join(TIMEOUT)
        runner.join(TIMEOUT)
        assert calls == [1]
        assert geode.dead_letters(handler_node) == []
    else:
        if geode.rank == 1:
            geode.send(_Job(1), producer, handler_node)
            for k in range(3):
                queue.put(k, source=producer)
            assert sorted(queue.get(consumer, timeout=TIMEOUT).data for _ in range(3)) == [0, 1, 2]
        geode.close(timeout=TIMEOUT)


def _run_until_closed(geode: Geode, node: str) -> Any:
    try:
        return geode.run(node, quiescent=False, timeout=TIMEOUT)
    except ClosedError as exc:
        return exc
