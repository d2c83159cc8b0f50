"""transport/prepost.py's `one_frame_lead`: the lead of an array alone, packed in one step, is
byte for byte the general lead of the general envelope (what the receiver parses)."""

from __future__ import annotations

import pytest

from geode_mpi.transport.envelope import FRAMES_AFTER, one_frame_envelope, parse_envelope
from geode_mpi.transport.prepost import (
    INDEX,
    LEAD_BYTES,
    ONE_FRAME,
    ONE_FRAME_META,
    lead_message,
    one_frame_lead,
)


@pytest.mark.parametrize("index", [0, 2**40 + 3])
@pytest.mark.parametrize("nbytes", [16 * 1024 + 1, 2**20, 2**31 + 5])
@pytest.mark.parametrize("address", [0, 16, 4095, 4096 + 48, 2**40 + 4000])
@pytest.mark.parametrize("meta", [b"", b"m" * 75, bytes(range(256)) * 3])
def test_one_frame_lead_is_the_general_lead(
    index: int, nbytes: int, address: int, meta: bytes
) -> None:
    general = lead_message(index, one_frame_envelope(meta, nbytes, address, FRAMES_AFTER))
    assert one_frame_lead(index, meta, nbytes, address) == general


def test_the_longest_meta_fills_a_standing_receive_and_parses_back() -> None:
    meta = bytes(range(256)) * (ONE_FRAME_META // 256) + b"x" * (ONE_FRAME_META % 256)
    lead = one_frame_lead(5, meta, 2**20, 4096 + 32)
    assert len(lead) == LEAD_BYTES  # the room a standing receive has
    assert INDEX.unpack_from(lead)[0] == 5
    parsed_meta, frames, oob = parse_envelope(lead[INDEX.size :])
    assert bytes(parsed_meta) == meta
    assert frames == [None]
    assert oob == [(2**20, 32)]
    assert ONE_FRAME.unpack_from(lead)[3] & FRAMES_AFTER
