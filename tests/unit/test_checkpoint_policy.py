"""Geode() checks its checkpoint policy's arguments, with or without a checkpoint_dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from geode_mpi import Geode


@pytest.mark.parametrize(
    ("kwargs", "error", "said"),
    [
        # Before: never a checkpoint by time.
        ({"checkpoint_every": float("nan")}, ValueError, "checkpoint_every must be >= 0, got nan"),
        # Before: a checkpoint at every call.
        ({"checkpoint_every": -5}, ValueError, "checkpoint_every must be >= 0, got -5"),
        (
            {"checkpoint_every_messages": -3},
            ValueError,
            "checkpoint_every_messages must be an int >= 0, got -3",
        ),
        # Before: accepted; maybe_checkpoint() then raised a bare TypeError, on rank 0 only.
        (
            {"checkpoint_every": "600"},
            TypeError,
            "checkpoint_every must be a number of seconds or None, got '600'",
        ),
        (
            {"checkpoint_every_messages": "100"},
            TypeError,
            "checkpoint_every_messages must be an int >= 0 or None, got '100'",
        ),
        # Before: "keep must be an int >= 2", not naming the argument.
        ({"keep_checkpoints": 1}, ValueError, "keep_checkpoints must be an int >= 2, got 1"),
        ({"keep_checkpoints": 2.0}, TypeError, "keep_checkpoints must be an int >= 2, got 2.0"),
    ],
)
@pytest.mark.parametrize("with_dir", [True, False], ids=["checkpoint_dir", "no-dir"])
def test_a_bad_checkpoint_policy_is_refused_naming_it(
    kwargs: dict[str, Any], error: type[Exception], said: str, with_dir: bool, tmp_path: Path
) -> None:
    directory = tmp_path if with_dir else None
    with pytest.raises(error, match=f"^{said.replace('(', '.').replace(')', '.')}$"):
        Geode(2, checkpoint_dir=directory, **kwargs)


@pytest.mark.parametrize("kwargs", [{"checkpoint_every": 0}, {"checkpoint_every_messages": 0}])
def test_a_policy_of_zero_checkpoints_at_every_call(kwargs: dict[str, Any], tmp_path: Path) -> None:
    with Geode(2, checkpoint_dir=tmp_path, **kwargs) as geode:
        assert [geode.maybe_checkpoint() for _ in range(3)] == [1, 2, 3]
