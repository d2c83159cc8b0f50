"""A Message subclass's own ``__getstate__`` and ``__setstate__`` are honoured, as pickle
honours them: through the codec, sent embedded (every lane), and across a checkpoint."""

from __future__ import annotations

import pickle
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mpi"))
from payloads import Locked, Packed, SlotSet, Stateless, Unlocked

from geode_mpi import EncodeError, Geode, Message
from geode_mpi.codec import Stamp, building, classes, decode, encode, own_state, wire
from geode_mpi.transport.base import copy_frame

NAMES = ("node0", "node1")
STAMP = Stamp(id=5, seq=0, timestamp=1.0, source=0, dest=1)
LOCK = type(threading.Lock())


def round_trip(message: Message) -> Any:
    meta, frames = encode(message, STAMP)
    return decode(meta, [copy_frame(f) for f in frames], NAMES)


def check_locked(got: Any, data: Any, label: str) -> None:
    assert type(got) is Locked and got.label == label and got.restored == 1
    assert isinstance(got.lock, LOCK) and got.total == float(np.sum(data))
    assert np.array_equal(got.data, data)
    assert (got.source, got.dest) == ("node0", "node1")


@pytest.mark.parametrize("data", [[1, 2, 3], np.arange(5.0), np.arange(10_000.0)])
def test_setstate_rebuilds_what_getstate_dropped(data: Any) -> None:
    got = round_trip(Locked(data, "a"))
    check_locked(got, data, "a")
    assert got.seq == 0 and got.id == 5


def test_getstate_alone_drops_its_lock_and_keeps_the_rest() -> None:
    got = round_trip(Unlocked(np.arange(3)))
    assert type(got) is Unlocked and got.step == 3 and "lock" not in got.__dict__
    assert np.array_equal(got.data, np.arange(3))


def test_a_state_that_is_not_a_dict_goes_to_setstate_whole() -> None:
    got = round_trip(Packed({"x": np.arange(4)}, 2.5))
    assert type(got) is Packed and got.scale == 2.5 and got.unpacked
    assert np.array_equal(got.data["x"], np.arange(4))


def test_headers_reach_setstate_and_the_message() -> None:
    message = Locked([1.0], "h")
    message.headers = {"units": "K"}
    got = round_trip(message)
    assert got.headers == {"units": "K"} and got.restored == 1


def test_a_getstate_that_raises_is_an_encode_error_naming_it() -> None:
    class Broken(Message):
        def __getstate__(self) -> dict[str, Any]:
            raise ValueError("no state today")

    with pytest.raises(EncodeError, match=r"Broken.__getstate__\(\).*no state today"):
        encode(Broken(1), STAMP)


def test_a_state_that_is_not_a_dict_without_setstate_is_an_encode_error() -> None:
    class Tupled(Message):
        def __getstate__(self) -> tuple[int, int]:
            return (1, 2)

    with pytest.raises(EncodeError, match="returned a tuple, which only a __setstate__"):
        encode(Tupled(1), STAMP)


def test_sent_embedded_again_and_again_every_lane_calls_setstate() -> None:
    """The first send of a class goes the general way, the next ones could take the express
    lane, runs (isend) or the receiver's inline build: each honours the methods."""
    with Geode(nodes=["node0", "node1"]) as geode:
        for step in range(3):
            for data in ([step, 1], np.arange(3.0) + step):
                geode.send(Locked(data, f"s{step}"), "node0", "node1")
                check_locked(geode.receive("node1", timeout=10), data, f"s{step}")
                geode.send(Unlocked(data), "node0", "node1")
                got = geode.receive("node1", timeout=10)
                assert got.step == 3 and "lock" not in got.__dict__
        handles = [geode.isend(Locked([i], "r"), "node0", "node1") for i in range(5)]
        for i, handle in enumerate(handles):
            check_locked(geode.receive("node1", timeout=10), [i], "r")
            handle.wait(timeout=10)


def test_a_queued_message_comes_back_through_setstate_after_a_restart(tmp_path: Path) -> None:
    with Geode(nodes=["node0", "node1"], checkpoint_dir=tmp_path) as geode:
        geode.send(Locked(np.arange(4.0), "saved"), "node0", "node1")
        geode.send(Packed([7], 0.5), "node0", "node1")
        geode.checkpoint()
    with Geode(nodes=["node0", "node1"], checkpoint_dir=tmp_path, restart=True) as again:
        check_locked(again.receive("node1", timeout=10), np.arange(4.0), "saved")
        got = again.receive("node1", timeout=10)
        assert type(got) is Packed and got.data == [7] and got.scale == 0.5 and got.unpacked


class TwoDicts(Message):
    """A state of two dicts that its own ``__setstate__`` unpacks (``d, s = state``)."""

    def __getstate__(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return (dict(self.__dict__), {"extra": 1})

    def __setstate__(self, state: tuple[dict[str, Any], dict[str, Any]]) -> None:
        attributes, more = state
        self.__dict__.update(attributes)
        self.extra = more["extra"]


class PairNoSet(Message):
    """A (dict, slots dict) pair from ``__getstate__``, no ``__setstate__``: pickle's default
    sets the first as attributes, the second by name."""

    __slots__ = ("b",)

    def __getstate__(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return ({"data": self.data, "x": 1}, {"b": 2})


class NoneNoSet(Message):
    def __init__(self, data: Any) -> None:
        super().__init__(data)
        self.lock = threading.Lock()

    def __getstate__(self) -> None:
        return None


class Zero(Message):
    def __getstate__(self) -> int:
        return 0

    def __setstate__(self, state: int) -> None:
        self.got = state


def user_state(message: Any) -> dict[str, Any]:
    """A message's attributes and slots, without data, headers and the metadata."""
    found = {k: v for k, v in vars(message).items() if k not in ("data", "_headers")}
    found.update({k: getattr(message, k) for k in ("a", "b") if hasattr(message, k)})
    for key in ("id", "seq", "timestamp", "source", "dest", "reply_to", "priority", "ttl"):
        found.pop(key, None)
    return found


@pytest.mark.parametrize(
    "make",
    [
        lambda: SlotSet([1, 2], 7),
        lambda: TwoDicts([1]),
        lambda: PairNoSet([3]),
        lambda: Stateless([4]),
        lambda: NoneNoSet([5]),
        lambda: Zero([6]),
    ],
    ids=["slots-setstate", "two-dicts", "pair-no-setstate", "none", "none-no-setstate", "zero"],
)
def test_the_state_arrives_as_pickle_gives_it(make: Any) -> None:
    """What ``__setstate__`` gets (or pickle's default sets) is what pickle would give it;
    data and the metadata arrive whatever the state is."""
    message = make()
    expected = pickle.loads(pickle.dumps(message))
    got = round_trip(message)
    assert type(got) is type(message)
    assert user_state(got) == user_state(expected)
    assert got.data == message.data and (got.id, got.source, got.dest) == (5, "node0", "node1")


def test_a_setstate_for_pickles_slots_pair_is_not_dead_lettered() -> None:
    """Sent embedded (first send, then the lanes a class sent before may take), a
    ``__setstate__`` that unpacks pickle's (dict, slots) pair gets that pair every time."""
    with Geode(nodes=["node0", "node1"]) as geode:
        for step in range(3):
            message = SlotSet(np.arange(3.0) + step, step)
            message.headers = {"step": step}
            geode.send(message, "node0", "node1")
            got = geode.receive("node1", timeout=10)
            assert type(got) is SlotSet and got.a == step and got.restored
            assert np.array_equal(got.data, np.arange(3.0) + step)
            assert got.headers == {"step": step}
            geode.send(Stateless([step]), "node0", "node1")
            got = geode.receive("node1", timeout=10)
            assert type(got) is Stateless and got.data == [step] and "lock" not in vars(got)


def test_data_shared_with_the_state_travels_once() -> None:
    """A ``__getstate__`` that returns a copy of ``__dict__`` holds ``data`` too: one frame."""
    data = np.arange(10_000.0)
    _, frames = encode(Locked(data, "once"), STAMP)
    assert sum(frame.nbytes for frame in frames) == data.nbytes
    check_locked(round_trip(Locked(data, "once")), data, "once")


def test_which_state_methods_a_class_has_is_found_once_per_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Encoding a slotted class and decoding any message on the general path ask a per-class
    cache (the sender's wire names, the receiver's class facts), not
    `classes.state_methods`, once the class is known."""
    calls: list[type] = []

    def counted(cls: type) -> int:
        calls.append(cls)
        return classes.state_methods(cls)

    class Slotted(Message):
        __slots__ = ("s",)

    monkeypatch.setattr(wire, "state_methods", counted)
    monkeypatch.setattr(building, "state_methods", counted)
    for i in range(5):
        plain = Message(i, headers={"k": i})
        assert round_trip(plain).headers == {"k": i}
        slotted = Slotted([i])
        slotted.s = i
        got = round_trip(slotted)
        assert got.s == i
        assert round_trip(Locked([i], "c")).restored == 1
    # (at most once per class on each side: the sender's cache, the receiver's)
    assert max(Counter(calls).values()) <= 2, calls


def test_the_python_310_default_state_is_object_getstate() -> None:
    """Python 3.10 has no ``object.__getstate__``: `own_state._default_state` stands in for it."""

    class Slots(Message):
        __slots__ = ("a", "b")

    bare = Slots([1])
    bare.a = 2
    emptied = Message(None)
    del emptied.data
    for message in (Message([1], headers={"k": 1}), bare, Slots([3]), emptied):
        assert own_state._default_state(message) == object.__getstate__(message)
