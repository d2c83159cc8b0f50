"""Credits in the embedded world: what a send that found no room says, and what it did.

A send to a full ``block`` queue waits only while another thread (not a daemon) could take
from the queue; these tests keep one such thread alive, idle, so that the send waits out its
timeout. The MPI tier runs the same cases across ranks (tests/mpi/test_credits.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from geode_mpi import Geode, QueueConfig, SendTimeout


@pytest.fixture
def idle_thread() -> Iterator[None]:
    """A thread that is not a daemon and does nothing until the test ends."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, args=(30.0,))
    thread.start()
    yield
    stop.set()
    thread.join()


def test_a_send_that_found_no_room_in_time_says_it_was_not_sent(idle_thread: None) -> None:
    g = Geode(queue=QueueConfig(capacity=4, policy="block"))  # a window of 1 per sender
    g.send("first", "node0", "node1")
    with pytest.raises(SendTimeout) as err:
        g.send("second", "node0", "node1", timeout=0.2)
    error = err.value
    assert error.in_flight is False and error.message_id == -1
    assert str(error) == (
        "message from node0 to node1 not sent: no room at node1 within 0.2 s (node1's queue "
        "stayed full for node0: is node1 receiving?); send it again"
    )
    assert "in flight" not in str(error)
    assert g.receive("node1", timeout=1).data == "first"
    assert g.try_receive("node1") is None  # it was not sent: the text says so, truly
    g.send("second", "node0", "node1", timeout=1)  # sent again, as it says
    assert g.receive("node1", timeout=1).data == "second"
    g.close()


def test_a_message_sent_but_not_released_stays_in_flight() -> None:
    error = SendTimeout(7, "node0", "node1", 0.5)
    assert error.in_flight is True
    assert str(error).endswith("within 0.5 s (is node1 receiving?); the message is still in flight")


def test_isend_many_names_the_timeout_it_was_given(idle_thread: None) -> None:
    g = Geode(queue=QueueConfig(capacity=4, policy="block"))
    with pytest.raises(SendTimeout) as err:
        g.isend_many(["a", "b", "c"], dest="node1", timeout=0.2)
    error = err.value
    assert error.sent == 1 and error.in_flight is False
    assert "no room at node1 within 0.2 s" in str(error), str(error)
    assert "isend_many: item 1 of 3 (str)" in str(error)
    assert "items 0..0 were sent; item 1 and the 1 after it were not" in str(error)
    assert [m.data for m in g.receive_many("node1", timeout=1)] == ["a"]
    g.close()
