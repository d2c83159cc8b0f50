"""Threads in the embedded world and on simulated ranks: every public call from any thread.

Each message carries (thread, k); receivers check the counts and that k increases per
(source, thread). The MPI tier runs the same kind of scenarios across ranks
(tests/mpi/test_threads.py).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from geode_mpi import (
    AckTimeout,
    ClosedError,
    Geode,
    Message,
    QueueConfig,
    QueueFull,
    ThreadError,
)
from geode_mpi.transport import InProcHub

TIMEOUT = 30.0


def run_threads(*targets: Callable[[], Any]) -> None:
    """Run the targets in threads at once; re-raise the first error one of them raised."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], Any]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 2)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    if errors:
        raise errors[0]


def check_stream(got: list[Message], expected: dict[tuple[str, int], int]) -> None:
    """Every (source, thread) sent k = 0..n-1, each once, in that order."""
    seen: dict[tuple[str, int], list[int]] = defaultdict(list)
    for msg in got:
        thread, k = msg.data
        assert msg.source is not None
        seen[(msg.source, thread)].append(k)
    assert {key: len(ks) for key, ks in seen.items()} == expected
    for key, ks in seen.items():
        assert ks == list(range(expected[key])), f"{key}: out of order or duplicated"


def sender(geode: Geode, t: int, count: int, source: str, dest: str) -> Callable[[], None]:
    def loop() -> None:
        for k in range(count):
            geode.send((t, k), source, dest)

    return loop


def test_eight_threads_send_concurrently_nothing_lost_or_reordered() -> None:
    """Without the gate, concurrent sends shared one sequence counter: duplicate sequence
    numbers were dropped by the receiver (and the stats counted them sent)."""
    g = Geode()
    threads, count = 8, 500
    run_threads(*(sender(g, t, count, "node0", "node1") for t in range(threads)))
    assert g.stats("node0").sent == threads * count
    got = [g.receive("node1", timeout=0) for _ in range(threads * count)]
    check_stream(got, {("node0", t): count for t in range(threads)})
    assert g.pending("node1") == 0
    g.close()


def test_receive_waits_for_a_message_another_thread_sends() -> None:
    """In one process, receive() with nothing queued waits while other threads could send."""
    g = Geode()
    threads, count = 4, 200
    got: list[Message] = []

    def receiving() -> None:
        for _ in range(threads * count):
            got.append(g.receive("node2", timeout=TIMEOUT))

    run_threads(receiving, *(sender(g, t, count, f"node{t % 2}", "node2") for t in range(threads)))
    check_stream(got, {(f"node{t % 2}", t): count for t in range(threads)})
    g.close()


def test_receive_in_one_process_still_fails_at_once_without_other_threads() -> None:
    g = Geode()
    with pytest.raises(TimeoutError, match="none can arrive"):
        g.receive("node1", timeout=TIMEOUT)
    g.close()


def test_a_daemon_thread_does_not_make_receive_wait() -> None:
    """A notebook's or a test runner's threads are daemons: they never send, so receive()
    in one process still says at once that nothing can arrive."""
    g = Geode()
    stop = threading.Event()
    daemon = threading.Thread(target=stop.wait, daemon=True)
    daemon.start()
    try:
        with pytest.raises(TimeoutError, match="none can arrive"):
            g.receive("node1", timeout=TIMEOUT)
    finally:
        stop.set()
        daemon.join()
    g.close()


def test_a_full_block_queue_waits_while_another_thread_receives() -> None:
    """In one process, send() to a full ``block`` queue waits while a thread that could take
    from it runs (it raised QueueFull at the fifth message)."""
    g = Geode(nodes=4, queue=QueueConfig(capacity=4, policy="block"))
    got: list[Message] = []

    def receiving() -> None:
        for _ in range(200):
            got.append(g.receive("node2", timeout=TIMEOUT))

    run_threads(receiving, sender(g, 0, 200, "node0", "node2"))
    check_stream(got, {("node0", 0): 200})
    assert g.stats("node2").queue_peak <= 4
    g.close()


def test_a_full_block_queue_fails_once_the_other_threads_have_ended() -> None:
    """The sender waits while another thread runs, and the wait ends with the one-process
    QueueFull as soon as none does (not at the timeout): nothing could take from the queue."""
    g = Geode(nodes=4, queue=QueueConfig(capacity=4, policy="block"))
    g.send(0, "node0", "node2")  # node0's share of the queue (1 of 4: there are 4 senders)
    other = threading.Timer(0.3, lambda: None)  # another thread for 0.3 s, which never receives
    other.start()
    started = time.monotonic()
    with pytest.raises(QueueFull, match="nothing can take from node2's queue .* no other thread"):
        g.send(1, "node0", "node2", timeout=TIMEOUT)
    assert 0.2 < time.monotonic() - started < TIMEOUT / 2  # waited while the other thread ran
    other.join()
    assert g.receive("node2").data == 0
    with pytest.raises(TimeoutError, match="none can arrive"):  # the refused one was not sent
        g.receive("node2", timeout=TIMEOUT)
    g.close()


def test_threads_publish_isend_and_receive_on_two_simulated_ranks() -> None:
    """Two Geodes on one InProcHub share its gate: a send on one runs the other's sink."""
    hub = InProcHub(2)
    geodes = [Geode(4, transport=hub.endpoint(rank)) for rank in range(2)]
    topics = [g.topic("t", publishers=g.nodes, subscribers=g.nodes) for g in geodes]
    count = 100
    by_node = {node: g for g in geodes for node in g.local_nodes}
    got: dict[str, list[Message]] = {node: [] for node in by_node}

    def sending(node: str, t: int) -> Callable[[], None]:
        g = by_node[node]
        topic = topics[geodes.index(g)]

        def loop() -> None:
            handles = []
            for k in range(count):
                for dest in g.nodes:
                    handle = g.isend((t, k), node, dest) if t else g.send((t, k), node, dest)
                    if handle is not None and t:
                        handles.append(handle)
                topic.publish((t, k), node)
            for handle in handles:
                handle.wait(timeout=TIMEOUT)
                assert handle.done()

        return loop

    def receiving(node: str) -> Callable[[], None]:
        g = by_node[node]
        topic = topics[geodes.index(g)]

        def loop() -> None:
            # Direct and topic messages, half of them taken by a receive(topic=...).
            for k in range(2 * len(by_node) * 2 * count):
                topic_filter = topic if k % 2 else None
                got[node].append(g.receive(node, topic=topic_filter, timeout=TIMEOUT))

        return loop

    run_threads(
        *(sending(node, t) for node in by_node for t in (0, 1)),
        *(receiving(node) for node in by_node),
    )
    expected = {(src, t): count for src in by_node for t in (0, 1)}
    for node in by_node:
        check_stream([m for m in got[node] if m.topic is None], expected)
        check_stream([m for m in got[node] if m.topic == "t"], expected)
    for g in geodes:
        g.close()


def test_explicit_acks_from_other_threads() -> None:
    g = Geode(queues={"node1": QueueConfig(ack="explicit")})
    count = 300
    taken: list[Message] = []
    lock = threading.Lock()

    def consuming() -> None:
        for _ in range(count // 3):
            msg = g.receive("node1", timeout=TIMEOUT)
            with lock:
                taken.append(msg)
            msg.ack()

    run_threads(sender(g, 0, count, "node0", "node1"), consuming, consuming, consuming)
    assert sorted(msg.data[1] for msg in taken) == list(range(count))
    assert g.stats("node0").unacked == 0
    g.close()


def test_a_handler_sends_while_other_threads_send() -> None:
    """run() in one thread (its handlers send: reentrant), sends from others meanwhile."""
    g = Geode()
    count = 200
    forwarded: list[Message] = []

    @g.on(Message, node="node1")
    def relay(msg: Message) -> None:
        g.send(msg.data, "node1", "node2")

    def serving() -> None:
        g.run("node1", count=2 * count, timeout=TIMEOUT)

    def collecting() -> None:
        for _ in range(2 * count):
            forwarded.append(g.receive("node2", timeout=TIMEOUT))

    run_threads(serving, collecting, *(sender(g, t, count, "node0", "node1") for t in (0, 1)))
    assert len(forwarded) == 2 * count
    for t in (0, 1):  # relayed by node1 in the order each thread sent them
        ks = [msg.data[1] for msg in forwarded if msg.data[0] == t]
        assert ks == list(range(count))
    g.close()


def test_run_from_a_second_thread_is_refused_at_once() -> None:
    g = Geode()
    inside = threading.Event()
    release = threading.Event()

    @g.on(Message, node="node1")
    def block(msg: Message) -> None:
        inside.set()
        release.wait(TIMEOUT)

    g.send("go", "node0", "node1")
    errors: list[BaseException] = []

    def second() -> None:
        inside.wait(TIMEOUT)
        try:
            g.run("node2", timeout=1)
        except ThreadError as exc:
            errors.append(exc)
        finally:
            release.set()

    thread = threading.Thread(target=second, name="second")
    thread.start()
    g.run("node1", count=1, timeout=TIMEOUT)
    thread.join(TIMEOUT)
    assert len(errors) == 1
    assert "run() was called in thread 'second' while thread 'MainThread' is inside run()" in str(
        errors[0]
    )
    assert isinstance(errors[0], RuntimeError)
    g.close()


@pytest.mark.parametrize("call", ["receive", "receive_many"])
def test_close_ends_a_receive_waiting_in_another_thread(call: str) -> None:
    """It said "receive() on a closed Geode" (closer None), as if called after close(),
    where request() and run() name the thread whose close() ended them."""
    g = Geode()
    errors: list[BaseException] = []
    waiting = threading.Event()

    def receiving() -> None:
        waiting.set()
        try:
            getattr(g, call)("node1", timeout=TIMEOUT)
        except ClosedError as exc:
            errors.append(exc)

    thread = threading.Thread(target=receiving)
    thread.start()
    waiting.wait(TIMEOUT)
    time.sleep(0.2)  # (into its wait: nothing comes)
    g.close(timeout=TIMEOUT)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    [error] = errors
    assert isinstance(error, ClosedError)
    assert (error.operation, error.closer) == (call, "MainThread")
    assert str(error).startswith(f"{call}() was waiting when thread 'MainThread' began close()")
    with pytest.raises(ClosedError) as after:  # called after close(): names no closer
        getattr(g, call)("node1", timeout=TIMEOUT)
    assert after.value.closer is None and "on a closed Geode" in str(after.value)


def test_a_handler_may_wait_for_another_thread_that_sends() -> None:
    """Handlers run without the Geode's lock once other threads exist: a handler that waits
    for another thread's send does not block that thread."""
    g = Geode()
    sent = threading.Event()
    seen: list[Any] = []

    @g.on(Message, node="node1")
    def wait_for_other(msg: Message) -> None:
        seen.append((msg.data, sent.wait(TIMEOUT)))  # False: the other thread was locked out

    def other() -> None:
        g.send("from the other thread", "node0", "node2")
        sent.set()

    g.send("go", "node0", "node1")
    thread = threading.Thread(target=other)
    thread.start()
    summary = g.run("node1", count=1, timeout=TIMEOUT)
    thread.join(TIMEOUT)
    assert seen == [("go", True)]
    assert (summary.processed, summary.failed) == (1, 0)
    assert g.receive("node2", timeout=0).data == "from the other thread"
    g.close()


class Query(Message):
    pass


def test_run_in_one_thread_leaves_the_replies_a_request_in_another_waits_for() -> None:
    """run() serving node0 in one thread must not take (and dead-letter) the replies that a
    request() from node0 waits for in another thread."""
    g = Geode()
    done = threading.Event()
    answers: list[Any] = []

    @g.on(Query, node="node1")
    def answer(msg: Message) -> Any:
        return ("answer", msg.data)

    def serving() -> None:
        g.run("node0", until=done.is_set, timeout=TIMEOUT)

    def asking() -> None:
        try:
            for k in range(100):
                answers.append(g.request(Query(k), "node1", source="node0", timeout=10).data)
        finally:
            done.set()

    run_threads(serving, asking)
    assert answers == [("answer", k) for k in range(100)]
    assert g.dead_letters("node0") == []
    g.close()


@pytest.mark.parametrize("wait", ["request", "send_full", "send_ack", "wait_ack", "run"])
def test_close_ends_every_wait_of_another_thread_with_closed_error(wait: str) -> None:
    """A thread waiting in request(), a send to a full block queue, a send's ack, a handle's
    wait() or run() when the main thread calls close(): ClosedError naming the call, at once
    (they waited for ever before)."""
    g = Geode(queues={"node1": QueueConfig(capacity=4)})
    errors: list[BaseException] = []
    calls = {
        "request": lambda: g.request(Message("q"), "node3", source="node0"),
        "send_full": lambda: [g.send(k, "node0", "node1") for k in range(10)],
        "send_ack": lambda: g.send("x", "node0", "node2", ack=True),
        "wait_ack": lambda: g.isend("x", "node0", "node2", ack=True).wait(),
        "run": lambda: g.run("node3", quiescent=False),
    }

    def waiting() -> None:
        try:
            calls[wait]()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiting, daemon=True)  # (daemon: it hung for ever before)
    thread.start()
    time.sleep(0.3)  # (no message to wait for: the thread is to be inside its wait)
    assert thread.is_alive() and not errors, errors
    started = time.monotonic()
    g.close(timeout=TIMEOUT)
    thread.join(10.0)
    assert not thread.is_alive(), f"{wait} still waits after close()"
    assert time.monotonic() - started < 5.0
    assert len(errors) == 1 and isinstance(errors[0], ClosedError), errors
    name = {"send_full": "send", "send_ack": "send", "wait_ack": "wait"}.get(wait, wait)
    assert errors[0].operation == name
    assert str(errors[0]).startswith(f"{name}() was waiting when thread 'MainThread' began close()")


def test_send_with_ack_waits_for_a_thread_that_receives_in_the_embedded_world() -> None:
    """send(ack=True) in one process while another thread receives at the destination: it
    waits for that thread's receive (AckTimeout at once before), as receive and block sends
    wait for a thread that may send."""
    g = Geode()
    got: list[Any] = []

    def consumer() -> None:
        for _ in range(3):
            got.append(g.receive("node1", timeout=TIMEOUT).data)

    thread = threading.Thread(target=consumer)
    thread.start()
    handles = [g.send(k, "node0", "node1", ack=True, timeout=TIMEOUT) for k in range(3)]
    thread.join(TIMEOUT)
    assert got == [0, 1, 2]
    assert all(handle.acked for handle in handles)
    g.close()


def test_send_with_ack_stops_waiting_once_the_threads_that_could_take_it_end() -> None:
    """... and once no such thread is left, it raises AckTimeout without waiting out its
    timeout (nothing can take the message any more)."""
    g = Geode()
    done = threading.Event()
    thread = threading.Thread(target=done.wait, args=(0.3,))
    thread.start()
    started = time.monotonic()
    with pytest.raises(AckTimeout, match="nothing takes it"):
        g.send("x", "node0", "node1", ack=True, timeout=TIMEOUT)
    assert time.monotonic() - started < 5.0
    thread.join(TIMEOUT)
    assert g.receive("node1", timeout=0).data == "x"
    g.close()
