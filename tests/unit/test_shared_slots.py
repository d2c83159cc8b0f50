"""The slot allocator of the node's shared segment (transport/shared.py), without MPI: first
fit, alignment, readers' flags freeing slots, and no room meaning None (never a wait)."""

from __future__ import annotations

import numpy as np
import pytest

from geode_mpi.transport import shared
from geode_mpi.transport.slots import SLOTS, SlotAllocator


def allocator(capacity: int, readers: int = 3, slots: int = SLOTS) -> SlotAllocator:
    return SlotAllocator(capacity, np.zeros((slots, readers), np.uint8), align=64)


def test_frames_start_aligned_and_readers_are_flagged() -> None:
    slots = allocator(1000)
    taken = slots.take([10, 100, 1], [0, 2])
    assert taken == (0, [0, 64, 192])
    assert slots.flags[0].tolist() == [1, 0, 1]
    assert slots.take([64], [1]) == (1, [256])
    assert len(slots) == 2


def test_a_slot_is_free_once_every_reader_clears_its_flag() -> None:
    slots = allocator(256)
    first = slots.take([200], [0, 1])
    assert first == (0, [0])
    assert slots.take([10], [0]) is None  # no room left: the caller sends another way
    slots.flags[0, 0] = 0
    assert slots.take([10], [0]) is None  # reader 1 still holds it
    slots.flags[0, 1] = 0
    assert slots.take([256], [2]) == (0, [0])  # the whole part again, the same slot number
    assert slots.full == 2


def test_first_fit_reuses_a_gap_between_held_slots() -> None:
    slots = allocator(64 * 10)
    a = slots.take([64 * 3], [0])
    b = slots.take([64 * 3], [0])
    c = slots.take([64 * 3], [0])
    assert [a, b, c] == [(0, [0]), (1, [192]), (2, [384])]
    slots.flags[1] = 0  # b's reader let go: a gap of three between a and c
    assert slots.take([64 * 4], [1]) is None  # too big for the gap, and for the end (one left)
    assert slots.take([64 * 2], [1]) == (1, [192])
    assert slots.take([64 * 1], [1]) == (3, [320])
    assert slots.take([64 * 1], [1]) == (4, [576])


def test_running_out_of_slot_numbers_is_no_room() -> None:
    slots = allocator(64 * 100, slots=2)
    assert slots.take([1], [0]) is not None
    assert slots.take([1], [0]) is not None
    assert slots.take([1], [0]) is None
    slots.flags[:] = 0
    assert slots.take([1], [0]) == (0, [0])


def test_a_message_larger_than_the_part_never_fits() -> None:
    slots = allocator(128)
    assert slots.take([129], [0]) is None
    assert len(slots) == 0 and slots.full == 1


@pytest.mark.parametrize("text", ["-1", "lots", "1.5"])
def test_the_budget_variable_must_be_a_whole_number(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv(shared.BYTES_VARIABLE, text)
    with pytest.raises(ValueError, match="GEODE_SHARED_BYTES must be a whole number"):
        shared.node_budget()


def test_the_budget_defaults_and_can_turn_the_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(shared.BYTES_VARIABLE, raising=False)
    assert shared.node_budget() == shared.DEFAULT_BYTES
    monkeypatch.setenv(shared.BYTES_VARIABLE, "0")
    assert shared.node_budget() == 0
