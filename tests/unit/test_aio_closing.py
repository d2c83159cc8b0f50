"""asyncio and close(), embedded: an await ended by close() raises what its blocking twin
raises, naming the async call and the closing thread; a node's messages() loop leaves a
request's reply for the request, and ends at a Stop whatever its filter."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_aio import LIMIT, run

from geode_mpi import (
    ClosedError,
    Geode,
    Message,
    QueueConfig,
    ReceiveTimeout,
    SendHandle,
    Stop,
)

WAITED = "was waiting when thread {!r} began close()"


class Job(Message):
    pass


class Square(Message):
    pass


class Done(Stop):
    """A Stop of the job's own (a subclass): it ends every loop a Stop ends."""


def test_an_ack_send_awaited_after_close_raises_as_wait_does() -> None:
    """Its ack never came: `await handle` returned the handle, unacknowledged, as if done."""
    g = Geode()
    handle = g.isend(Job(1), "node0", "node2", ack=True)  # (nobody takes it)
    g.close()
    with pytest.raises(ClosedError) as blocking:
        handle.wait(1)
    assert blocking.value.operation == "wait" and blocking.value.closer == "MainThread"

    async def main() -> list[ClosedError]:
        errors = []
        for waiting in (handle.wait_async(), handle.wait_async(1), handle):
            with pytest.raises(ClosedError) as caught:
                await waiting
            errors.append(caught.value)
        return errors

    for error in run(main):
        assert error.operation == "wait_async" and error.closer == "MainThread"
        assert str(error).startswith("wait_async() " + WAITED.format("MainThread"))
    assert not handle.acked and handle.lost is None


def _awaits_ended_by_close(geode: Geode, calls: dict[str, Callable[[], Awaitable[Any]]]) -> dict:
    """Run ``calls`` as tasks, close ``geode`` from a thread named "closer" while they await,
    and give what each ended with (its error, or ("returned", value))."""
    ended: dict[str, Any] = {}

    async def main() -> None:
        tasks = {name: asyncio.create_task(call()) for name, call in calls.items()}
        await asyncio.sleep(0.2)  # (into their waits: nothing they wait for comes)
        assert not any(task.done() for task in tasks.values())
        closer = threading.Thread(target=geode.close, name="closer")
        closer.start()
        for name, task in tasks.items():
            try:
                ended[name] = ("returned", await asyncio.wait_for(task, 10))
            except (ClosedError, ReceiveTimeout, asyncio.TimeoutError) as exc:
                ended[name] = exc
        closer.join(LIMIT)

    run(main)
    return ended


def test_close_in_another_thread_ends_each_await_as_its_blocking_twin() -> None:
    """An awaited ack came back done (`await handle`, `asend(ack=True)`), an asend waiting
    for room raised SendTimeout "within 0 s", an arequest ClosedError naming no closer: each
    now raises the ClosedError of its blocking twin, naming the async call and the closer."""
    g = Geode(queues={"node3": QueueConfig(capacity=4, policy="block", window=1)})

    async def acked() -> SendHandle:
        return await g.isend(Job(2), "node0", "node2", ack=True)

    async def full() -> SendHandle:
        g.isend("fills node0's window at node3", "node0", "node3")
        return await g.asend("waits for room", "node0", "node3")

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "wait_async": acked,
        "asend": lambda: g.asend(Job(3), "node1", "node2", ack=True),
        "asend (room)": full,
        "arequest": lambda: g.arequest(Job(4), "node2", source="node0"),  # (no handler)
        # (it named no closer: "areceive() on a closed Geode", as if called after close())
        "areceive": lambda: g.areceive("node1", timeout=LIMIT),
    }
    ended = _awaits_ended_by_close(g, calls)
    for name in calls:
        error = ended[name]
        assert isinstance(error, ClosedError), (name, error)
        call = name.split()[0]
        assert error.operation == call and error.closer == "closer", (name, error)
        assert str(error).startswith(f"{call}() " + WAITED.format("closer")), error


def test_async_calls_on_a_closed_geode_name_themselves() -> None:
    """asend and arequest said "isend() on a closed Geode": a call the user did not make."""
    g = Geode()
    g.close()

    async def main() -> list[ClosedError]:
        errors = []
        for call in (
            lambda: g.asend("x", "node0", "node1"),
            lambda: g.arequest(Job(1), "node1", source="node0", timeout=1),
        ):
            with pytest.raises(ClosedError) as caught:
                await call()
            errors.append(caught.value)
        return errors

    assert [error.operation for error in run(main)] == ["asend", "arequest"]


def _reply_kept_for_the_request(geode: Geode, request: Callable[[], Awaitable[int]]) -> None:
    """A messages() loop of node0 waits when node0's request goes: the reply goes to the
    request, and the loop yields nothing."""

    @geode.on(Square, node="node1")
    def square(message: Message) -> int:
        return int(message.data) ** 2

    async def main() -> tuple[int, list[Any]]:
        async def consumer() -> list[Any]:
            return [message async for message in geode.messages("node0")]

        task = asyncio.create_task(consumer())
        await asyncio.sleep(0.05)  # (the loop waits)
        answer = await request()
        geode.stop("node0", source="node0")
        return answer, await task

    assert run(main) == (49, [])


def test_messages_leaves_the_reply_an_arequest_awaits() -> None:
    """It yielded the reply as a plain Message; the arequest then timed out."""
    with Geode() as g:

        async def request() -> int:
            reply = await g.arequest(Square(7), "node1", source="node0", timeout=5)
            return int(reply.data)

        _reply_kept_for_the_request(g, request)


def test_messages_leaves_the_reply_a_request_in_another_thread_waits_for() -> None:
    with Geode() as g:

        async def request() -> int:
            got: list[int] = []

            def blocking() -> None:
                got.append(g.request(Square(7), "node1", source="node0", timeout=5).data)

            thread = threading.Thread(target=blocking)
            thread.start()
            while thread.is_alive():  # (the loop keeps running meanwhile)
                await asyncio.sleep(0.01)
            return got[0]

        _reply_kept_for_the_request(g, request)


@pytest.mark.parametrize("stop", ["Stop", "Done"])
@pytest.mark.parametrize("kind", ["type", "source", "topic"])
def test_a_filtered_messages_loop_ends_at_a_stop(kind: str, stop: str) -> None:
    """The Stop (from node0) did not pass the filter: the loop went on, the Stop queued. A
    `Done(Stop)` ended no loop filtered by type or topic (its test compared the class name
    with Stop's), which took the message after it too."""
    with Geode() as g:
        topic = g.topic("jobs", ["node2"], ["node1"])
        kw: dict[str, Any] = {"type": Job, "source": "node2", "topic": "jobs"}
        others = {"type": "not a Job", "source": "from node3", "topic": "not published"}

        async def main() -> list[Any]:
            async def consumer() -> list[Any]:
                filters = {kind: kw[kind]}
                return [message.data async for message in g.messages("node1", **filters)]

            task = asyncio.create_task(consumer())
            for i in (1, 2):
                if kind == "topic":
                    topic.publish(Job(i), "node2")
                else:
                    g.isend(Job(i), "node2", "node1")
            g.isend(others[kind], "node3", "node1")
            await asyncio.sleep(0.05)
            started = time.monotonic()
            stopper = "node2" if kind == "source" else "node0"
            if stop == "Done":
                g.isend(Done(), stopper, "node1")
            else:
                g.stop("node1", source=stopper)
            g.isend(Job("after the stop"), "node2", "node1")
            got = await asyncio.wait_for(task, 5)
            assert time.monotonic() - started < 5
            return got

        assert run(main) == [1, 2]
        left = sorted(g.receive("node1", timeout=0).data for _ in range(2))
        assert left == sorted([others[kind], "after the stop"])


def test_a_loop_of_one_sources_messages_ends_at_its_stop_and_leaves_the_others() -> None:
    """Draining each producer until its own Stop: a loop filtered by source ended at another
    producer's Stop (and took it), leaving its own source's later messages queued."""
    with Geode() as g:

        async def main() -> tuple[list[Any], list[Any]]:
            g.send(("a", 0), "node1", "node0")
            g.send(("b", 0), "node2", "node0")
            g.stop("node0", source="node2")  # node2 is done
            g.send(("a", 1), "node1", "node0")
            g.stop("node0", source="node1")
            first = [m.data async for m in g.messages("node0", source="node1")]
            second = [m.data async for m in g.messages("node0", source="node2")]
            return first, second

        assert run(main) == ([("a", 0), ("a", 1)], [("b", 0)])
        assert g.pending("node0") == 0


def test_a_loop_of_one_source_ends_at_its_own_stop_subclass_only() -> None:
    """Another source's Done stays queued for its own loop; the source's own Done ends it."""
    with Geode() as g:

        async def main() -> tuple[list[Any], list[Any]]:
            g.send(Job(("a", 0)), "node1", "node0")
            g.send(Done(), "node2", "node0")
            g.send(Job(("a", 1)), "node1", "node0")
            g.send(Done(), "node1", "node0")
            g.send(Job(("a", 2)), "node1", "node0")
            first = [m.data async for m in g.messages("node0", source="node1", type=Job)]
            second = [m.data async for m in g.messages("node0", source="node2", type=Job)]
            return first, second

        assert run(main) == ([("a", 0), ("a", 1)], [])
        assert g.receive("node0", timeout=0).data == ("a", 2)
        assert g.pending("node0") == 0


def test_a_stop_subclass_ends_run_as_a_stop_does() -> None:
    """The blocking loop: run() ends at a Done, reason "stopped", leaving what came after."""
    with Geode() as g:
        handled: list[Any] = []
        g.on(Job, node="node1")(lambda message: handled.append(message.data))
        g.send(Job(1), "node0", "node1")
        g.send(Done(), "node0", "node1")
        g.send(Job(2), "node0", "node1")
        summary = g.run("node1", timeout=5)
        assert (summary.reason, handled) == ("stopped", [1])
        assert g.pending("node1") == 1
