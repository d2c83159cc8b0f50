"""A structured dtype made with ``align=True`` arrives with its aligned-struct flag, on every
path a dtype takes: a frame of its own, inside meta, pickled, embedded sends and checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mpi"))
from payloads import ALIGNED, PACKED

from geode_mpi import Geode, Message
from geode_mpi.codec import Stamp, decode, encode
from geode_mpi.transport.base import copy_frame

NAMES = ("node0", "node1")
STAMP = Stamp(id=5, seq=0, timestamp=1.0, source=0, dest=1)
NESTED = np.dtype([("p", np.dtype([("x", "u1"), ("y", "<f8")], align=True)), ("q", "u1")])
RECORD = np.dtype((np.record, np.dtype([("a", "u1"), ("b", ">f4")], align=True)))


def flags(dtype: np.dtype[Any]) -> list[Any]:
    """The aligned-struct flag and scalar type of a dtype and of every dtype inside it."""
    found: list[Any] = [dtype.isalignedstruct, dtype.type]
    for field in (dtype.fields or {}).values():
        found.append(flags(field[0]))
    if dtype.subdtype is not None:
        found.append(flags(dtype.subdtype[0]))
    return found


def values(dtype: np.dtype[Any], n: int) -> np.ndarray[Any, Any]:
    array = np.zeros(n, dtype)
    array.view(np.uint8).reshape(n, -1)[:] = np.arange(dtype.itemsize, dtype=np.uint8)
    return array


def check(got: np.ndarray[Any, Any], sent: np.ndarray[Any, Any]) -> None:
    assert got.dtype == sent.dtype and flags(got.dtype) == flags(sent.dtype), (
        f"sent {sent.dtype} (aligned {sent.dtype.isalignedstruct}), "
        f"got {got.dtype} (aligned {got.dtype.isalignedstruct})"
    )
    assert got.tobytes() == sent.tobytes()


def wrapped(array: np.ndarray[Any, Any], how: str) -> Any:
    return array if how == "alone" else {"x": array, "n": 1} if how == "dict" else [array, "p"]


def unwrapped(data: Any, how: str) -> np.ndarray[Any, Any]:
    return data if how == "alone" else data["x"] if how == "dict" else data[0]  # type: ignore[no-any-return]


def test_the_twins_are_equal_with_one_hash_but_one_flag() -> None:
    assert ALIGNED == PACKED and hash(ALIGNED) == hash(PACKED)
    assert ALIGNED.isalignedstruct and not PACKED.isalignedstruct


@pytest.mark.parametrize("n", [3, 700])  # inside meta; a frame of its own
@pytest.mark.parametrize("how", ["alone", "dict", "pickled"])
@pytest.mark.parametrize("dtype", [ALIGNED, NESTED, RECORD], ids=["aligned", "nested", "record"])
def test_an_aligned_dtype_keeps_its_flag_through_the_codec(
    n: int, how: str, dtype: np.dtype[Any]
) -> None:
    sent = values(dtype, n)
    meta, frames = encode(Message(wrapped(sent, how)), STAMP)
    got = decode(meta, [copy_frame(f) for f in frames], NAMES)
    check(unwrapped(got.data, how), sent)


@pytest.mark.parametrize("n", [3, 700])
@pytest.mark.parametrize("how", ["alone", "dict"])
@pytest.mark.parametrize("aligned_first", [True, False])
def test_equal_aligned_and_packed_dtypes_each_arrive_as_sent(
    n: int, how: str, aligned_first: bool
) -> None:
    """The sender's caches of descriptors and templates, keyed by dtype, gave the later twin
    the first one's descriptor."""
    twins = [values(ALIGNED, n), values(PACKED, n)]
    for sent in (twins if aligned_first else twins[::-1]) * 2:
        meta, frames = encode(Message(wrapped(sent, how)), STAMP)
        got = decode(meta, [copy_frame(f) for f in frames], NAMES)
        check(unwrapped(got.data, how), sent)


def test_an_aligned_dtype_keeps_its_flag_sent_embedded() -> None:
    with Geode(nodes=["node0", "node1"]) as geode:
        for n in (3, 3, 700):  # (the second small one by its template)
            for sent in (values(ALIGNED, n), values(PACKED, n)):
                geode.send(sent, "node0", "node1")
                check(geode.receive("node1", timeout=10).data, sent)


def test_an_aligned_dtype_keeps_its_flag_across_a_checkpoint(tmp_path: Path) -> None:
    small, large = values(ALIGNED, 3), values(ALIGNED, 10_000)  # (blob; a dataset of its own)
    nested = values(NESTED, 5)
    with Geode(nodes=["node0", "node1"], checkpoint_dir=tmp_path) as geode:
        geode.send(Message(small), "node0", "node1")  # (a queued message)
        geode.send(Message({"x": large}), "node0", "node1")
        geode.checkpoint(
            state={"small": small, "large": large, "nested": nested},
            node_state={"node1": {"packed": values(PACKED, 4)}},
        )
    with Geode(nodes=["node0", "node1"], checkpoint_dir=tmp_path, restart=True) as again:
        state = again.restored_state
        assert state is not None
        check(state["small"], small)
        check(state["large"], large)
        check(state["nested"], nested)
        check(again.restored_node_state("node1")["packed"], values(PACKED, 4))
        check(again.receive("node1", timeout=10).data, small)
        check(again.receive("node1", timeout=10).data["x"], large)
