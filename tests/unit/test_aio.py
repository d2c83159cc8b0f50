"""asyncio in the embedded world: awaited receive, handles, request and a node's messages,
between coroutines of one process (asyncio.run inside each test, no plugin)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from geode_mpi import (
    AckTimeout,
    ClosedError,
    Geode,
    GeodeTimeoutError,
    Message,
    QueueConfig,
    ReceiveTimeout,
    SendHandle,
    Terminated,
)
from geode_mpi.base import backoff
from geode_mpi.core import aio
from geode_mpi.transport import InProcHub

T = TypeVar("T")
LIMIT = 30.0  # every test's coroutines end within this, or the test fails


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), LIMIT)

    return asyncio.run(bounded())


class Ping(Message):
    pass


def test_ping_pong_between_coroutines() -> None:
    with Geode() as g:

        async def pong() -> int:
            answered = 0
            async for msg in g.messages("node1"):
                await g.asend(msg.data + 1, "node1", "node0")
                answered += 1
            return answered

        async def main() -> tuple[list[int], int]:
            task = asyncio.create_task(pong())
            got = []
            for i in range(200):
                g.isend(i, "node0", "node1")
                got.append((await g.areceive("node0", timeout=LIMIT)).data)
            g.stop("node1", source="node0")
            return got, await task

        got, answered = run(main)
        assert got == [i + 1 for i in range(200)]
        assert answered == 200


def test_many_concurrent_awaiters_each_get_one_message() -> None:
    with Geode() as g:

        async def main() -> list[Any]:
            tasks = [asyncio.create_task(g.areceive("node1", timeout=LIMIT)) for _ in range(50)]
            await asyncio.sleep(0)  # all of them wait before anything is sent
            for i in range(50):
                g.isend(i, "node0", "node1")
                if i % 10 == 0:
                    await asyncio.sleep(0.001)
            return [msg.data for msg in await asyncio.gather(*tasks)]

        got = run(main)
        assert sorted(got) == list(range(50))
        assert g.pending("node1") == 0


def test_awaiters_with_filters_get_their_own_messages() -> None:
    with Geode() as g:

        async def main() -> tuple[Any, Any, Any]:
            pings = asyncio.create_task(g.areceive("node1", type=Ping, timeout=LIMIT))
            from2 = asyncio.create_task(g.areceive("node1", source="node2", timeout=LIMIT))
            await asyncio.sleep(0)
            g.isend("plain", "node0", "node1")
            g.isend("from node2", "node2", "node1")
            g.isend(Ping("ping"), "node3", "node1")
            rest = await g.areceive("node1", timeout=LIMIT)
            return (await pings).data, (await from2).data, rest.data

        assert run(main) == ("ping", "from node2", "plain")


def test_cancelled_awaiter_leaves_the_message_queued() -> None:
    with Geode() as g:

        async def main() -> Any:
            waiting = asyncio.create_task(g.areceive("node1"))
            await asyncio.sleep(0.01)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            g.isend("kept", "node0", "node1")
            return (await g.areceive("node1", timeout=LIMIT)).data

        assert run(main) == "kept"


def test_awaiter_cancelled_after_being_woken_takes_nothing() -> None:
    """The race a take-on-behalf design loses: the poller finds the message for a waiter, and
    the waiter is cancelled before it runs again. Here it never took it: the next receive
    gets it (and the cancelled waiter's wake-up passes it on at once)."""
    with Geode() as g:

        async def main() -> tuple[bool, Any, int]:
            woken = asyncio.create_task(g.areceive("node1"))
            other = asyncio.create_task(g.areceive("node1", timeout=LIMIT))
            await asyncio.sleep(0.01)  # both wait, the poller is idle-sleeping
            g.isend("only one", "node0", "node1")
            first = aio.poller_of(g._runtime).waiters[0]  # woken's: it waited first
            deadline = time.monotonic() + LIMIT
            while not first.future.done():  # until a look has woken it
                assert time.monotonic() < deadline, "no look woke the first waiter"
                await asyncio.sleep(0)
            woken.cancel()  # before it ran again to take the message
            with pytest.raises(asyncio.CancelledError):
                await woken
            return woken.cancelled(), (await other).data, g.pending("node1")

        assert run(main) == (True, "only one", 0)


def test_wait_for_timeout_leaves_nothing_behind() -> None:
    with Geode() as g:

        async def main() -> Any:
            for _ in range(20):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(g.areceive("node1"), 0.001)
            assert aio.poller_of(g._runtime).waiters == [] or all(
                w.future.done() for w in aio.poller_of(g._runtime).waiters
            )
            g.isend("after", "node0", "node1")
            return (await g.areceive("node1", timeout=LIMIT)).data

        assert run(main) == "after"


def test_timeout_raises_the_library_timeout_error() -> None:
    with Geode() as g:

        async def main() -> float:
            started = time.monotonic()
            with pytest.raises(ReceiveTimeout) as caught:
                await g.areceive("node2", source="node3", timeout=0.2)
            assert isinstance(caught.value, TimeoutError)
            assert isinstance(caught.value, GeodeTimeoutError)
            assert "node2" in str(caught.value) and "node3" in str(caught.value)
            with pytest.raises(ReceiveTimeout):
                await g.areceive("node2", timeout=0)
            return time.monotonic() - started

        assert 0.2 <= run(main) < 5


def test_async_errors_name_the_async_call() -> None:
    """areceive's timeout and asend without a dest named receive() and send()."""
    with Geode() as g:

        async def main() -> None:
            with pytest.raises(ReceiveTimeout, match=r"^areceive on node2 timed out after 0.1 s"):
                await g.areceive("node2", timeout=0.1)
            with pytest.raises(TypeError, match=r"^asend\(\) needs a dest: asend\(message, dest="):
                await g.asend("x")

        run(main)
    with Geode() as g, pytest.raises(ReceiveTimeout, match=r"^receive on node2 found no message"):
        g.receive("node2", timeout=1)


def test_async_iterator_ends_at_stop_and_at_close() -> None:
    g = Geode()

    async def until_stop() -> list[Any]:
        for i in range(3):
            g.isend(i, "node0", "node1")
        g.stop("node1", source="node0")
        g.isend("after the stop", "node0", "node1")
        return [msg.data async for msg in g.messages("node1")]

    assert run(until_stop) == [0, 1, 2]
    assert g.receive("node1", timeout=0).data == "after the stop"

    async def until_closed() -> list[Any]:
        g.isend("queued", "node0", "node1")

        async def closing() -> None:
            await asyncio.sleep(0.05)
            g.close()

        closer = asyncio.create_task(closing())
        got = [msg.data async for msg in g.messages("node1")]
        await closer
        return got

    assert run(until_closed) == ["queued"]


def test_closed_geode_raises_closed_error() -> None:
    g = Geode()
    g.close()

    async def main() -> None:
        with pytest.raises(ClosedError):
            await g.areceive("node1", timeout=1)

    run(main)


def test_awaited_handles_of_isend_and_publish() -> None:
    with Geode() as g:
        topic = g.topic("news", ["node0"], ["node1", "node2"])

        async def main() -> tuple[SendHandle, list[Any]]:
            handle = await g.isend("x", "node0", "node3")
            published = await topic.publish({"n": 1}, "node0")
            assert published.done()
            got = [
                (await g.areceive(node, topic="news", timeout=LIMIT)).data
                for node in ("node1", "node2")
            ]
            got.append((await g.areceive("node3", timeout=LIMIT)).data)
            return handle, got

        handle, got = run(main)
        assert handle.done() and handle.dest == "node3"
        assert got == [{"n": 1}, {"n": 1}, "x"]


def test_acked_send_completes_once_another_coroutine_takes_it() -> None:
    with Geode() as g:

        async def main() -> tuple[bool, bool]:
            handle = g.isend("needs an ack", "node0", "node1", ack=True)
            with pytest.raises(AckTimeout):
                await handle.wait_async(0.05)  # nobody took it yet: it stays in the outbox

            async def consumer() -> None:
                await asyncio.sleep(0.02)
                await g.areceive("node1", timeout=LIMIT)

            task = asyncio.create_task(consumer())
            await handle
            await task
            return handle.acked, handle.done()

        assert run(main) == (True, True)


def test_request_between_coroutines_and_its_timeout() -> None:
    with Geode() as g:

        @g.on(Ping, node="node2")
        def double(msg: Message) -> int:
            return int(msg.data) * 2

        async def main() -> list[int]:
            replies = await asyncio.gather(
                *(g.arequest(Ping(k), "node2", source="node0", timeout=LIMIT) for k in range(5))
            )
            with pytest.raises(ReceiveTimeout) as caught:
                await g.arequest("nobody answers", "node3", source="node1", timeout=0.1)
            assert "reply to message" in str(caught.value)
            return [reply.data for reply in replies]

        assert run(main) == [0, 2, 4, 6, 8]


def test_mixing_blocking_calls_on_the_same_thread() -> None:
    with Geode() as g:

        async def main() -> list[Any]:
            g.send("blocking send", "node0", "node1")
            first = await g.areceive("node1", timeout=LIMIT)
            await g.asend("awaited send", "node0", "node1")
            second = g.receive("node1", timeout=1)  # a blocking receive inside a coroutine
            waiting = asyncio.create_task(g.areceive("node2", timeout=LIMIT))
            await asyncio.sleep(0.01)
            g.send("to the awaiter", "node0", "node2")
            return [first.data, second.data, (await waiting).data]

        assert run(main) == ["blocking send", "awaited send", "to the awaiter"]


def test_another_thread_sends_while_the_loop_awaits() -> None:
    with Geode() as g:

        def sending() -> None:
            for i in range(100):
                g.send(i, "node0", "node1")

        async def main() -> list[Any]:
            thread = threading.Thread(target=sending)
            thread.start()
            got = [(await g.areceive("node1", timeout=LIMIT)).data for _ in range(100)]
            thread.join(LIMIT)
            return got

        assert run(main) == list(range(100))


def test_send_waits_for_room_in_a_bounded_queue() -> None:
    config = QueueConfig(capacity=8, policy="block")  # a window of 2 per sender
    with Geode(queues={"node1": config}) as g:

        async def consumer() -> list[Any]:
            got = []
            for _ in range(10):
                await asyncio.sleep(0.001)
                got.append((await g.areceive("node1", timeout=LIMIT)).data)
            return got

        async def main() -> list[Any]:
            task = asyncio.create_task(consumer())
            for i in range(10):
                await g.asend(i, "node0", "node1", timeout=LIMIT)
            return await task

        assert run(main) == list(range(10))


def test_two_simulated_ranks_share_one_gate() -> None:
    hub = InProcHub(2)
    g0 = Geode(transport=hub.endpoint(0))
    g1 = Geode(transport=hub.endpoint(1))

    async def main() -> list[Any]:
        async def echo() -> None:
            async for msg in g1.messages():
                await g1.asend(msg.data, dest="node0")

        task = asyncio.create_task(echo())
        got = []
        for i in range(20):
            g0.isend(i, dest="node1")
            got.append((await g0.areceive(timeout=LIMIT)).data)
        g0.stop("node1")
        await task
        return got

    try:
        assert run(main) == list(range(20))
    finally:
        g0.close()
        g1.close()


def test_an_idle_await_backs_off() -> None:
    """Two seconds of awaiting a message that never comes cost little CPU: the poller spins
    for the yield time after the last event, then sleeps longer and longer (up to 1 ms)."""
    with Geode() as g:

        async def main() -> tuple[float, int]:
            poller = aio.poller_of(g._runtime)
            cpu = time.process_time()
            with pytest.raises(ReceiveTimeout):
                await g.areceive("node1", timeout=2.0)
            return time.process_time() - cpu, poller.looks

        cpu, looks = run(main)
        assert cpu < 0.5, f"{cpu:.3f} s of CPU in 2 s of waiting"
        assert looks < 2500, looks  # about one a millisecond once idle


def test_the_poller_stops_looking_once_nothing_awaits() -> None:
    with Geode() as g:

        async def main() -> tuple[int, int]:
            poller = aio.poller_of(g._runtime)
            waiting = asyncio.create_task(g.areceive("node1", timeout=LIMIT))
            await asyncio.sleep(0.01)
            g.isend("wake", "node0", "node1")
            await waiting
            await asyncio.sleep(0.005)  # a look still scheduled runs, sees nobody, stops
            looks = poller.looks
            await asyncio.sleep(0.1)
            return looks, poller.looks

        before, after = run(main)
        assert before > 0 and after == before


def test_a_sigterm_past_its_patience_ends_the_awaits_with_terminated() -> None:
    """The termination hook (installed at a SIGTERM) raises Terminated from a wait's pause:
    the poller's pauses call it too, and every coroutine awaiting then gets it."""

    def too_late() -> None:
        raise Terminated(11.0, 20.0)

    with Geode() as g:

        async def main() -> list[Any]:
            waits = [g.areceive("node1"), g.areceive("node2", timeout=LIMIT)]
            backoff.term_hook.set(too_late)
            try:
                return await asyncio.gather(*waits, return_exceptions=True)
            finally:
                backoff.term_hook.set(None)

        assert [type(outcome) for outcome in run(main)] == [Terminated, Terminated]
