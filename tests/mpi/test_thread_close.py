"""close() in the main thread while another thread waits in request(), handle.wait() (an
ack), run() or receive(): the waiting thread ends with ClosedError naming its call, and never
touches the freed communicator (MPICH raised "Invalid communicator", Open MPI aborted)."""

from __future__ import annotations

import threading
import time

import pytest

from geode_mpi import ClosedError, Geode, Message, NotProcessed

TIMEOUT = 60.0


@pytest.mark.parametrize("wait", ["request", "ack", "run", "receive"])
def test_close_ends_a_wait_in_another_thread_with_closed_error(wait: str) -> None:
    geode = Geode()
    last = geode.nodes[-1]  # another rank's node, or this one's at size 1
    errors: list[BaseException] = []
    calls = {
        "request": lambda: geode.request(Message("q"), last, timeout=TIMEOUT),
        "ack": lambda: geode.isend("x", dest=last, ack=True).wait(TIMEOUT),
        "run": lambda: geode.run(geode.node, quiescent=False, timeout=TIMEOUT),
        "receive": lambda: geode.receive(geode.node, type="Nothing", timeout=TIMEOUT),
    }

    def waiting() -> None:
        try:
            calls[wait]()  # (nothing answers, acks or comes: it waits until close())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=waiting, daemon=True)  # (daemon: it hung before)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive() and not errors, errors
    if geode.size > 1:  # (every rank checked its thread before any closes)
        from mpi4py import MPI

        MPI.COMM_WORLD.Barrier()
    started = time.monotonic()
    geode.close(timeout=TIMEOUT)
    thread.join(10.0)
    assert not thread.is_alive(), f"{wait} still waits after close()"
    assert time.monotonic() - started < 10.0
    assert len(errors) == 1, errors
    if isinstance(errors[0], NotProcessed):  # (last's rank began close() before this one)
        assert wait in ("request", "ack") and not geode.hosts(last), errors
        assert errors[0].why == "closing"
        return
    assert isinstance(errors[0], ClosedError), errors
    name = {"ack": "wait"}.get(wait, wait)
    assert errors[0].operation == name
    assert errors[0].closer == "MainThread", errors  # (a receive named none)
