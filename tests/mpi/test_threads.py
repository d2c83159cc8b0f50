"""Threads: several threads of each rank sending, receiving and publishing at once.

Each message carries (thread, k); receivers check that nothing is lost or duplicated and that
k increases per (source, thread): the per-source FIFO order seen from each sending thread.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from geode_mpi import Geode, Message

TIMEOUT = 60.0


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


def test_four_threads_send_200_each_to_another_rank(geode: Geode) -> None:
    """The issue's case: 4 threads x 200 messages from rank 0 to the last rank's node. Before
    the gate, 600 to 662 of the 800 arrived, and the stats said 800 were sent."""
    threads, count = 4, 200
    target = geode.nodes[-1]
    sender = geode.nodes[0]
    senders = []
    if geode.hosts(sender):

        def send_from(t: int) -> Callable[[], None]:
            def sending() -> None:
                for k in range(count):
                    geode.send((t, k), sender, target)

            return sending

        senders = [send_from(t) for t in range(threads)]
    got: list[Message] = []

    def receiving() -> None:
        for _ in range(threads * count):
            got.append(geode.receive(target, timeout=TIMEOUT))

    run_threads(*senders, *([receiving] if geode.hosts(target) else []))
    if geode.hosts(sender):
        assert geode.stats(sender).sent == threads * count
    if geode.hosts(target):
        check_stream(got, {(sender, t): count for t in range(threads)})
        assert geode.pending(target) == 0


def test_threads_send_isend_and_receive_all_to_all(geode: Geode) -> None:
    """Every local node has two sending threads (one with send, one with isend) to every
    node, and one receiving thread."""
    count = 60
    local = geode.local_nodes
    # Who sends: at several ranks each rank's own node; in one process every node.
    sources = geode.nodes

    def sending(source: str, t: int) -> Callable[[], None]:
        def loop() -> None:
            handles: list[Any] = []
            for k in range(count):
                for dest in geode.nodes:
                    if t == 0:
                        geode.send((t, k), source, dest)
                    else:
                        handle = geode.isend((t, k), source, dest)
                        assert handle is not None
                        handles.append(handle)
            for handle in handles:
                handle.wait(timeout=TIMEOUT)

        return loop

    received: dict[str, list[Message]] = {node: [] for node in local}

    def receiving(node: str) -> Callable[[], None]:
        def loop() -> None:
            for _ in range(len(sources) * 2 * count):
                received[node].append(geode.receive(node, timeout=TIMEOUT))

        return loop

    run_threads(
        *(sending(node, t) for node in local for t in (0, 1)),
        *(receiving(node) for node in local),
    )
    for node in local:
        check_stream(received[node], {(src, t): count for src in sources for t in (0, 1)})


def test_threads_publish_while_others_receive(geode: Geode) -> None:
    count = 100
    publishers = geode.nodes
    topic = geode.topic("threads", publishers=publishers, subscribers=geode.nodes)
    got: dict[str, list[Message]] = {node: [] for node in geode.local_nodes}

    def publishing(source: str, t: int) -> Callable[[], None]:
        def loop() -> None:
            for k in range(count):
                topic.publish((t, k), source)

        return loop

    def receiving(node: str) -> Callable[[], None]:
        def loop() -> None:
            for _ in range(len(publishers) * 2 * count):
                got[node].append(geode.receive(node, topic=topic, timeout=TIMEOUT))

        return loop

    run_threads(
        *(publishing(node, t) for node in geode.local_nodes for t in (0, 1)),
        *(receiving(node) for node in geode.local_nodes),
    )
    for node in geode.local_nodes:
        assert all(msg.topic == "threads" for msg in got[node])
        check_stream(got[node], {(src, t): count for src in publishers for t in (0, 1)})


def test_a_thread_waiting_in_receive_lets_another_send(geode: Geode) -> None:
    """One thread waits in receive() for a reply that comes only after another thread of the
    same rank sends: the waiting thread must not hold the Geode while it waits."""
    me = geode.node
    peer = geode.nodes[
        (geode.nodes.index(me) + 1) % (len(geode.nodes) if geode.size == 1 else geode.size)
    ]
    ready = threading.Event()
    got: list[Message] = []

    def waiting() -> None:
        ready.set()
        got.append(geode.receive(me, source=peer, type=Reply, timeout=TIMEOUT))

    def sending() -> None:
        ready.wait(TIMEOUT)
        geode.send(Ping(), me, peer)
        ping = geode.receive(peer if geode.size == 1 else me, type=Ping, timeout=TIMEOUT)
        geode.send(Reply(ping.source), ping.dest, ping.source)

    run_threads(waiting, sending)
    assert [msg.data for msg in got] == [me]


class Ping(Message):
    pass


class Reply(Message):
    pass


class Query(Message):
    pass


class Finished(Message):
    pass


def test_requests_from_one_thread_while_another_runs_the_handlers(geode: Geode) -> None:
    """Each rank: one thread in run() serves its node's handlers; another sends requests to
    the next rank's node. run() leaves the requester's replies in the queue for it."""
    count = 50
    me = geode.node
    peer = geode.nodes[(geode.nodes.index(me) + 1) % geode.size]
    finished: list[str] = []
    answers: list[Any] = []

    @geode.on(Query)
    def answer(msg: Message) -> Any:
        return ("answer", msg.dest, msg.data)

    @geode.on(Finished)
    def count_finished(msg: Message) -> None:
        assert msg.source is not None
        finished.append(msg.source)

    def serving() -> None:
        geode.run(me, until=lambda: len(finished) == geode.size, timeout=TIMEOUT)

    def asking() -> None:
        for k in range(count):
            answers.append(geode.request(Query(k), peer, source=me, timeout=TIMEOUT).data)
        for node in geode.nodes[: geode.size]:  # each rank's own node
            geode.send(Finished(), me, node)

    run_threads(serving, asking)
    assert answers == [("answer", peer, k) for k in range(count)]
    assert sorted(finished) == sorted(geode.nodes[: geode.size])
    assert geode.dead_letters(me) == []


def test_at_thread_level_multiple_each_geode_keeps_its_own_gate(geode: Geode) -> None:
    """Only below 'multiple' do the Geodes of a process share one gate (tests/
    test_threads_launch.py runs 'serialized'): at 'multiple', two Geodes' threads call MPI at
    once, as before."""
    from mpi4py import MPI

    from geode_mpi.base.gate import PROCESS_GATE

    if MPI.Query_thread() != MPI.THREAD_MULTIPLE:  # the same on every rank of the job
        pytest.skip("this suite runs below thread level 'multiple'")
    with Geode() as other:
        assert geode._gate is not other._gate
        assert PROCESS_GATE not in (geode._gate, other._gate)
