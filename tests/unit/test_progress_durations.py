"""The durations of progress lines: short work says how short, not "0 s" ("about 0 s left"
read as done while work remained)."""

from __future__ import annotations

import pytest

from geode_mpi.core.progress import _duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0004, "under 0.001 s"),
        (0.0051, "0.0051 s"),
        (0.5, "0.5 s"),
        (1.234, "1.2 s"),
        (9.6, "9.6 s"),
        (12.4, "12 s"),
        (200, "3.3 min"),
        (7200, "2.0 h"),
    ],
)
def test_a_duration_keeps_two_digits_under_ten_seconds(seconds: float, text: str) -> None:
    assert _duration(seconds) == text
