"""Compression at 1, 2 and 4 ranks (and over the network path: tests/test_compression_mpi.py)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from geode_mpi import Geode, share
from geode_mpi.transport.relayplan import OPEN_MPI_DIRECT_MEMBERS

TIMEOUT = 60.0
MiB = 1024 * 1024
# The launch chose MPICH's network path even between ranks of one host (tests/test_mpi_info.py).
NETWORK = os.environ.get("MPIR_CVAR_NOLOCAL") == "1"


def counts(n: int, seed: int) -> np.ndarray[Any, Any]:
    """Small integers: Blosc shrinks them about 9 times."""
    return np.random.default_rng(seed).poisson(3.0, n).astype(np.int64)


def noise(n: int, seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal(n)


def ring(geode: Geode) -> list[tuple[str, str]]:
    """(source, dest) pairs this rank sends: each local node to the next node."""
    nodes = geode.nodes
    return [(node, nodes[(nodes.index(node) + 1) % len(nodes)]) for node in geode.local_nodes]


def test_compressed_arrays_and_dicts_of_them_arrive_unchanged(geode: Geode) -> None:
    nodes = geode.nodes
    for source, dest in ring(geode):
        k = nodes.index(source)
        geode.send(counts(MiB // 8, k), source, dest, compress="lz4", timeout=TIMEOUT)
        geode.send(noise(MiB // 8, k), source, dest, compress="zstd:1", timeout=TIMEOUT)
        value = {"f": np.asfortranarray(counts(64 * 1024, k).reshape(256, 256)), "k": k}
        geode.send(value, source, dest, compress="blosclz:9", timeout=TIMEOUT)
        # 2.5 MiB of arrays: the counts shrank, the noise travelled raw
        assert MiB < geode.stats(source).sent_bytes < 2 * MiB
    for dest in geode.local_nodes:
        k = (nodes.index(dest) - 1) % len(nodes)
        got = [geode.receive(dest, timeout=TIMEOUT).data for _ in range(3)]
        assert np.array_equal(got[0], counts(MiB // 8, k)) and got[0].dtype == np.int64
        assert np.array_equal(got[1], noise(MiB // 8, k))
        assert got[2]["k"] == k and got[2]["f"].flags.f_contiguous
        assert np.array_equal(got[2]["f"], counts(64 * 1024, k).reshape(256, 256))


def test_auto_compresses_only_over_the_network_path(geode: Geode) -> None:
    data = counts(MiB // 8, 1)
    for source, dest in ring(geode):
        geode.send(data, source, dest, compress="auto", timeout=TIMEOUT)
    for source, dest in ring(geode):
        other_rank = geode.rank_of(dest) != geode.rank
        squeezed = geode.stats(source).sent_bytes < data.nbytes
        assert squeezed == (NETWORK and other_rank), (source, dest, NETWORK)
    for dest in geode.local_nodes:
        assert np.array_equal(geode.receive(dest, timeout=TIMEOUT).data, data)


def test_a_topic_compresses_once_for_every_subscriber(geode: Geode) -> None:
    nodes = geode.nodes
    topic = geode.topic("field", publishers=[nodes[0]], subscribers=nodes, compress="lz4")
    data = counts(2 * MiB // 8, 7)
    handle = topic.publish(data, source=nodes[0])
    handle.wait(timeout=TIMEOUT)
    if geode.hosts(nodes[0]):
        # sent bytes count the frames as they left: compressed, for each of the subscribers
        assert geode.stats(nodes[0]).sent_bytes < len(nodes) * data.nbytes / 4
    for node in geode.local_nodes:
        msg = geode.receive(node, topic="field", timeout=TIMEOUT)
        assert msg.source == nodes[0] and np.array_equal(msg.data, data)


def publish_16_mib_of_counts(geode: Geode, seed: int) -> None:
    """The last node publishes 16 MiB of counts (LZ4 shrinks them to about 1.8 MB) on topic
    "big" to every node; every local node receives them unchanged."""
    nodes = geode.nodes
    topic = geode.topic("big", publishers=[nodes[-1]], subscribers=nodes, compress="lz4")
    data = counts(16 * MiB // 8, seed)
    topic.publish(data, source=nodes[-1]).wait(timeout=TIMEOUT)
    for node in geode.local_nodes:
        msg = geode.receive(node, topic="big", timeout=TIMEOUT)
        assert np.array_equal(msg.data, data)


def test_compressed_frames_large_enough_to_be_relayed_arrive_unchanged(
    geode: Geode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 MiB of counts compress to about 1.8 MB: from 1 MiB a topic's frames go down a relay
    (split among the members, or a tree), compressed; each member decompresses its copy.
    (Relays only: members on the root's node would otherwise read the node's shared segment,
    the next test.)"""
    monkeypatch.setenv("GEODE_SHARED_BYTES", "0")  # read at the first topic
    publish_16_mib_of_counts(geode, 11)
    # with 2 or more other ranks (a split), relayed here: rooted, or received down it; on
    # Open MPI a few members get direct sends instead (relayplan.shape_for)
    direct = getattr(geode.transport, "family", None) == "openmpi"
    relays = geode.size >= 3 and not (direct and geode.size - 1 <= OPEN_MPI_DIRECT_MEMBERS)
    assert getattr(geode.transport, "relayed", 0) == (1 if relays else 0)


def test_compressed_frames_through_the_node_shared_segment_arrive_unchanged(geode: Geode) -> None:
    """The same 16 MiB on one node (the default): the root copies the compressed frame once
    into the node's shared segment, and each member decompresses from its read-only view."""
    publish_16_mib_of_counts(geode, 12)
    shared = getattr(geode.transport, "shared", None)
    root = geode.rank == geode.size - 1
    # over the network path (MPIR_CVAR_NOLOCAL) no two ranks share a node: no segment
    network = getattr(geode.transport, "network", lambda rank: False)
    on_node = geode.size >= 2 and not network((geode.rank + 1) % geode.size)
    assert (shared.shared if shared is not None else 0) == (1 if root and on_node else 0)


def test_0d_and_record_arrays_arrive_compressed_and_as_sent(geode: Geode) -> None:
    """A 0-d array compressed crashed its send (numpy's ValueError); an array of a
    numpy.record dtype arrived as a DecodeError, and so did a later plain structured array of
    an equal dtype and shape from that rank (the sender's caches took them for one dtype)."""
    big = np.zeros((), dtype=[("a", "i8", (40_000,))])  # one 0-d element of 320 KB
    big["a"][:] = np.arange(40_000) % 5
    fields = [np.arange(1000), np.arange(1000, dtype=np.float32)]
    records = np.asarray(np.rec.fromarrays(fields, names="a,b"))
    plain = np.array(records, dtype=[("a", "<i8"), ("b", "<f4")])
    for source, dest in ring(geode):
        geode.send({"w": np.array(3.5)}, source, dest, compress="lz4", timeout=TIMEOUT)
        geode.send(big, source, dest, compress="zstd", timeout=TIMEOUT)
        for array in (records, records[:3], plain, plain[:3]):
            geode.send(array, source, dest, timeout=TIMEOUT)
        assert geode.stats(source).sent_bytes < big.nbytes / 3 + 2 * records.nbytes
    for dest in geode.local_nodes:
        assert geode.receive(dest, timeout=TIMEOUT).data["w"] == 3.5
        assert geode.receive(dest, timeout=TIMEOUT).data.tobytes() == big.tobytes()
        for array in (records, records[:3], plain, plain[:3]):
            got = geode.receive(dest, timeout=TIMEOUT).data
            assert got.dtype == array.dtype and got.dtype.type is array.dtype.type
            assert got.tobytes() == array.tobytes()
    assert not any(geode.dead_letters(node) for node in geode.local_nodes)


def test_a_shared_array_leaves_the_other_arrays_compressed(geode: Geode) -> None:
    """A message of 8 MiB of counts and a shared 1 MiB field, sent twice, compress="lz4":
    the counts went raw both times (the shared array switched compression off), and
    sent_bytes counted the field's bytes the second time too, when only a reference left."""
    field = share(noise(MiB // 8, geode.rank))
    data = counts(MiB, 3)
    sizes: dict[str, list[int]] = {source: [] for source, _ in ring(geode)}
    for _ in range(2):
        for source, dest in ring(geode):
            before = geode.stats(source).sent_bytes
            geode.send({"c": data, "f": field}, source, dest, compress="lz4", timeout=TIMEOUT)
            sizes[source].append(geode.stats(source).sent_bytes - before)
        for dest in geode.local_nodes:
            got = geode.receive(dest, timeout=TIMEOUT).data
            assert np.array_equal(got["c"], data) and got["f"].shape == field.shape
    # the first send to a rank stores the field there (the counts compressed), later ones
    # (this rank's other nodes, to the same rank, or the second round) refer to it
    firsts = [first for first, _ in sizes.values()]
    assert field.nbytes < firsts[0] < field.nbytes + data.nbytes / 4, sizes
    assert all(size < data.nbytes / 4 for size in firsts[1:]), sizes
    assert all(second < data.nbytes / 4 for _, second in sizes.values()), sizes
