"""The relay tree's arithmetic and wire pieces (transport/relay.py), without MPI traffic."""

from __future__ import annotations

import pytest

from geode_mpi.errors import DecodeError
from geode_mpi.transport import relay


@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 63])
@pytest.mark.parametrize("root", [0, 5, 99])
def test_the_tree_reaches_every_member_once_and_the_root_sends_at_most_fanout(
    count: int, root: int
) -> None:
    members = [rank for rank in range(count + 1) if rank != root][:count]
    members += [] if len(members) == count else [count + 1]
    reached: list[int] = []
    level = relay.tree(root, members, root)
    assert len(level) == min(relay.FANOUT, count)
    steps = 0
    while level:
        reached += level
        level = [child for rank in level for child in relay.tree(root, members, rank)]
        steps += 1
    assert sorted(reached) == members
    assert steps <= count.bit_length()  # about log2(members) hops


def test_chunks_cover_every_frame_in_order() -> None:
    plan = relay.chunk_plan([10, 3, 8], 4)
    assert plan == [(0, 0, 4), (0, 4, 8), (0, 8, 10), (1, 0, 3), (2, 0, 4), (2, 4, 8)]


def test_a_head_reads_back_and_a_damaged_one_is_refused() -> None:
    head = relay.pack_head(
        3, 42, 1 << 19, relay.CHUNK_TAG + 5, [(1 << 20, 16), (700, 0)], [0, 1, 2]
    )
    assert relay.unpack_head(head, 3) == (
        3,
        42,
        1 << 19,
        relay.CHUNK_TAG + 5,
        [(1 << 20, 16), (700, 0)],
        [0, 1, 2],
    )
    with pytest.raises(DecodeError, match="rank 3 sent a relay head geode_mpi cannot read"):
        relay.unpack_head(head[:-1], 3)
    with pytest.raises(DecodeError, match="relay head"):
        relay.unpack_head(b"XXXX" + head[4:], 3)
    with pytest.raises(DecodeError, match="relay head"):  # the root listed as a member
        relay.unpack_head(relay.pack_head(3, 1, 64, relay.CHUNK_TAG, [(10, 0)], [1, 3]), 3)


def test_a_relayed_envelope_keeps_its_alignment_and_names_its_relay() -> None:
    message = relay.relayed_envelope(7, b"envelope")
    assert relay.PREFIX_BYTES % 16 == 0 and message[relay.PREFIX_BYTES :] == b"envelope"
    assert relay.read_prefix(message, 1) == 7
    with pytest.raises(DecodeError, match="rank 1 sent a relayed envelope"):
        relay.read_prefix(b"short", 1)
