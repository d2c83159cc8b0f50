"""asyncio: the awaitable receive, send and waits, over one poller per event loop.

Each operation looks once itself, then awaits the poller of its runtime on the running loop
(`geode_mpi.core.poller`), which drives MPI progress and wakes it once its condition holds. A
coroutine is only woken; it takes its message itself once it runs again, so one cancelled in
between (`asyncio.CancelledError`, `asyncio.wait_for`) has taken nothing, and the message
stays queued for the next receiver.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any, Protocol, TypeVar

from geode_mpi.base.gate import other_threads
from geode_mpi.core.poller import Credits, Driven, poller_of
from geode_mpi.delivery import Engine as DeliveryEngine
from geode_mpi.delivery.run_cursor import RunCursor
from geode_mpi.delivery.tracepoints import trace_receive
from geode_mpi.delivery.waiting import check_close_ended, closing, ended_elsewhere
from geode_mpi.delivery.waiting import check_closing as check_engine_closing
from geode_mpi.errors import ClosedError
from geode_mpi.message import Message
from geode_mpi.queues import Match, Parcel
from geode_mpi.tracing import TRACER

_R = TypeVar("_R")
POLL_EVERY_RECEIVES = 16  # a receive that finds a message queued polls on every 16th call
# ... and one that takes it from a run (`Engine.take_run`) on every 64th: the run's other
# messages are queued already, and a poll (~1.5 us, its probe for arrivals) cost a sixteenth
# of it on every message (round 37)
POLL_EVERY_RUN_RECEIVES = 64
Taken = tuple[Parcel, Any]  # a parcel and its receipt (None: taking it processed it)


class Receiving(Driven, Protocol):
    """What an awaited receive asks of the runtime."""

    receives: int  # (`POLL_EVERY_RECEIVES`)

    @property
    def engine(self) -> DeliveryEngine: ...

    plain_queue: deque[Parcel]  # this rank's node's queue, with automatic acks and no window

    @property
    def queued(self) -> Mapping[int, deque[Parcel]]: ...

    def take(
        self, index: int, match: Match | None, key: Any, timeout: float | None, spun: bool = False
    ) -> Taken | None: ...

    def gone_test(self, index: int, source: str | int | None) -> Callable[[float], bool] | None: ...


def locked(runtime: Driven, call: Callable[..., _R], *args: Any) -> _R:
    """``call(*args)`` holding the gate when other threads exist (as the blocking calls do)."""
    if other_threads() and not runtime.gate.owned():
        return runtime.serialised(call, *args)  # type: ignore[no-any-return]
    return call(*args)


def deadline_of(timeout: float | None) -> float | None:
    """The `time.monotonic` instant a (checked) timeout ends (None: no limit)."""
    return None if timeout is None else time.monotonic() + timeout


async def wait_until(
    runtime: Driven, ready: Callable[[], bool], deadline: float | None, call: str, kick: bool = True
) -> bool:
    """Await ``ready()`` (True) or the deadline (False), checking it once first.

    Raises:
        ClosedError: for ``call`` (the public call that awaits), naming the thread whose
            close() began meanwhile (or before: the Geode is closed and ``ready()`` is not
            True), as a blocking wait's (`geode_mpi.delivery.waiting.Wait.check_closing`):
            what it awaits cannot come once the Geode closes.
    """
    engine = runtime.engine

    def woken() -> bool:
        return ready() or closing(engine) is not None

    while not locked(runtime, ready):
        check_closing(runtime, call)
        if deadline is not None and time.monotonic() >= deadline:
            return False
        if not await poller_of(runtime).until(woken, deadline, kick=kick):
            return bool(locked(runtime, ready))
        kick = False
    return True


def check_closing(runtime: Driven, call: str) -> None:
    """Raise `ClosedError` for ``call`` once close() began in another thread (naming it), or
    once the Geode is closed."""
    check_engine_closing(runtime.engine, call)
    if runtime.closed:  # (closed without close(): an error left its `with` block)
        raise ClosedError(call)


async def sent_by_close_async(
    runtime: Driven, done: Callable[[], bool], deadline: float | None, call: str
) -> bool:
    """`geode_mpi.delivery.waiting.sent_by_close` for asyncio: awaits the close() that began
    in another thread (or in this one, while the send was awaited) completing the send:
    True once ``done()``, False at the deadline, `ClosedError` (``in_flight``) once that
    close() ended with the send not done."""
    import asyncio  # (loaded with the first coroutine: see poller.py)

    engine = runtime.engine
    pause = 20e-6
    while not locked(runtime, done):
        check_close_ended(engine, call)
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await asyncio.sleep(pause)  # (close() runs in another thread: nothing to drive here)
        pause = min(pause * 2, 1e-3)
    return True


async def room(
    runtime: Driven, pair: Credits, source: int, dest: int, deadline: float | None
) -> bool:
    """Await a credit on ``pair`` (room for one more message in node ``dest``'s queue);
    False at the deadline. In one process the credits come back once another coroutine
    receives, so an awaited send waits where a blocking one would raise `QueueFull`. True
    without a credit once ``dest``'s rank is in close() and will serve nothing more of
    ``source``'s (`geode_mpi.delivery.credits.Credits.closed_to`): the send then says so
    (`QueueFull`).

    Raises:
        ClosedError: for ``asend``, once close() began in another thread (`wait_until`).
    """
    if pair.credits is None or pair.credits > 0:
        return True
    engine = runtime.engine

    def has_room() -> bool:
        if not pair.credits:
            engine.flush()  # in one process the receiver's credits may be pending right here
        return (pair.credits or 0) > 0 or engine.closed_to(source, dest, pair)

    return await wait_until(runtime, has_room, deadline, "asend")


async def take(
    runtime: Receiving,
    index: int,
    match: Match | None,
    key: Any,
    timeout: float | None,
    spin: float,
    refused: Callable[[], bool] | None = None,
    call: str | None = None,
    awaited: Collection[int] = (),
    ends: bool = False,
    source: str | int | None = None,
) -> Taken | None:
    """Take the next matching parcel of local node ``index``, awaiting one for up to
    ``timeout`` seconds (None: no limit; 0: do not wait); None if none came, or once the
    runtime is closed and none is queued, or once ``refused()`` (a request's: its receiver
    said it will not process it, no reply comes). ``spin``: seconds to spin on MPI first
    (the blocking receive's first spin, `geode_mpi.core.runtime.FIRST_SPIN`).

    ``awaited``: the ids of the requests whose replies it leaves queued, as `run()` does
    (`Processor.awaited`: a `messages()` loop's; they go to the request that awaits them),
    looked at on every take.

    ``ends``: an `areceive` of a message of node ``source`` (of another rank), which ends
    after one last take once nothing of it can arrive any more (`Runtime.gone_test`, asked
    by its poller's idle looks only: nothing on a take that finds its message). Not one with
    no source: a callback of its event loop (a timer's, a future's) may still send, unseen.

    Raises:
        ClosedError: with ``call`` (a request's, as `Wait`'s ``call``), once close() began
            in another thread, naming it (`check_closing`).
    """
    deadline = deadline_of(timeout)
    queue = runtime.queued[index]
    engine = runtime.engine
    started = time.perf_counter()
    ended = False  # (`idle` said so)
    tests: list[Callable[[float], bool] | None] = []  # `Runtime.gone_test`'s, once asked

    def not_awaited(parcel: Parcel) -> bool:
        return parcel.reply_to not in awaited and (match is None or match(parcel))

    def now() -> Match | None:  # (read holding the gate: a request adds its id holding it)
        return not_awaited if awaited else match

    def ready() -> bool:
        if refused is not None and refused():
            return True
        if call is not None and closing(engine) is not None:
            return True
        if ended_elsewhere(engine):  # (another thread's close() ended unfinished)
            return True
        wanted = now()
        return bool(queue) and (wanted is None or any(wanted(parcel) for parcel in queue))

    def idle() -> bool:  # (the poller's idle looks ask it, holding the gate)
        nonlocal ended
        if not tests:
            tests.append(runtime.gone_test(index, source))
        test = tests[0]
        ended = test is not None and test(started)
        return ended

    def take_now() -> Taken | None:
        return runtime.take(index, now(), key, 0)

    kick = True
    found = locked(runtime, take_now)
    transport = engine.transport
    # A reply in a ping-pong comes within the blocking receive's first spin: spin as long
    # (the loop waits that long at most), before any waiting is set up.
    spun = found is None and timeout != 0 and transport.delivers_later and not runtime.closed
    if spun and locked(runtime, transport.spin, spin):
        found = locked(runtime, take_now)
    while True:
        if found is not None:
            return found
        if call is not None:
            check_closing(runtime, call)
        if runtime.closed or timeout == 0 or ended_elsewhere(engine):
            return None
        if deadline is not None and time.monotonic() >= deadline:
            return None
        if (refused is not None and refused()) or ended:
            return None
        poller = poller_of(runtime)
        # Woken, it takes the parcel itself (next turn): a parcel held back for a retry, or
        # taken by a receive of another thread meanwhile, only means another wait.
        plain = None if now() else queue
        if not await poller.until(ready, deadline, plain, kick, idle if ends else None):
            return locked(runtime, take_now)
        kick = False
        if ended:
            locked(runtime, engine.poll)  # (what the last count covers is here)
        found = locked(runtime, take_now)


async def messages(
    runtime: Receiving,
    index: int,
    match: Match | None,
    deliver: Callable[[int, Taken], Message],
    last: Callable[[Message], bool],
    spin: float,
    awaited: Collection[int] = (),
) -> AsyncIterator[Message]:
    """Every message of local node ``index`` that ``match``es, as it comes, until one for which
    ``last`` is True (not yielded) or the runtime closes with none left (`ClosedError` once
    the close() of another thread ended unfinished: the Geode stays closing). ``awaited``: the ids
    of the requests whose replies it leaves queued for them (`take`)."""
    while True:
        message = None
        if match is None:
            message = locked(runtime, next_of_run, runtime, index, awaited)
        if message is None:
            found = await take(runtime, index, match, None, None, spin, awaited=awaited)
            if found is None:
                closer = runtime.engine.closer
                if closer is not None and ended_elsewhere(runtime.engine):
                    raise ClosedError("messages", closer.name, True)
                return
            message = locked(runtime, deliver, index, found)
        if last(message):
            return
        yield message


def next_of_run(runtime: Receiving, index: int, awaited: Collection[int] = ()) -> Message | None:
    """The next message of the run at the head of local node ``index``'s queue, taken as a
    plain `receive()` takes it (`Engine.take_run`: built with the run's others, no parcel, no
    decode), when `Runtime.take` would take it (automatic acks, no window, not closed, no
    request's reply ``awaited``), with its count of receives and polls; else None."""
    queue = runtime.queued[index]
    if not queue or queue is not runtime.plain_queue or runtime.closed or awaited:
        return None
    head: Any = queue[0].frames
    if head.__class__ is not RunCursor:
        return None
    engine = runtime.engine
    message = engine.take_run(index, head)
    if message is not None:
        runtime.receives += 1
        if not runtime.receives & POLL_EVERY_RUN_RECEIVES - 1:
            engine.poll_after_take()
        if TRACER.on:
            trace_receive(index, message, "receive")
    return message
