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


class _OwnStateError(errors.GeodeError):
    """A user's error with its own state pair (a tuple, leaving out a lock)."""

    def __init__(self, stage: int, detail: str) -> None:
        self.stage, self.detail = stage, detail
        self.lock = threading.Lock()
        super().__init__(f"stage {stage} failed: {detail}")

    def __getstate__(self) -> tuple[int, str]:
        return (self.stage, self.detail)

    def __setstate__(self, state: tuple[int, str]) -> None:
        self.stage, self.detail = state
        self.lock = threading.Lock()


def test_a_users_own_getstate_gives_the_state() -> None:
    """Before: the filtered __dict__ reached its __setstate__, which expected what its own
    __getstate__ returns: the unpickling raised (a task's error came as "not picklable")."""
    back = pickle.loads(pickle.dumps(_OwnStateError(3, "diverged")))
    assert (type(back), back.stage, back.detail, str(back)) == (
        _OwnStateError,
        3,
        "diverged",
        "stage 3 failed: diverged",
    )


class _SlottedError(errors.GeodeError):
    __slots__ = ("code", "unset")

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


def test_attributes_in_slots_travel() -> None:
    """Before: an attribute kept in __slots__ was lost (AttributeError on the copy)."""
    back = pickle.loads(pickle.dumps(_SlottedError("no convergence", 7)))
    assert (back.code, str(back)) == (7, "no convergence")
    assert not hasattr(back, "unset")


def _chain(depth: int) -> errors.GeodeError:
    error = errors.GeodeError("root cause")
    for k in range(depth):
        wrapper = errors.GeodeError(f"stage {k} failed")
        wrapper.wrapped = error  # type: ignore[attr-defined]
        error = wrapper
    return error


def test_a_chain_of_errors_holding_errors_pickles_in_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: each link's trial pickled the rest of the chain, whose links tried again: the
    reductions (and the time) doubled with each link (depth 20: 59 s)."""
    calls = 0
    reduce = errors.GeodeError.__reduce__

    def counted(self: errors.GeodeError) -> tuple[Any, ...]:
        nonlocal calls
        calls += 1
        return reduce(self)

    monkeypatch.setattr(errors.GeodeError, "__reduce__", counted)
    back = pickle.loads(pickle.dumps(_chain(20)))
    depth = 0
    while hasattr(back, "wrapped"):
        back, depth = back.wrapped, depth + 1
    assert (depth, str(back)) == (20, "root cause")
    assert calls <= 2 * 21, calls


class _Record:
    def __init__(self, error: errors.GeodeError) -> None:
        self.error = error


def test_an_attribute_referring_back_keeps_the_cycle_beside_one_that_cannot_pickle() -> None:
    """Before: the back-referring attribute arrived as None whenever the error also had an
    attribute that cannot be pickled (the trial of the record pickled the error's whole
    __dict__, lock included)."""
    error = errors.GeodeError("boom")
    error.record = _Record(error)  # type: ignore[attr-defined]
    error.handle = threading.Lock()  # type: ignore[attr-defined]
    back = pickle.loads(pickle.dumps(error))
    assert back.handle is None
    assert back.record.error is back


def test_two_threads_pickling_one_error_at_once_both_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the errors being tried were one set for every thread: a thread pickling an
    error another thread was trying took it for a trial of its own and pickled its whole
    __dict__ (TypeError: cannot pickle '_thread.lock')."""
    error = errors.GeodeError("shared")
    error.handle = threading.Lock()  # type: ignore[attr-defined]
    inside, release = threading.Event(), threading.Event()

    class _Slow:
        def __reduce__(self) -> tuple[Any, ...]:
            if threading.current_thread().name == "first":
                inside.set()
                release.wait(10)
            return (_Slow, ())

    error.slow = _Slow()  # type: ignore[attr-defined]
    results: dict[str, object] = {}

    def dump(name: str) -> None:
        try:
            results[name] = pickle.loads(pickle.dumps(error)).handle
        except Exception as exc:
            results[name] = exc

    first = threading.Thread(target=dump, args=("first",), name="first")
    first.start()
    assert inside.wait(10)
    dump("second")
    release.set()
    first.join(10)
    assert results == {"first": None, "second": None}


class _OwnReduceError(errors.GeodeError):
    def __init__(self, text: str, handle: object) -> None:
        self.handle = handle
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_OwnReduceError, (self.args[0], self.handle))


def test_an_error_held_as_an_attribute_that_pickles_its_own_way_is_tried_whole() -> None:
    """Before: an error held as an attribute was tried by its class and text only, even when
    its own __reduce__ carried something unpicklable: the whole outer pickle failed (a task's
    error came as a TaskError) instead of that attribute arriving as None."""
    outer = errors.GeodeError("outer")
    outer.inner = _OwnReduceError("inner", threading.Lock())  # type: ignore[attr-defined]
    outer.n = 1  # type: ignore[attr-defined]
    back = pickle.loads(pickle.dumps(outer))
    assert (back.inner, back.n, str(back)) == (None, 1, "outer")
