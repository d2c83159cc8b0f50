"""What `topic()` leaves on a rank of a large job: its member ranks once per topic, not once per
stream, and nothing for the streams the rank never sends or receives on."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterable, Sequence

import pytest

from geode_mpi import Geode
from geode_mpi.transport import InProcHub
from geode_mpi.transport.fanout import FanoutTable

RANKS = 500


def replayed(ranks: int, rank: int, monkeypatch: pytest.MonkeyPatch) -> tuple[Geode, FanoutTable]:
    """A Geode on simulated rank ``rank`` of ``ranks`` (one node per rank) whose streams go
    into the table an MPI rank keeps, as `MPITransport.open_streams` records them; the
    streams and members of each call in ``geode.opened``."""
    transport = InProcHub(ranks).endpoint(rank)
    table = FanoutTable(rank)
    opened: list[tuple[Sequence[tuple[int, int]], Sequence[int]]] = []

    def open_streams(streams: Sequence[tuple[int, int]], members: Sequence[int]) -> None:
        opened.append((streams, members))
        table.open(streams, members)

    monkeypatch.setattr(transport, "open_streams", open_streams)
    geode = Geode(transport=transport)
    geode.opened = opened  # type: ignore[attr-defined]
    return geode, table


def held_member_ranks(table: FanoutTable, keys: Iterable[int]) -> int:
    """The member ranks the table holds for streams ``keys``, each distinct tuple once."""
    streams = [stream for stream in map(table.get, keys) if stream is not None]
    return sum({id(stream[1]): len(stream[1]) for stream in streams}.values())


def test_a_topic_of_every_node_holds_its_member_ranks_once_not_once_per_publisher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every rank kept a sorted copy of the member ranks for each publisher's stream:
    P(P-1) entries per topic (249,500 at 500 ranks, 3 MiB; 35 MiB at 2,000)."""
    geode, table = replayed(RANKS, 3, monkeypatch)
    nodes = [f"node{k}" for k in range(RANKS)]
    geode.topic("warm-up", publishers=["node0"], subscribers=["node1"])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        topic = geode.topic("all", publishers=nodes, subscribers=nodes)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Before: 3.0 MiB; now about 0.6 MiB (per stream: its number, root and the pair of its
    # subscriber here: what grows with the publishers, not with publishers x members).
    assert held < 1_000_000, held
    assert held_member_ranks(table, topic.numbers) < RANKS  # before: 249,500
    assert len(table) == RANKS
    own = geode._runtime.engine.topics.stream_of(topic.wire, 3)  # rank 3's node's stream
    assert table.members(own) == tuple(r for r in range(RANKS) if r != 3)
    [(streams, members)] = geode.opened[1:]  # type: ignore[attr-defined]
    assert sorted(key for key, _ in streams) == sorted(topic.numbers)  # every stream in one call
    assert members == tuple(range(RANKS))
    geode.close()


def test_a_rank_outside_a_topic_holds_no_stream_of_it_and_no_retained_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    geode, table = replayed(8, 5, monkeypatch)
    topic = geode.topic("log", publishers=["node0", "node1"], subscribers=["node2"], retain=4)
    assert len(table) == 0
    assert table.root_of(min(topic.numbers)) == 0  # (an end marker may still reach it)
    streams = geode._runtime.engine.topics.of_topic(topic.wire)
    # No deque of its own for a stream that this rank does not publish on, nor for a topic
    # that retains nothing: one empty one, shared, which can hold nothing.
    plain = geode.topic("plain", publishers=["node5", "node6"], subscribers=["node2"])
    mine = geode._runtime.engine.topics.of_topic(plain.wire)
    others = {id(stream.retained) for stream in [*streams, *mine]}
    assert len(others) == 1
    assert all(stream.retained.maxlen == 0 for stream in [*streams, *mine])
    kept = geode.topic("kept", publishers=["node5", "node6"], subscribers=["node2"], retain=2)
    assert [s.retained.maxlen for s in geode._runtime.engine.topics.of_topic(kept.wire)] == [2, 0]
    geode.close()


def test_the_table_keeps_each_streams_root_and_sends_to_the_members_but_the_root() -> None:
    table = FanoutTable(2)
    members = (0, 2, 3, 5)
    table.open(list(enumerate([0, 2, 3, 5, 7])), members)
    assert len(table) == 5  # rank 2 is a member of each (root 7 too: it sends to rank 2)
    assert table.members(1) == (0, 3, 5)
    with pytest.raises(ValueError, match="rank 2 is not the root of broadcast stream 0"):
        table.members(0)
    assert [table.root_of(key) for key in range(5)] == [0, 2, 3, 5, 7]
    assert table.relaying
    outside = FanoutTable(4)
    outside.open(list(enumerate([0, 2, 3, 5])), members)
    assert len(outside) == 0 and outside.root_of(3) == 5
    alone = FanoutTable(1)
    alone.open([(9, 1)], [3, 1])  # a list, unsorted, naming the root: sent to the others, in order
    alone.open([(10, 1), (11, 1)], [4, 1, 3])
    assert alone.members(9) == (3,) and alone.members(10) == (3, 4)
    assert alone.members(11) is alone.members(10)  # (one tuple for the streams of one open)
    with pytest.raises(ValueError, match="broadcast stream 11 is already open"):
        alone.open([(11, 1)], [4])
    assert alone.relaying  # (2 members beside the root: a split relays)
    single = FanoutTable(0)
    single.open([(1, 0)], (0, 1))
    assert not single.relaying
