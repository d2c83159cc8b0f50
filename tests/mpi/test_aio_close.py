"""asyncio and close() under mpiexec: close() in the main thread while a coroutine of another
thread's event loop awaits an ack, a reply or room ends the await with the ClosedError of
its blocking twin (tests/mpi/test_thread_close.py), naming the async call and the closer;
and a node's messages() loop leaves a request's reply to the arequest() that awaits it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from geode_mpi import ClosedError, Geode, Message, NotProcessed, QueueConfig, QueueFull

TIMEOUT = 60.0


class Ask(Message):
    pass


def _barrier(geode: Geode) -> None:
    if geode.size > 1:
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()


@pytest.mark.parametrize("wait", ["wait_async", "asend", "arequest", "asend (room)"])
def test_close_ends_an_await_in_another_thread_with_closed_error(wait: str) -> None:
    """Every rank's node sends to the last node, whose rank takes what comes and never acks
    (``ack="explicit"``) nor replies, or keeps its queue full: each rank's loop awaits until
    close(). The awaited ack
    returned the handle unacknowledged (acked False, lost None); arequest said "on a closed
    Geode" with no closer; asend waiting for room said "isend() on a closed Geode"."""
    probe = Geode()
    last = probe.nodes[-1]  # another rank's node, or this one's at size 1
    probe.close(timeout=TIMEOUT)
    config = QueueConfig(ack="explicit", capacity=probe.size, policy="block", window=1)
    geode = Geode(queues={last: config})
    ended: list[Any] = []
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "wait_async": lambda: geode.isend(Ask("x"), dest=last, ack=True).wait_async(TIMEOUT),
        "asend": lambda: geode.asend(Ask("x"), dest=last, ack=True, timeout=TIMEOUT),
        "arequest": lambda: geode.arequest(Ask("q"), last, timeout=TIMEOUT),
        "asend (room)": lambda: geode.asend("waits for room", dest=last, timeout=TIMEOUT),
    }
    if wait == "asend (room)":  # (fills this node's window at last)
        geode.isend("fills", dest=last).wait(TIMEOUT)

    sent = threading.Event()

    async def main() -> Any:
        task = asyncio.ensure_future(calls[wait]())
        await asyncio.sleep(0)  # (the call runs up to its first await: it has sent)
        sent.set()
        return await task

    def loop() -> None:
        try:
            ended.append(("returned", asyncio.run(main())))
        except BaseException as exc:
            ended.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    assert sent.wait(TIMEOUT)  # (in one process, receive() finds it queued: a daemon thread
    # is no sender it would wait for)
    if geode.hosts(last) and wait != "asend (room)":  # takes them, acking and replying none
        taken = [geode.receive(last, timeout=TIMEOUT) for _ in range(geode.size)]
        assert len(taken) == geode.size
    time.sleep(0.3)  # (into the awaits: nothing they wait for comes)
    assert thread.is_alive() and not ended, ended
    _barrier(geode)  # (every rank checked its loop before any closes)
    started = time.monotonic()
    geode.close(timeout=TIMEOUT)
    thread.join(10.0)
    assert not thread.is_alive(), f"{wait} still awaits after close()"
    assert time.monotonic() - started < 10.0
    assert len(ended) == 1, ended
    error = ended[0]
    if isinstance(error, (NotProcessed, QueueFull)):  # (last's rank began close() first)
        assert wait in ("arequest", "asend (room)") and not geode.hosts(last), error
        return
    assert isinstance(error, ClosedError), error
    assert error.operation == wait.split()[0] and error.closer == "MainThread", error


def test_messages_leaves_the_reply_an_arequest_awaits() -> None:
    """Each even node awaits a request to an odd node of another rank (this one's at size 1)
    while a messages() loop of the same node waits: the loop yielded the reply as a plain
    Message, and the arequest timed out."""
    with Geode() as probe:
        size = probe.size
    with Geode(2 * size) as geode:
        nodes = geode.nodes
        count = len(nodes)
        asking = [node for node in geode.local_nodes if nodes.index(node) % 2 == 0]
        for node in geode.local_nodes:
            if nodes.index(node) % 2:

                @geode.on(Ask, node=node)
                def square(message: Message) -> int:
                    return int(message.data) ** 2

        async def one(node: str) -> tuple[int, list[Any]]:
            async def consumer() -> list[Any]:
                return [message.data async for message in geode.messages(node)]

            task = asyncio.create_task(consumer())
            await asyncio.sleep(0.05)  # (the loop waits)
            dest = nodes[(nodes.index(node) + 3) % count]
            reply = await geode.arequest(Ask(7), dest, source=node, timeout=10)
            geode.stop(node, source=node)
            return int(reply.data), await task

        async def main() -> list[tuple[int, list[Any]]]:
            got = list(await asyncio.gather(*(one(node) for node in asking)))
            # (answers the others' requests until every rank is done: close() serves too)
            return got

        assert asyncio.run(main()) == [(49, [])] * len(asking)
