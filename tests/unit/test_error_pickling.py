"""geode_mpi's exceptions survive pickling (a task of a `GeodeExecutor` that raises one reaches
its client as itself), and the facts of a publish's errors are kept on them."""

from __future__ import annotations

import copy
import pickle
import threading
import time
from typing import Any

import pytest

import geode_mpi
from geode_mpi import errors

HANDLE = threading.Lock()  # (stands in for a send's handle: it cannot be pickled)

# A realistic instance of each exception class: what the library raises.
MADE: dict[str, Any] = {
    "GeodeError": lambda: errors.GeodeError("something went wrong"),
    "UnknownNodeError": lambda: errors.UnknownNodeError("node9", ["node0", "node1", "node2"]),
    "NodeNotLocalError": lambda: errors.NodeNotLocalError("receive", "node1", 0, 1),
    "EncodeError": lambda: errors.EncodeError(
        "message", dict, TypeError("cannot pickle '_thread.lock' object")
    ),
    "DecodeError": lambda: errors.DecodeError("header version 9 is not 1"),
    "GeodeTimeoutError": lambda: errors.GeodeTimeoutError("close() timed out after 3 s"),
    "ReceiveTimeout": lambda: errors.ReceiveTimeout("node1", 2.0, "node0", "Ping", 3, reply_to=7),
    "SendTimeout": lambda: errors.SendTimeout(-1, "node1", "node2", 8.0, False, topic="news"),
    "AckTimeout": lambda: errors.AckTimeout(
        4, "node0", "node1, node2", 3, 2.0, HANDLE, topic="news", count=2
    ),
    "NotProcessed": lambda: errors.NotProcessed(4, "node0", "node1", 3, "dropped", HANDLE),
    "QueueFull": lambda: errors.QueueFull("node1", "node0", 4, 2, "policy 'raise'"),
    "ClosedError": lambda: errors.ClosedError("receive", "Thread-1", True),
    "Terminated": lambda: errors.Terminated(3.5, 30.0),
    "HandlerError": lambda: errors.HandlerError("node1", 7, "Ask", "ValueError", "bad", 3),
    "ThreadError": lambda: errors.ThreadError("run() is running in thread 'Thread-1'"),
    "WorldMismatchError": lambda: errors.WorldMismatchError("rank 1 has other node names"),
    "CheckpointError": lambda: errors.CheckpointError("ckpt/rank0.h5: not a checkpoint"),
    "WrongPMIError": lambda: errors.WrongPMIError(4, 1, "SLURM_STEP_NUM_TASKS=4"),
    "RestartDirError": lambda: errors.RestartDirError("--restart ckpt2 is not ckpt"),
    "RemoteTraceback": lambda: errors.RemoteTraceback(
        'Traceback (most recent call last):\n  File "t.py", line 1\nValueError: bad\n',
        "node2",
        1,
    ),
    "TaskError": lambda: errors.TaskError("a task raised Oops (not picklable)", "node2", 1),
}


def _classes() -> list[type[BaseException]]:
    """Every exception class geode_mpi exports, and every one errors.py defines."""
    found = {
        value
        for module in (geode_mpi, errors)
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__.startswith("geode_mpi")
    }
    return sorted(found, key=lambda cls: cls.__name__)


def test_every_exception_class_has_a_realistic_instance_here() -> None:
    assert {cls.__name__ for cls in _classes()} == set(MADE)


@pytest.mark.parametrize("name", sorted(MADE))
def test_an_exception_pickles_as_itself(name: str) -> None:
    """14 of them raised TypeError on unpickling (their __init__ takes other arguments than
    the text): a task raising one reached its client as a `TaskError`."""
    error = MADE[name]()
    error.sent = 2  # (a class default an isend_many sets)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error) and again.args == error.args
    facts = {key: value for key, value in vars(error).items() if value is not HANDLE}
    assert {key: value for key, value in vars(again).items() if key in facts} == {
        key: value if not isinstance(value, BaseException) else again.__dict__[key]
        for key, value in facts.items()
    }
    for key, value in vars(error).items():
        if value is HANDLE:
            assert getattr(again, key) is None  # (a handle does not travel)
    if isinstance(error, errors.EncodeError):
        assert repr(again.reason) == repr(error.reason)
    assert str(copy.copy(error)) == str(error)


def test_a_publish_s_errors_keep_how_many_subscribers_they_name() -> None:
    """``count=`` chose the wording but was not kept."""
    late = errors.AckTimeout(1, "p", "a, b", 0, 2.0, topic="t", count=2)
    refused = errors.NotProcessed(1, "p", "a", 0, "closing", topic="t")
    assert (late.count, refused.count) == (2, 1)


def test_a_publish_that_found_no_room_is_worded_as_a_publish() -> None:
    """A publish that waited for room at a subscriber in vain was worded as a send between
    nodes, from "node1 on topic 'news'", with no ``topic``."""
    error = errors.SendTimeout(-1, "node1", "node2", 8.0, in_flight=False, topic="news")
    assert str(error) == (
        "publish by node1 on topic 'news' not sent: no room at subscriber node2 within 8 s "
        "(node2's queue stayed full for topic 'news': is node2 receiving?); no subscriber "
        "got it: publish it again"
    )


def test_a_publish_waiting_for_room_in_vain_raises_it_with_its_topic() -> None:
    """What `reserve_stream` raises for a stream (a publish) at its deadline."""
    g = geode_mpi.Geode()
    news = g.topic("news", publishers=["node0"], subscribers=["node1"])
    number = min(news.numbers)
    error = g._runtime.engine._not_sent(number, 1, 8.0)
    assert (error.topic, error.source, error.dest, error.in_flight) == (
        "news",
        "node0",
        "node1",
        False,
    )
    assert str(error).startswith("publish by node0 on topic 'news' not sent")
    point = g._runtime.engine._not_sent(0, 1, 8.0)
    assert point.topic is None and str(point).startswith("message from node0 to node1 not sent")
    g.close()


class _Holder:
    """An object that refers back to the error holding it (as a handle can)."""

    error: object = None


class _HeldError(errors.GeodeError):
    def __init__(self, text: str, count: int) -> None:
        super().__init__(text)
        self.holders = [_Holder() for _ in range(count)]
        for holder in self.holders:
            holder.error = self


class _StatedError(errors.GeodeError):
    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state, restored=True)


@pytest.mark.timeout(30)
def test_an_error_whose_attributes_refer_back_to_it_pickles_at_once_and_keeps_the_cycle() -> None:
    """Before: each attribute was tried by a pickle of its own, which tried the error's
    attributes again: two attributes referring back to the error hung (exponential)."""
    error = _HeldError("held", 12)
    error.first, error.second = error.holders[0], error.holders[1]
    began = time.perf_counter()
    back = pickle.loads(pickle.dumps(error))
    assert time.perf_counter() - began < 5.0
    assert str(back) == "held" and len(back.holders) == 12
    assert all(holder.error is back for holder in back.holders)
    assert back.first is back.holders[0]


def test_a_users_setstate_on_an_error_is_called() -> None:
    error = _StatedError("text")
    error.code = 3
    back = pickle.loads(pickle.dumps(error))
    assert (back.code, back.restored, str(back)) == (3, True, "text")
