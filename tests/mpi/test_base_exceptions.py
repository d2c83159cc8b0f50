"""A BaseException that is not an Exception, on every rank: a handler stopped by one
(KeyboardInterrupt, as a Ctrl-C that mpiexec forwards to every rank lands) puts its message
back and a later collective run() processes it once and ends by quiescence; an executor task
raising one fails its own future only; a handler that replied by hand and then raised sends
no second reply."""

from __future__ import annotations

import asyncio

from geode_mpi import Geode, Message, RemoteTraceback

TIMEOUT = 60.0
COUNT = 8


class Work(Message):
    pass


class Ask(Message):
    pass


class GiveUp(BaseException):
    pass


def stopped_task(kind: str) -> None:
    if kind == "cancelled":  # asyncio.run raises CancelledError: its main task was cancelled

        async def cancelled() -> None:
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            await asyncio.sleep(TIMEOUT)

        asyncio.run(cancelled())
    raise KeyboardInterrupt if kind == "interrupt" else GiveUp(kind)


def triple(x: int) -> int:
    return 3 * x


def test_a_handler_stopped_on_every_rank_loses_nothing_and_run_ends_quiescent(
    geode: Geode,
) -> None:
    """Before: the stopped handler's message stayed in hand for ever: it was never processed,
    and the second run() ended by its timeout, not by quiescence ("run() has waited 30 s for
    rank(s) [1] to report idle")."""
    done: dict[tuple[str, str], list[int]] = {}  # (dest, source) -> what was handled
    stopped: list[int] = []

    @geode.on(Work)
    def work(message: Message) -> None:
        if message.data == 3 and message.source == "node0" and not stopped:
            stopped.append(1)
            raise KeyboardInterrupt
        done.setdefault((message.dest, message.source), []).append(message.data)

    me = geode.local_nodes[0]
    for dest in geode.nodes:  # (every rank hosts one at least)
        for i in range(COUNT):
            geode.isend(Work(i), me, dest)
    geode.flush()
    interrupted = False
    try:
        geode.run(timeout=TIMEOUT)
    except KeyboardInterrupt:
        interrupted = True
    assert interrupted  # (a message 3 of node0 waits unprocessed until it is stopped)
    summary = geode.run(timeout=TIMEOUT)
    assert summary.reason == "quiescent"
    assert len(done) == len(geode.local_nodes) * geode.size  # from each rank's first node
    assert all(sorted(data) == list(range(COUNT)) for data in done.values())
    for node in geode.local_nodes:
        assert geode.stats(node).retries == 0 and geode.dead_letters(node) == []


def test_a_handler_that_replied_then_raised_sends_one_reply(geode: Geode) -> None:
    """Before: each retry replied again; the extra replies reached node0's queue as ordinary
    messages."""
    last = geode.nodes[-1]

    @geode.on(Ask, node=last)
    def ask(message: Message) -> None:
        geode.reply(message, ("reply", message.data))
        raise RuntimeError("a step after the reply failed")

    if geode.hosts("node0"):
        assert geode.request(Ask(1), last, timeout=TIMEOUT).data == ("reply", 1)
    assert geode.run(timeout=TIMEOUT).reason == "quiescent"  # (a retry would come first)
    if geode.hosts("node0"):
        assert geode.try_receive("node0") is None
    if geode.hosts(last):
        [dead] = geode.dead_letters(last)
        assert dead.attempts == 1


def test_an_executor_task_raising_a_base_exception_fails_its_future_only(geode: Geode) -> None:
    """Before: on a worker rank it aborted the job ("uncaught exception, aborting the job");
    on the client's rank it failed every pending future with TaskError."""
    with geode.executor() as ex:
        if ex is not None:
            kinds = {"cancelled": asyncio.CancelledError, "interrupt": KeyboardInterrupt}
            for kind in ["cancelled", "interrupt", "own"]:
                futures = [ex.submit(triple, i) for i in range(4)]
                failing = ex.submit(stopped_task, kind)
                futures += [ex.submit(triple, i) for i in range(4, 8)]
                exception = failing.exception(timeout=TIMEOUT)
                assert isinstance(exception, kinds.get(kind, GiveUp))
                assert isinstance(exception.__cause__, RemoteTraceback)
                assert [f.result(timeout=TIMEOUT) for f in futures] == [3 * i for i in range(8)]
