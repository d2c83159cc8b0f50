"""Several subscribers of one topic on one rank, and received arrays that must stay as received.

A message that reaches a rank is handed to its first local subscriber as received and copied
for each further one. Frames sent inline (up to `INLINE_MAX` bytes, several small messages to
one rank batched) arrive as memoryviews into the envelope's or batch's receive buffer, and a
copy of one used to crash the rank. The sizes swept cross every threshold a frame meets on its
way: `SMALL_ARRAY_MAX` (an array inside meta, no frame), `INLINE_MAX` (a frame inside the
envelope, else out of band), `BATCH_BYTES` (small messages batched), `CACHE_MIN` (a large topic
frame cached) and `SHARED_MIN` (a large topic frame shared within a node). At 1 rank every
subscriber is on the publisher's rank (the loopback path); the inline path needs 2 ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_credits import world_size

from geode_mpi import Geode
from geode_mpi.codec.wire import SMALL_ARRAY_MAX
from geode_mpi.delivery.cache_budget import CACHE_MIN
from geode_mpi.transport.envelope import INLINE_MAX
from geode_mpi.transport.mpi_batches import BATCH_BYTES
from geode_mpi.transport.sealed import SHARED_MIN

TIMEOUT = 60.0
_ITEM = 8  # bytes of an int64


def _around(nbytes: int) -> list[int]:
    """Element counts of int64 arrays just below, at and just above ``nbytes``."""
    return [nbytes // _ITEM - 1, nbytes // _ITEM, nbytes // _ITEM + 1]


SIZES = sorted(
    {0, 1, 2, 3, 100, 200, 500, 1000, 1500, 2000, 4000, 20000}
    | {n for limit in (SMALL_ARRAY_MAX, INLINE_MAX, BATCH_BYTES, CACHE_MIN) for n in _around(limit)}
    | {SHARED_MIN // _ITEM + 1}
)


def _array(n: int, wave: int, k: int) -> np.ndarray[Any, Any]:
    """Values that tell every message of every wave apart."""
    return np.arange(n, dtype=np.int64) + (wave * 1_000_000 + k * 1_000)


def _payloads(wave: int) -> list[Any]:
    """Bare arrays of every size, then dicts holding one (and a 0- or 1-element one)."""
    bare = [_array(n, wave, k) for k, n in enumerate(SIZES)]
    held = [
        {"k": k, "arr": _array(n, wave, k), "tiny": _array(k % 2, wave, k)}
        for k, n in enumerate(SIZES)
    ]
    return [*bare, *held]


def _equal(got: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(_equal(got[key], want[key]) for key in want)
        )
    if isinstance(want, np.ndarray):
        return isinstance(got, np.ndarray) and got.dtype == want.dtype and np.array_equal(got, want)
    return bool(got == want)


def _arrays(data: Any) -> list[np.ndarray[Any, Any]]:
    if isinstance(data, dict):
        return [value for value in data.values() if isinstance(value, np.ndarray)]
    return [data]


def _layout(per_rank: int) -> tuple[Geode, str, list[str]]:
    """``per_rank`` nodes on every rank; the publisher is the first node, every other node
    subscribes: ``per_rank`` subscribers on each rank but the publisher's."""
    size = world_size()
    geode = Geode(per_rank * size)
    publisher, subscribers = geode.nodes[0], geode.nodes[1:]
    return geode, publisher, subscribers


@pytest.mark.parametrize("per_rank", [2, 3])
def test_every_local_subscriber_gets_its_own_lasting_copy_of_every_size(per_rank: int) -> None:
    geode, publisher, subscribers = _layout(per_rank)
    try:
        topic = geode.topic("sizes", [publisher], subscribers)
        local = [node for node in geode.local_nodes if node in subscribers]
        first = _payloads(0)
        if geode.hosts(publisher):
            for data in first:
                topic.publish(data, publisher)
        got = {
            node: [geode.receive(node, topic="sizes", timeout=TIMEOUT).data for _ in first]
            for node in local
        }
        for node in local:
            for data, want in zip(got[node], first, strict=True):
                assert _equal(data, want), (node, want)
        # Each subscriber's arrays are its own: writing the first one's leaves the others'.
        if local:
            for data in got[local[0]]:
                for array in _arrays(data):
                    if array.flags.writeable:
                        array[...] = -7
                    else:  # (a sealed view, shared by this rank's subscribers: large only)
                        assert array.nbytes >= SHARED_MIN
            for node in local[1:]:
                for data, want in zip(got[node], first, strict=True):
                    assert _equal(data, want), (node, want)
        # Many more messages, through the same receive paths and buffers: what was received
        # first keeps its values (no receive buffer is reused under a user's array).
        for wave in (1, 2, 3):
            more = _payloads(wave)
            if geode.hosts(publisher):
                for data in more:
                    topic.publish(data, publisher)
            for node in local:
                for want in more:
                    data = geode.receive(node, topic="sizes", timeout=TIMEOUT).data
                    assert _equal(data, want), (node, wave, want)
        for index, node in enumerate(local):
            for data, want in zip(got[node], first, strict=True):
                for array, wanted in zip(_arrays(data), _arrays(want), strict=True):
                    if index == 0 and array.flags.writeable and array.size:
                        assert (array == -7).all(), node
                    else:
                        assert np.array_equal(array, wanted), (node, wanted)
        for node in local:
            assert geode.try_receive(node) is None
    finally:
        geode.close(timeout=TIMEOUT)


def test_point_to_point_arrays_stay_as_received_while_more_arrive() -> None:
    """Point-to-point to one node, batched and not: the arrays received first keep their
    values (and their writes) while many more messages arrive in new receive buffers."""
    geode, _, _ = _layout(2)
    try:
        nodes = geode.nodes
        dest = nodes[-1]
        waves = 4
        per_wave = len(_payloads(0))
        for wave in range(waves):
            for node in geode.local_nodes:
                if node != dest:
                    for data in _payloads(wave):
                        geode.send(data, node, dest)
        if geode.hosts(dest):
            total = waves * per_wave * (len(nodes) - 1)
            early = [geode.receive(dest, timeout=TIMEOUT) for _ in range(per_wave)]
            for msg in early:
                for array in _arrays(msg.data):
                    if array.flags.writeable:
                        array += 1  # (its own memory: nothing else sees this)
            later = [geode.receive(dest, timeout=TIMEOUT) for _ in range(total - per_wave)]
            bumped = {id(msg) for msg in early}
            by_source: dict[str, list[Any]] = {}
            for msg in early + later:
                by_source.setdefault(msg.source, []).append(msg)
            assert sorted(by_source) == sorted(node for node in nodes if node != dest)
            for source, got in by_source.items():  # (in order from each source)
                assert len(got) == waves * per_wave
                for index, msg in enumerate(got):
                    want = _payloads(index // per_wave)[index % per_wave]
                    bump = 1 if id(msg) in bumped else 0
                    for array, wanted in zip(_arrays(msg.data), _arrays(want), strict=True):
                        assert np.array_equal(array, wanted + bump), (source, index)
            assert geode.try_receive(dest) is None
    finally:
        geode.close(timeout=TIMEOUT)
