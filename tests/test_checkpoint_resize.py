"""A restart on another number of ranks: nodes move to rank k mod P' with their queued and
in-flight messages (each delivered once), their pairs' numbers and their per-node state; topics
and work queues move with their publishers, sequencers, dispatchers, subscribers and
consumers."""

from __future__ import annotations

from pathlib import Path

import pytest
from mpirun import Result, mpirun

pytestmark = pytest.mark.mpi

SCRIPT = ["-m", "geode_mpi", "tests/scripts/ckpt_resize.py"]
CHANNELS = ["-m", "geode_mpi", "tests/scripts/ckpt_resize_channels.py"]


def save_then_restart(
    script: list[str], directory: str, saved: int, restarted: int, *load: str, both: str = ""
) -> Result:
    """Checkpoint on ``saved`` ranks, restart on ``restarted``: each job must say it did (the
    restart's result). ``both``: an argument for both jobs, after ``load``'s."""
    given = [both] if both else []
    first = mpirun(saved, [*script, "save", directory, *given], timeout=120)
    assert first.returncode == 0, first.explain()
    assert f"saved on {saved} ranks" in first.stdout, first.explain()
    second = mpirun(restarted, [*script, "load", directory, *load, *given], timeout=120)
    assert second.returncode == 0, second.explain()
    assert f"restored on {restarted} ranks" in second.stdout, second.explain()
    return second


@pytest.mark.parametrize(("saved", "restarted"), [(4, 2), (4, 3), (2, 4)])
def test_a_restart_on_another_number_of_ranks_moves_the_nodes(
    tmp_path: Path, saved: int, restarted: int
) -> None:
    save_then_restart(SCRIPT, str(tmp_path / "checkpoints"), saved, restarted, str(saved))


def state_warnings(result: Result) -> list[str]:
    """The restart's warnings of per-rank state that does not follow the nodes, each rank 0's,
    without the time."""
    lines = [line for line in result.stderr.splitlines() if "restored_state" in line]
    prefix = " [rank 0/"
    assert all(prefix in line for line in lines), result.explain()
    return [line.split(" WARNING geode_mpi: ", 1)[-1] for line in lines]


@pytest.mark.parametrize(("saved", "restarted"), [(4, 2), (2, 1)])
def test_a_restart_on_fewer_ranks_warns_once_of_the_per_rank_state_it_drops(
    tmp_path: Path, saved: int, restarted: int
) -> None:
    """Each rank saved ``state={"rank": r}``: that of the ranks the new job lacks goes nowhere
    (jobs/pipeline.py's reducer lost its counters so, silently, restarted on 1 rank)."""
    second = save_then_restart(SCRIPT, str(tmp_path / "c"), saved, restarted, str(saved))
    (warning,) = state_warnings(second)  # once, from rank 0
    gone = range(restarted, saved)
    assert (
        f"restart on {restarted} rank(s) from checkpoint epoch 1 of {saved}: the per-rank state "
        f"(restored_state) of {len(gone)} old rank(s) this job does not have is not restored (a "
        f"rank's goes to the rank of its number): "
    ) in warning, second.explain()
    listed = "; ".join(f"rank {old} (keys 'rank')" for old in gone)
    assert f"{listed}; keep what must survive a change of size in node_state" in warning


def test_a_restart_on_more_ranks_warns_that_the_new_ranks_state_is_empty(tmp_path: Path) -> None:
    second = save_then_restart(SCRIPT, str(tmp_path / "c"), 2, 3, "2")
    assert state_warnings(second) == [
        "restart on 3 rank(s) from checkpoint epoch 1 of 2: restored_state is {} on the new "
        "rank(s) 2 (rank 0's has keys 'rank'); keep what must survive a change of size in "
        "node_state"
    ], second.explain()


@pytest.mark.parametrize(("saved", "restarted"), [(4, 2), (4, 3), (2, 4)])
def test_topics_and_work_queues_move_with_their_nodes(
    tmp_path: Path, saved: int, restarted: int
) -> None:
    save_then_restart(CHANNELS, str(tmp_path / "checkpoints"), saved, restarted)


@pytest.mark.parametrize(("saved", "restarted"), [(2, 3)])
def test_topics_and_work_queues_named_with_a_slash_move_too(
    tmp_path: Path, saved: int, restarted: int
) -> None:
    """A topic or work queue whose name held a '/' (or '%', ' ', '.') failed every
    checkpoint on every rank: "checkpoint key 'sim/news' must be a non-empty str without '/'"."""
    prefix = "sim/%2F ./"
    save_then_restart(CHANNELS, str(tmp_path / "checkpoints"), saved, restarted, both=prefix)


@pytest.mark.parametrize(("saved", "restarted"), [(4, 2), (2, 3)])
def test_a_consumer_whose_work_queue_ended_stays_ended_on_its_new_rank(
    tmp_path: Path, saved: int, restarted: int
) -> None:
    """Which consumers took their WorkDone was not saved: after the restart the one that
    had waited in get() for a second WorkDone, which the dispatcher never sends."""
    script = ["-m", "geode_mpi", "tests/scripts/ckpt_resize_workdone.py"]
    save_then_restart(script, str(tmp_path / "checkpoints"), saved, restarted)


@pytest.mark.parametrize(("saved", "restarted"), [(4, 2), (2, 4), (1, 3)])
def test_what_a_sequencer_holds_moves_with_its_node(
    tmp_path: Path, saved: int, restarted: int
) -> None:
    """A total-order topic's sequencer held messages for a full subscriber in memory only:
    a restart lost them (tests/mpi/test_topic_restarts.py on one number of ranks)."""
    script = ["-m", "geode_mpi", "tests/scripts/ckpt_resize_held.py"]
    save_then_restart(script, str(tmp_path / "checkpoints"), saved, restarted)
