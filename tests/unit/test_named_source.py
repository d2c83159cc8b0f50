"""A send or receive that names this rank's own node, or passes a timeout, takes the same
fast case as one that does not (`Geode.send`'s lane, `isend`'s run, `receive`'s queue): the
docs' examples name both ends (``send(x, "node0", "node1")``) and pass timeouts, and each
once went through the general path (a quarter to a third of the rate over MPI)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from test_runs import world

from geode_mpi import Geode, Message, ReceiveTimeout, UnknownNodeError
from geode_mpi.core import facade_sending as facade

SENDS = [
    {"dest": "node1"},
    {"source": "node0", "dest": "node1"},
    {"source": 0, "dest": 1},
    {"dest": 1, "timeout": 5},
    {"source": "node0", "dest": "node1", "timeout": 0},
]


def watched(
    geode: Geode, monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = ("send", "send_plain")
) -> list[str]:
    """The general send path's entries, recorded as they are called (and then run)."""
    # Threads an earlier test left behind (a daemon's) would keep every send off the fast
    # case: only the threads started from now on count.
    before = set(threading.enumerate())
    monkeypatch.setattr(facade, "other_threads", lambda: len(set(threading.enumerate()) - before))
    runtime = geode._runtime  # (what the test watches)
    calls: list[str] = []
    for name in names:
        real = getattr(runtime, name)

        def record(*args: Any, name: str = name, real: Any = real, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(runtime, name, record)
    return calls


@pytest.mark.parametrize("kwargs", SENDS)
def test_send_by_the_lane(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, _ = world()
    a.send("first", dest=kwargs["dest"])  # (the lane is made by a first send to it)
    calls = watched(a, monkeypatch)
    for step in range(3):
        handle = a.send(Message(step), **kwargs)
        assert handle.done() and handle.source == "node0" and handle.dest == "node1"
    assert calls == []
    assert [b.receive(timeout=5).data for _ in range(4)] == ["first", 0, 1, 2]


@pytest.mark.parametrize("kwargs", SENDS)
def test_isend_joins_the_run(kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, _ = world()
    a.isend(-1, dest=kwargs["dest"])  # (the dest's lane, named as below)
    calls = watched(a, monkeypatch, ("send",))  # (`send_plain` opens a run: isend's own)
    handles = [a.isend(step, **kwargs) for step in range(5)]
    a.flush()
    assert calls == [] and all(handle.done() for handle in handles)
    got = [b.receive(timeout=5) for _ in range(6)]
    assert [m.data for m in got] == [-1, 0, 1, 2, 3, 4]
    assert {(m.source, m.dest) for m in got} == {("node0", "node1")}


def test_another_source_or_a_bad_timeout_still_goes_the_general_way() -> None:
    geode = Geode(nodes=3)  # the embedded world: one rank hosts node0..node2
    geode.send("lane", dest="node1")
    assert geode.send("from node2", "node2", "node1").source == "node2"
    with pytest.raises(ValueError, match="timeout must be >= 0, got -1"):
        geode.send("x", dest="node1", timeout=-1)
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None, got True"):
        geode.send("x", dest="node1", timeout=True)
    with pytest.raises(UnknownNodeError, match="unknown source 'node7'"):
        geode.send("x", "node7", "node1")
    got = [geode.receive("node1", timeout=5) for _ in range(2)]
    assert [(m.source, m.data) for m in got] == [("node0", "lane"), ("node2", "from node2")]
    geode.close()


def test_a_source_filter_takes_what_the_general_take_takes_when_the_head_is_not_next() -> None:
    """A queue with a priority or a ttl takes by rank, not arrival: its head may not be what a
    plain take gives, so `receive(source=...)` goes the general way (it once checked the head's
    source, then took another node's message)."""
    geode = Geode(nodes=3)
    geode.send("low", "node1", "node0", priority=-1)
    geode.send("zero", "node2", "node0")
    got = geode.receive(source="node1", timeout=0)
    assert (got.source, got.data) == ("node1", "low")
    geode.send("old", "node1", "node0", ttl=1e-6)
    geode.send("new", "node2", "node0")
    time.sleep(0.01)  # (the ttl runs out: not a wait for a message)
    with pytest.raises(ReceiveTimeout):
        geode.receive(source="node1", timeout=0)
    assert [(m.source, m.data) for m in (geode.receive(timeout=0) for _ in range(2))] == [
        ("node2", "zero"),
        ("node2", "new"),
    ]
    geode.close()


def test_bad_arguments_are_reported_as_before_and_send_nothing() -> None:
    geode = Geode(nodes=2)
    geode.send("queued", dest="node0")
    geode.send("lane", dest="node1")
    with pytest.raises(ValueError, match="timeout must be >= 0, got -1"):
        geode.receive(source="nope", timeout=-1)  # (the timeout first, as the general path)
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
        geode.receive(source="nope", timeout=True)
    with pytest.raises(ValueError, match=r"a float can hold .* an int of 401 digits"):
        geode.send("never", dest="node1", timeout=10**400)  # (refused before it is sent)
    with pytest.raises(ValueError, match="an int of 401 digits"):  # (its queued message stays)
        geode.receive("node0", timeout=10**400)
    with pytest.raises(ValueError, match="an int of 401 digits"):
        geode.receive(timeout=10**400)
    assert geode.stats("node0").sent == 2
    assert [geode.receive(node, timeout=0).data for node in ("node0", "node1")] == [
        "queued",
        "lane",
    ]
    geode.close()
