"""A run() handler that a close() in another thread interrupts while that close() still serves
the other ranks: the request it was handling is handled again by the closing rank, and its
requester on another rank gets the reply (nothing lost, no hang)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from geode_mpi import ClosedError, Geode, Message

TIMEOUT = 60.0


class Ask(Message):
    pass


def test_a_request_whose_handler_close_interrupted_is_answered_by_the_closing_rank() -> None:
    """Its message was put back (or, before, retried) but never handled again: the
    requester waited out its timeout, and the closing rank waited for it in close()."""
    geode = Geode()
    if geode.size == 1:  # (alone, close() serves no other rank: nobody waits for a reply)
        geode.close(timeout=TIMEOUT)
        pytest.skip("a requester on another rank is needed")
    last = geode.nodes[-1]
    calls: list[str] = []
    inside, resume = threading.Event(), threading.Event()
    ended: list[Any] = []

    @geode.on(Ask, node=last)
    def answer(message: Message) -> str:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:  # (in run()'s thread: interrupted by the close() begun meanwhile)
            inside.set()
            assert resume.wait(TIMEOUT)
            geode.isend("x", last, geode.nodes[0], ack=True).wait(TIMEOUT)  # ClosedError
        return f"answered {message.data}"

    if geode.rank == 0:
        reply = geode.request(Ask(1), last, timeout=TIMEOUT)
        assert reply.data == "answered 1"
        geode.close(timeout=TIMEOUT)
    elif geode.hosts(last):

        def runner() -> None:
            try:
                ended.append(geode.run(last, quiescent=False, timeout=TIMEOUT))
            except ClosedError as exc:
                ended.append(exc)

        thread = threading.Thread(target=runner, name="runner", daemon=True)
        thread.start()
        assert inside.wait(TIMEOUT)
        closer = threading.Thread(target=geode.close, args=(TIMEOUT,), name="closer")
        closer.start()
        time.sleep(0.3)  # (into close()'s serving: rank 0 waits for its reply)
        resume.set()
        closer.join(TIMEOUT)
        thread.join(TIMEOUT)
        assert not closer.is_alive() and not thread.is_alive()
        assert calls == ["runner", "closer"]
        [error] = ended
        assert isinstance(error, ClosedError) and error.closer == "closer"
        assert geode.stats(last).retries == 0
    else:
        geode.close(timeout=TIMEOUT)
