"""The MPI envelope framing, without MPI."""

from __future__ import annotations

import numpy as np
import pytest

from geode_mpi.transport.envelope import ALIGN, build_envelope, one_frame_envelope, parse_envelope


def test_small_frames_inline_and_aligned_big_ones_out_of_band() -> None:
    small = np.arange(5, dtype=np.float64)
    big = np.arange(10_000, dtype=np.float64)
    strided = np.arange(100.0)[::2]
    envelope, oob = build_envelope(b"meta!", [small, big, strided], inline_max=1024)
    assert len(oob) == 1 and oob[0] is big
    buffer = np.frombuffer(bytes(envelope), np.uint8).copy()
    meta, frames, sizes = parse_envelope(buffer)
    assert bytes(meta) == b"meta!" and sizes == [(big.nbytes, 0)]
    assert frames[1] is None
    assert frames[0] is not None and frames[2] is not None
    assert np.array_equal(np.frombuffer(frames[0], np.float64), small)
    assert np.array_equal(np.frombuffer(frames[2], np.float64), strided)
    for frame in (frames[0], frames[2]):
        address = np.frombuffer(frame, np.uint8).ctypes.data
        assert (address - buffer.ctypes.data) % ALIGN == 0


def test_no_frames_is_header_plus_meta() -> None:
    envelope, oob = build_envelope(b"abc", [], inline_max=1024)
    assert oob == [] and bytes(envelope).endswith(b"abc")


@pytest.mark.parametrize("garbage", [b"", b"xx", b"NOTGEODE" * 4])
def test_garbage_is_rejected_with_a_clear_error(garbage: bytes) -> None:
    with pytest.raises(ValueError, match="envelope"):
        parse_envelope(np.frombuffer(garbage, np.uint8).copy())


def test_empty_frames_between_others_keep_the_layout() -> None:
    frames = [np.empty(0), np.arange(3.0), np.empty((0, 4)), np.arange(5, dtype=np.int8)]
    envelope, oob = build_envelope(b"odd", frames, inline_max=1024)
    assert oob == []
    buffer = np.frombuffer(envelope, np.uint8).copy()
    _, got, _ = parse_envelope(buffer)
    assert [g.nbytes for g in got if g is not None] == [0, 24, 0, 5]
    assert np.array_equal(np.frombuffer(got[1], np.float64), frames[1])  # type: ignore[arg-type]
    assert np.array_equal(np.frombuffer(got[3], np.int8), frames[3])  # type: ignore[arg-type]


def test_out_of_band_frames_carry_their_page_offset_in_16_byte_steps() -> None:
    frames = [np.zeros(5000), np.zeros(3), np.zeros(7000), np.zeros(9000)]
    # An address 8208 bytes in (16 into its page) and one 4095 bytes in (rounded down to 4080);
    # the third out-of-band frame has no hint.
    envelope, _ = build_envelope(b"m", frames, inline_max=1024, offsets=[8208, 4095])
    _, _, oob = parse_envelope(np.frombuffer(envelope, np.uint8).copy())
    assert oob == [(40000, 16), (56000, 4080), (72000, 0)]


@pytest.mark.parametrize("nbytes", [16 * 1024 + 1, 2**20, 2**31 + 5])
@pytest.mark.parametrize("address", [0, 16, 4095, 4096 + 48, 2**40 + 4000])
@pytest.mark.parametrize("meta", [b"", b"m" * 75, bytes(range(256)) * 3])
def test_one_frame_envelope_is_what_build_envelope_makes(
    nbytes: int, address: int, meta: bytes
) -> None:
    frame = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (nbytes,), (0,))
    expected, oob = build_envelope(meta, [frame], 16 * 1024, [address])
    assert len(oob) == 1
    assert one_frame_envelope(meta, nbytes, address) == expected
