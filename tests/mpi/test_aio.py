"""asyncio under mpiexec (tests/test_mpi_suite.py runs these at 1 to 4 ranks): every local node
exchanges with the next node of a ring, in coroutines driven by one poller per event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import pytest

from geode_mpi import Geode, Message, ReceiveTimeout, Stop

T = TypeVar("T")
TIMEOUT = 60.0  # a loaded machine; every await here ends within it


class Ask(Message):
    pass


class Never(Message):
    pass


class Done(Stop):
    """A Stop of the job's own (a subclass): it ends every loop a Stop ends."""


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), TIMEOUT)

    return asyncio.run(bounded())


def ring(geode: Geode) -> list[tuple[str, str, str]]:
    """(node, the next one, the one before) for each node this rank hosts."""
    nodes = geode.nodes
    out = []
    for node in geode.local_nodes:
        k = nodes.index(node)
        out.append((node, nodes[(k + 1) % len(nodes)], nodes[(k - 1) % len(nodes)]))
    return out


def test_ping_pong_around_the_ring(geode: Geode) -> None:
    async def one(node: str, after: str, before: str) -> list[Any]:
        got = []
        for i in range(50):
            geode.isend((node, i), node, after)
            got.append((await geode.areceive(node, source=before, timeout=TIMEOUT)).data)
        return got

    async def main() -> list[list[Any]]:
        return list(await asyncio.gather(*(one(*hop) for hop in ring(geode))))

    for (_, _, before), got in zip(ring(geode), run(main), strict=True):
        assert got == [(before, i) for i in range(50)]


def test_many_concurrent_awaiters_share_one_poller(geode: Geode) -> None:
    async def main() -> list[list[Any]]:
        hops = ring(geode)
        waiting = [
            [asyncio.create_task(geode.areceive(node, timeout=TIMEOUT)) for _ in range(20)]
            for node, _, _ in hops
        ]
        await asyncio.sleep(0)
        for node, after, _ in hops:
            for i in range(20):
                await geode.isend(i, node, after)
        return [[msg.data for msg in await asyncio.gather(*tasks)] for tasks in waiting]

    for got in run(main):
        assert sorted(got) == list(range(20))


def test_cancelled_and_timed_out_awaits_lose_nothing(geode: Geode) -> None:
    """Receives cancelled by asyncio.wait_for at random points while the messages arrive:
    each message is received once, in order."""

    async def one(node: str, after: str, before: str) -> tuple[list[int], int]:
        for i in range(30):
            geode.isend(i, node, after)
        geode.flush()
        got: list[int] = []
        cancelled = 0
        for attempt in range(100000):
            if len(got) == 30:
                break
            try:
                msg = await asyncio.wait_for(
                    geode.areceive(node, source=before), 0.0002 * (1 + attempt % 7)
                )
            except asyncio.TimeoutError:
                cancelled += 1
                continue
            got.append(msg.data)
        return got, cancelled

    async def main() -> list[tuple[list[int], int]]:
        return list(await asyncio.gather(*(one(*hop) for hop in ring(geode))))

    for got, _ in run(main):
        assert got == list(range(30))


def test_timeouts_raise_receive_timeout(geode: Geode) -> None:
    async def main() -> None:
        for node, _, before in ring(geode):
            with pytest.raises(ReceiveTimeout) as caught:
                await geode.areceive(node, source=before, type=Never, timeout=0.1)
            assert isinstance(caught.value, TimeoutError) and node in str(caught.value)

    run(main)


def test_the_async_iterator_ends_at_stop(geode: Geode) -> None:
    async def one(node: str, after: str, before: str) -> list[Any]:
        for i in range(5):
            geode.isend(i, node, after)
        geode.stop(after, source=node)
        return [msg.data async for msg in geode.messages(node, source=before)]

    async def main() -> list[list[Any]]:
        return list(await asyncio.gather(*(one(*hop) for hop in ring(geode))))

    assert run(main) == [list(range(5))] * len(geode.local_nodes)


def test_a_stop_subclass_ends_a_type_filtered_iterator(geode: Geode) -> None:
    """Sent from the node before (another rank's from 2 ranks on): a loop filtered by type
    ended at no Done(Stop), and waited for ever (here: TIMEOUT)."""

    async def one(node: str, after: str, before: str) -> list[Any]:
        for i in range(5):
            geode.isend(Ask(i), node, after)
        geode.isend(Done(), node, after)
        geode.isend(Ask("after the stop"), node, after)
        return [msg.data async for msg in geode.messages(node, type=Ask)]

    async def main() -> list[list[Any]]:
        return list(await asyncio.gather(*(one(*hop) for hop in ring(geode))))

    assert run(main) == [list(range(5))] * len(geode.local_nodes)
    for node in geode.local_nodes:  # (what came after the stop stays queued)
        assert geode.receive(node, timeout=TIMEOUT).data == "after the stop"


def test_requests_are_served_while_every_rank_awaits_its_own(geode: Geode) -> None:
    @geode.on(Ask)
    def answer(msg: Message) -> Any:
        return (msg.data, msg.dest)

    async def main() -> list[Message]:
        return list(
            await asyncio.gather(
                *(
                    geode.arequest(Ask(node), after, source=node, timeout=TIMEOUT)
                    for node, after, _ in ring(geode)
                )
            )
        )

    for (node, after, _), reply in zip(ring(geode), run(main), strict=True):
        assert (reply.data, reply.source, reply.dest) == ((node, after), after, node)


def test_awaited_handles_of_a_large_send_and_a_publish(geode: Geode) -> None:
    """Acked, so each await lasts until the receiving coroutines, started first, took them."""
    topic = geode.topic("aio-news", [geode.nodes[0]], list(geode.nodes))
    array = np.arange(1 << 18, dtype=np.float64)  # 2 MiB: frames of their own

    async def receiving(node: str) -> tuple[Any, float]:
        news = await geode.areceive(node, topic="aio-news", timeout=TIMEOUT)
        data = await geode.areceive(node, timeout=TIMEOUT)
        return news.data, float(np.asarray(data.data).sum())

    async def main() -> list[Any]:
        receivers = [asyncio.create_task(receiving(node)) for node in geode.local_nodes]
        if geode.hosts(geode.nodes[0]):
            handle = await topic.publish({"n": 1}, geode.nodes[0], ack=True)
            assert handle.acked
        for node, after, _ in ring(geode):
            handle = await geode.isend(array, node, after, ack=True)
            assert handle.done() and handle.acked
        return list(await asyncio.gather(*receivers))

    expected = float(array.sum())
    assert run(main) == [({"n": 1}, expected)] * len(geode.local_nodes)


def test_mixing_with_blocking_calls_on_the_same_thread(geode: Geode) -> None:
    async def main() -> list[list[Any]]:
        hops = ring(geode)
        for node, after, _ in hops:
            geode.send("blocking", node, after)
        got: list[list[Any]] = []
        for node, after, before in hops:
            got.append([(await geode.areceive(node, source=before, timeout=TIMEOUT)).data])
            await geode.asend("awaited", node, after)
        for (node, _, before), seen in zip(hops, got, strict=True):
            seen.append(geode.receive(node, source=before, timeout=TIMEOUT).data)
        return got

    assert run(main) == [["blocking", "awaited"]] * len(geode.local_nodes)


ASLEEP = 5.0  # how long a coroutine awaits something other than geode_mpi
IN_TIME = 3.0  # what its peer waits meanwhile (well inside ASLEEP)


def test_an_isend_then_an_await_of_something_else_still_sends(geode: Geode) -> None:
    """isend holds small messages to batch them; a coroutine that then awaits asyncio.sleep
    (not geode_mpi) must not keep them: its peer receives while it sleeps."""
    if geode.size == 1:  # (one process: nothing is held, the receive below is the check)
        run(lambda: geode.isend("held", dest="node0").wait_async(TIMEOUT))
        assert geode.receive(timeout=0).data == "held"
        return
    if geode.rank == 0:

        async def main() -> None:
            geode.isend("held", dest="node1")
            await asyncio.sleep(ASLEEP)

        run(main)
    elif geode.rank == 1:
        assert geode.receive(source="node0", timeout=IN_TIME).data == "held"


def test_an_areceive_then_an_await_of_something_else_still_acks(geode: Geode) -> None:
    """The ack of a message a coroutine took goes out though it then awaits something else:
    the sender's acked send completes while the coroutine sleeps."""
    if geode.size == 1:
        return  # (one process: the ack is the receive itself, see tests/unit/test_aio.py)
    if geode.rank == 0:

        async def main() -> Any:
            got = await geode.areceive(source="node1", timeout=TIMEOUT)
            await asyncio.sleep(ASLEEP)
            return got.data

        assert run(main) == "acked"
    elif geode.rank == 1:
        # (an isend's ack, unlike a blocking send's, is not served at once: it waits its turn)
        geode.isend("acked", dest="node0", ack=True).wait(IN_TIME)
