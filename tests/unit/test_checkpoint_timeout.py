"""checkpoint(timeout=) bounds the whole call: the arrival and every round of the drain share
one deadline (each round used to get the full timeout again)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mpirun import load_slack

from geode_mpi import Geode, GeodeTimeoutError


class SlowDrain:
    """A drain whose every round takes ``round_s`` and finds something still to forward, as
    while a rank keeps sending: the rounds never end by themselves."""

    def __init__(self, round_s: float) -> None:
        self.round_s = round_s
        self.timeouts: list[float | None] = []

    def __call__(
        self, timeout: float | None = None, pending: Callable[[], bool] | None = None
    ) -> bool:
        self.timeouts.append(timeout)
        if len(self.timeouts) > 20:  # (before the fix every round got the whole timeout again)
            raise AssertionError("the drain's rounds never ended")
        time.sleep(self.round_s if timeout is None else min(self.round_s, timeout))
        return True


def test_the_drain_rounds_share_the_calls_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        assert geode.checkpoint() == 1  # numpy and h5py loaded: only the timed call below
        drain = SlowDrain(0.1)
        monkeypatch.setattr(geode.transport, "drain", drain)
        started = time.monotonic()
        with pytest.raises(
            GeodeTimeoutError, match="checkpoint\\(\\) on rank 0 timed out after 0.35 s"
        ):
            geode.checkpoint(timeout=0.35)
        took = time.monotonic() - started
        monkeypatch.undo()
        assert 0.35 <= took < 0.35 + 0.5 * load_slack(), (took, drain.timeouts)
        # Each round is given what is left, never the whole timeout again.
        given = [left for left in drain.timeouts if left is not None]
        assert len(given) == len(drain.timeouts) >= 3
        assert given == sorted(given, reverse=True) and given[0] <= 0.35 and given[-1] < 0.15
        assert geode.checkpoint(timeout=5) == 2  # nothing was written: no epoch was used


def test_an_arrival_that_took_most_of_the_timeout_leaves_the_drain_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        geode.checkpoint()
        drain = SlowDrain(1.0)
        monkeypatch.setattr(geode.transport, "drain", drain)
        real_monotonic = time.monotonic
        arrived: list[float] = []

        def late_arrival(deadline: float | None = None, call: str | None = None) -> bool:
            time.sleep(0.3)  # the other ranks came late
            arrived.append(real_monotonic())
            return True

        monkeypatch.setattr(geode._runtime, "arrive", late_arrival)
        started = time.monotonic()
        with pytest.raises(GeodeTimeoutError, match="in the drain"):
            geode.checkpoint(timeout=0.4)
        took = time.monotonic() - started
        monkeypatch.undo()
        # Before: 0.3 s arriving, then 0.4 s in the drain (the drain's own timeout, below, is
        # what tells the two apart; the time only stretches with the load).
        assert took < 0.4 + 0.25 * load_slack(), took
        assert drain.timeouts and drain.timeouts[0] is not None and drain.timeouts[0] <= 0.11


class TimedOut:
    """A rooted collective that times out at its ``nth`` call (and works before)."""

    def __init__(self, real: Callable[..., object], nth: int) -> None:
        self.real, self.nth, self.calls = real, nth, 0

    def __call__(self, value: object, root: int = 0, deadline: float | None = None) -> object:
        self.calls += 1
        if self.calls == self.nth:
            raise GeodeTimeoutError("a collective step was not complete by its deadline")
        return self.real(value, root, deadline)


@pytest.mark.parametrize(
    ("step", "nth", "where"),
    [
        ("bcast", 1, "waiting for rank 0 to number the checkpoint"),
        ("gather", 1, "waiting for the other ranks to write their files"),
        ("gather", 2, "waiting for the other ranks' files to be durable \\(fsync\\)"),
        ("bcast", 2, "waiting for rank 0 to seal the checkpoint \\(its manifest\\)"),
    ],
)
def test_a_timeout_names_the_step_that_timed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, nth: int, where: str
) -> None:
    """Every timeout of the writing said "waiting for the other ranks to write their files",
    the broadcast of the checkpoint's number (before any file) and rank 0's seal too."""
    with Geode(checkpoint_dir=tmp_path) as geode:
        rooted = geode._checkpointer.rooted  # type: ignore[union-attr]
        monkeypatch.setattr(rooted, step, TimedOut(getattr(rooted, step), nth))
        with pytest.raises(
            GeodeTimeoutError, match=f"^checkpoint\\(\\) on rank 0 timed out after 60 s {where}$"
        ):
            geode.checkpoint(timeout=60)
