"""close() in the main thread while another thread's send waits, SPMD: close() delivers the
message, so a plain send waiting for its data returns (it raised ClosedError, "nothing it
waits for may come", though its message arrived), and an ack=True send raises ClosedError
with ``in_flight`` True. Rank 0's thread sends to rank 1, which does nothing (so the send
waits) until rank 0's close() has begun: a hook tells when the send waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from geode_mpi import ClosedError, Geode, NotProcessed

TIMEOUT = 60.0
BIG = 1 << 21  # float64 elements (16 MiB): no eager send, its data waits for the receiver


def close_during_send(ack: bool, message: Any) -> tuple[Geode, list[BaseException]]:
    """Rank 0 sends ``message`` to rank 1's node in a thread; once it waits, rank 0 closes
    and then lets rank 1 (waiting on a duplicate communicator) close too."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    side = world.Dup()
    geode = Geode()
    raised: list[BaseException] = []
    if geode.rank == 0:
        waiting = threading.Event()
        runtime = geode._runtime
        runtime.wait_until = hooked(runtime.wait_until, waiting)  # type: ignore[method-assign]

        def sending() -> None:
            try:
                geode.send(message, dest=geode.nodes[1], ack=ack, timeout=TIMEOUT)
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=sending)
        thread.start()
        assert waiting.wait(TIMEOUT), "the send never waited"
        closer = threading.Thread(target=geode.close, kwargs={"timeout": TIMEOUT})
        closer.start()
        deadline = time.monotonic() + TIMEOUT
        while runtime.engine.closer is None and time.monotonic() < deadline:
            closer.join(0.001)  # (close() begins: then rank 1 may take the message)
        side.send("closing", dest=1)
        closer.join(TIMEOUT)
        thread.join(TIMEOUT)
        assert not thread.is_alive() and not closer.is_alive()
    else:
        if geode.rank == 1:
            assert side.recv(source=0) == "closing"
        geode.close(timeout=TIMEOUT)
    side.Free()
    return geode, raised


def hooked(call: Callable[..., Any], waiting: threading.Event) -> Callable[..., Any]:
    """``call`` (the runtime's wait), setting ``waiting`` when a send waits in it."""

    def wait(*args: Any) -> Any:
        if args[-1] == "send":
            waiting.set()
        return call(*args)

    return wait


@pytest.mark.parametrize("repeat", range(3))
def test_a_plain_send_waiting_for_its_data_returns_once_close_delivers_it(repeat: int) -> None:
    geode = Geode()
    size = geode.size
    geode.close()
    if size == 1:
        pytest.skip("needs a second rank to wait for")
    data = np.full(BIG, float(repeat))
    geode, raised = close_during_send(False, data)
    assert raised == [], raised  # (it raised ClosedError: "nothing it waits for may come")
    if geode.rank == 1:
        message = geode.try_receive()
        assert message is not None and np.array_equal(message.data, data)
        assert geode.try_receive() is None


def test_an_ack_send_ended_by_close_says_its_message_was_delivered() -> None:
    geode = Geode()
    size = geode.size
    geode.close()
    if size == 1:
        pytest.skip("needs a second rank to wait for")
    geode, raised = close_during_send(True, "acked?")
    if geode.rank == 0:
        assert len(raised) == 1, raised
        error = raised[0]
        if isinstance(error, NotProcessed):  # (rank 1's close() said so before it ended)
            assert error.why == "closing", error
        else:
            assert isinstance(error, ClosedError), error
            assert error.in_flight is True and "delivered all the same" in str(error)
    if geode.rank == 1:
        message = geode.try_receive()
        assert message is not None and message.data == "acked?"
