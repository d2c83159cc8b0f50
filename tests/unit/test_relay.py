"""The relay tree's arithmetic and wire pieces (transport/relayplan.py), without MPI traffic."""

from __future__ import annotations

import pytest

from geode_mpi.errors import DecodeError
from geode_mpi.transport import relayplan


@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 63])
@pytest.mark.parametrize("root", [0, 5, 99])
@pytest.mark.parametrize("fanout", [1, relayplan.FANOUT])
def test_the_tree_reaches_every_member_once_and_the_root_sends_at_most_fanout(
    count: int, root: int, fanout: int
) -> None:
    members = [rank for rank in range(count + 1) if rank != root][:count]
    members += [] if len(members) == count else [count + 1]
    reached: list[int] = []
    level = relayplan.tree(root, members, root, fanout)
    assert len(level) == min(fanout, count)
    steps = 0
    while level:
        reached += level
        level = [child for rank in level for child in relayplan.tree(root, members, rank, fanout)]
        steps += 1
    assert sorted(reached) == members
    # a chain: one hop per member; a binary tree: about log2(members) hops
    assert steps == count if fanout == 1 else steps <= count.bit_length()


def test_a_relay_goes_down_a_chain_once_it_has_as_many_chunks_as_members() -> None:
    assert relayplan.fanout_of(chunks=8, members=3) == 1
    assert relayplan.fanout_of(chunks=7, members=7) == 1
    assert relayplan.fanout_of(chunks=6, members=7) == relayplan.FANOUT
    assert relayplan.fanout_of(chunks=32, members=63) == relayplan.FANOUT


@pytest.mark.parametrize("count", [2, 3, 7, 8])
@pytest.mark.parametrize("chunks", [1, 2, 3, 8, 17])
def test_a_split_gives_every_member_every_chunk_once_in_two_steps(count: int, chunks: int) -> None:
    root, members = 4, [r for r in range(count + 1) if r != 4][:count]
    members += [] if len(members) == count else [count + 1]
    sources, routes = relayplan.routes(relayplan.SPLIT, root, members, root, chunks)
    assert sources == [-1] * chunks and all(len(route) == 1 for route in routes)
    got = {member: [0] * chunks for member in members}
    for index, route in enumerate(routes):
        owner = route[0]
        got[owner][index] += 1
        owner_sources, owner_routes = relayplan.routes(
            relayplan.SPLIT, root, members, owner, chunks
        )
        assert owner_sources[index] == root
        for peer in owner_routes[index]:
            got[peer][index] += 1
            assert relayplan.routes(relayplan.SPLIT, root, members, peer, chunks)[0][index] == owner
    assert all(counts == [1] * chunks for counts in got.values())


def test_the_shape_of_a_relay_by_size_and_members() -> None:
    MiB = 1 << 20
    assert relayplan.shape_for(relayplan.SPLIT_MIN - 1, 3) is None  # sent directly
    assert relayplan.shape_for(relayplan.SPLIT_MIN // 2, relayplan.SPLIT_MEMBERS + 1) is None
    assert relayplan.shape_for(relayplan.SPLIT_MIN, 2) == relayplan.SPLIT
    assert relayplan.shape_for(MiB, 3) == relayplan.SPLIT
    assert relayplan.shape_for(MiB, relayplan.SPLIT_MEMBERS) == relayplan.SPLIT
    assert relayplan.shape_for(MiB, 1) is None  # one member: a send
    assert relayplan.shape_for(MiB, relayplan.SPLIT_MEMBERS + 1) == relayplan.TREE
    assert relayplan.shape_for(relayplan.SPLIT_MAX, 3) == relayplan.CHAIN
    assert relayplan.shape_for(relayplan.SPLIT_MAX, 2) is None  # two members are never chained
    assert relayplan.shape_for(16 * MiB, 63) == relayplan.TREE  # 32 chunks, 63 members
    assert (
        relayplan.shape_for(MiB, 3, "mpich") == relayplan.SPLIT
    )  # MPICH: as with no library named
    assert relayplan.shape_for(16 * MiB, 63, "mpich") == relayplan.TREE
    chunk = relayplan.chunk_size(MiB, relayplan.SPLIT, 3)
    assert chunk % 4096 == 0 and len(relayplan.chunk_plan([MiB], chunk)) == 3


def test_open_mpi_sends_directly_to_a_few_members_and_relays_to_more() -> None:
    """Open MPI's own copies are cheap: up to OPEN_MPI_DIRECT_MEMBERS members the root sends
    every size to each member itself; beyond, the shapes are MPICH's."""
    MiB = 1 << 20
    few = relayplan.OPEN_MPI_DIRECT_MEMBERS
    for total in (MiB, 4 * MiB, 16 * MiB, 1 << 30):
        for members in range(1, few + 1):
            assert relayplan.shape_for(total, members, "openmpi") is None
    for total in (MiB, 4 * MiB, 16 * MiB):
        for members in (few + 1, relayplan.SPLIT_MEMBERS, 63):
            assert relayplan.shape_for(total, members, "openmpi") == relayplan.shape_for(
                total, members
            )
            assert relayplan.shape_for(total, members) is not None
    assert relayplan.shape_for(MiB - 1, 3, "openmpi") is None  # small: direct everywhere


def test_chunks_cover_every_frame_in_order() -> None:
    plan = relayplan.chunk_plan([10, 3, 8], 4)
    assert plan == [(0, 0, 4), (0, 4, 8), (0, 8, 10), (1, 0, 3), (2, 0, 4), (2, 4, 8)]


def test_a_head_reads_back_and_a_damaged_one_is_refused() -> None:
    head = relayplan.pack_head(
        3, 42, 1 << 19, relayplan.CHUNK_TAG + 5, [(1 << 20, 16), (700, 0)], [0, 1, 2]
    )
    read = relayplan.unpack_head(head, 3, 4)
    assert (read.root, read.number, read.chunk, read.tag, read.shape) == (
        3,
        42,
        1 << 19,
        relayplan.CHUNK_TAG + 5,
        relayplan.TREE,
    )
    assert read.frames == [(1 << 20, 16), (700, 0)] and read.members == [0, 1, 2]
    with pytest.raises(DecodeError, match="rank 3 sent a relay head geode_mpi cannot read"):
        relayplan.unpack_head(head[:-1], 3, 4)
    with pytest.raises(DecodeError, match="relay head"):
        relayplan.unpack_head(b"XXXX" + head[4:], 3, 4)
    with pytest.raises(DecodeError, match="relay head"):  # the root listed as a member
        relayplan.unpack_head(
            relayplan.pack_head(3, 1, 1 << 19, relayplan.CHUNK_TAG, [(10, 0)], [1, 3]), 3, 4
        )


MiB = 1 << 20
HOSTILE = {
    "a root outside the job": dict(root=4),
    "a negative root": dict(root=-1),
    "a member outside the job": dict(members=[0, 1, 9]),
    "a negative member (MPI_PROC_NULL)": dict(members=[0, -1]),
    "a member listed twice": dict(members=[0, 1, 1]),
    "a chunk tag below the chunk tags": dict(tag=relayplan.TAG_RELAY_HEAD),
    "a chunk tag beyond the slots": dict(tag=relayplan.CHUNK_TAG + relayplan.SLOTS),
    "tiny chunks": dict(chunk=1),
    "a negative relay number": dict(number=-5),
    "an empty frame": dict(frames=[(0, 0)]),
    "a page offset beyond a page": dict(frames=[(MiB, 4096)]),
    "more chunks than a relay may have": dict(frames=[(1 << 40, 0)]),
    "an unknown shape": dict(shape=3),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_head_that_names_what_no_relay_has_is_refused_before_anything_is_set_up(
    case: str,
) -> None:
    # A damaged or foreign head would otherwise send to ranks that do not exist, allocate
    # what it names, or plan billions of chunks (fuzz_arrival.py found the first two).
    fields = dict(
        root=3,
        number=1,
        chunk=relayplan.CHUNK,
        tag=relayplan.CHUNK_TAG,
        frames=[(MiB, 0)],
        members=[0, 1],
    )
    fields.update(HOSTILE[case])
    head = relayplan.pack_head(**fields)  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="rank 3 sent a relay head geode_mpi cannot read"):
        relayplan.unpack_head(head, 3, 4)


def test_a_huge_relay_travels_in_larger_chunks_and_its_head_is_accepted() -> None:
    for total in (1, relayplan.CHUNK, 64 * (1 << 30), 1 << 40):
        chunk = relayplan.chunk_size(total)
        assert chunk >= relayplan.CHUNK and chunk % 4096 == 0
        assert -(-total // chunk) <= relayplan.MAX_CHUNKS
        head = relayplan.pack_head(2, 0, chunk, relayplan.CHUNK_TAG, [(total, 0)], [0, 1])
        assert relayplan.unpack_head(head, 2, 3).chunk == chunk


def test_a_relayed_envelope_keeps_its_alignment_and_names_its_relay() -> None:
    message = relayplan.relayed_envelope(7, b"envelope")
    assert relayplan.PREFIX_BYTES % 16 == 0 and message[relayplan.PREFIX_BYTES :] == b"envelope"
    assert relayplan.read_prefix(message, 1) == 7
    with pytest.raises(DecodeError, match="rank 1 sent a relayed envelope"):
        relayplan.read_prefix(b"short", 1)
