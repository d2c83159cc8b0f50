"""A long wait is never silent: the notice of a long wait and --hang-timeout, as a user runs
them (tests/scripts/long_waits.py: ordinary mistakes that used to hang without a word)."""

from __future__ import annotations

import pytest
from mpirun import Result, clean_env, load_slack, mpirun

JOB = "tests/scripts/long_waits.py"


def _run(mode: str, *options: str, notice: str = "1") -> Result:
    return mpirun(
        2,
        ["-m", "geode_mpi", *options, JOB, mode],
        timeout=90,
        env=clean_env(GEODE_WAIT_NOTICE=notice),
    )


def _without_the_runner(mode: str) -> Result:
    """``mpiexec -n 2 python long_waits.py MODE``, notice 1 s, hang timeout 2 s."""
    env = clean_env(GEODE_WAIT_NOTICE="1", GEODE_HANG_TIMEOUT="2")
    return mpirun(2, [JOB, mode], timeout=90, env=env)


def _finished(result: Result) -> str:
    assert result.returncode == 0 and not result.timed_out, result.explain()
    return result.stderr


@pytest.mark.mpi
def test_a_receive_that_waits_long_says_so() -> None:
    result = _run("receive")
    err = _finished(result)
    assert "rank 0: receive timed out" in result.stdout
    # (the clock is the rank's, not the call's: a receive(timeout=0.3) in a loop adds up)
    notice = "[rank 0/2 node0] WARNING geode_mpi: nothing has arrived or left on rank 0 for "
    assert notice + "1 s; it waits in receive(timeout=3.0)\n" in err, err
    assert f"  at {JOB}:" in err and "geode.receive(timeout=3)" in err
    assert "  waiting for a message at node0 (0 other message(s) queued there)" in err
    assert "  node0: 0 message(s) queued, 3 received, 0 sent" in err
    assert "if the job is stuck, --hang-timeout SECONDS reports every rank's wait" in err
    assert "next notice after a wait of 2 s" in err
    assert 1 <= err.count(notice) <= 2  # at 1 s and 2 s, doubling: not once a pause


@pytest.mark.mpi
def test_a_send_waiting_for_room_says_the_queue_is_full() -> None:
    err = _finished(_run("full"))
    call = "send(message=2, dest='node1', timeout=3.0)"
    assert "[rank 0/2 node0] WARNING geode_mpi: nothing has arrived or left on rank 0" in err
    assert f"; it waits in {call}\n" in err, err
    assert (
        "  waiting for room: no room at node1 (a full queue, capacity 4) (node1's queue "
        "stayed full for node0: is node1 receiving?)"
    ) in err, err


@pytest.mark.mpi
def test_hang_timeout_says_a_send_waits_for_room_in_a_full_queue() -> None:
    result = _run("full-forever", "--hang-timeout", "2", notice="0")
    assert result.returncode == 124 and not result.timed_out, result.explain()
    err = result.stderr
    assert "[rank 0/2 node0] geode_mpi: no progress for" in err
    assert "[rank 0/2 node0]   waiting for room: no room at node1 (a full queue, capacity 4)" in err
    assert "[rank 1/2 node1]   waiting for room: no room at node0 (a full queue, capacity 4)" in err
    assert "WARNING" not in err  # GEODE_WAIT_NOTICE=0: no notice


@pytest.mark.mpi
def test_close_waiting_for_the_other_ranks_says_so() -> None:
    result = _run("close", "--wait-notice", "1", notice="")
    err = _finished(result)
    assert (
        "[rank 0/2 node0] WARNING geode_mpi: nothing has arrived or left on rank 0 for 1 s; "
        "it waits in close() (at the end of the with block)"
    ) in err, err
    assert "  waiting for the other ranks to call close() (every rank must" in err


@pytest.mark.mpi
def test_a_topic_made_on_one_rank_only_says_topic_is_collective() -> None:
    # The wait in topic() named no more than the call: nothing said what it waits for, nor
    # that the other ranks must call topic() too (a port of a bcast makes it on its root).
    result = _run("topic-on-root", "--hang-timeout", "3")
    assert result.returncode == 124 and not result.timed_out, result.explain()
    err = result.stderr
    waiting = (
        "waiting for the other ranks to call topic('params') too: it is collective (every "
        "rank calls it, with the same arguments, in the same order)"
    )
    assert "; it waits in topic(name='params', publishers=['node0'], subscribers=['node1']" in err
    assert f"\n  {waiting}\n" in err, err  # the notice
    assert f"[rank 0/2 node0]   {waiting}\n" in err, err  # the --hang-timeout report
    # and the rank that never made it: its receive(topic=) says why there is no such topic
    assert "rank 1: no topic 'params' in this job (topics: none); topic() is collective" in (
        result.stdout
    ), result.stdout


@pytest.mark.mpi
def test_a_work_queue_get_without_finish_says_so() -> None:
    err = _finished(_run("queue"))
    assert "[rank 1/2 node1] WARNING geode_mpi: nothing has arrived or left on rank 1" in err
    assert "; it waits in get(timeout=3.0)\n" in err, err
    assert "tasks.get(timeout=3)" in err
    # (what a get() waits for, and why nothing tells it that node0's rank is in close())
    waiting = (
        "  waiting for a task of work queue 'jobs' at node1 from its dispatcher node0 (0 other "
        "message(s) queued there); get() returns None only once every producer (node0) has "
        "called finish(): one whose rank is in close() without it leaves get() waiting"
    )
    assert waiting in err, err


@pytest.mark.mpi
def test_a_geode_made_late_on_one_rank_is_noticed_from_a_timer() -> None:
    result = _run("startup")
    err = _finished(result)
    assert (
        "WARNING geode_mpi: Geode() on rank 0 has waited 1 s for the other ranks to make "
        "their Geode: every rank must create its Geode (the same number of times, in the "
        "same order)"
    ) in err, err
    assert "rank 0: Geode made" in result.stdout and "rank 1: Geode made" in result.stdout


@pytest.mark.mpi
def test_hang_timeout_ends_a_geode_made_on_one_rank_only() -> None:
    result = _run("startup-forever", "--hang-timeout", "2")
    assert result.returncode == 124 and not result.timed_out, result.explain()
    err = result.stderr
    assert "[rank 0/2] geode_mpi: no progress for 2" in err, err
    assert "(--hang-timeout 2): Geode() on rank 0 has waited 2 s" in err
    assert "; aborting the job" in err
    assert result.seconds < 30 * load_slack()  # not rank 1's 60 s


@pytest.mark.mpi
def test_without_the_runner_a_rank_late_to_start_mpi_is_not_aborted() -> None:
    # mpiexec python job.py: Geode() starts MPI, and mpi4py holds the GIL in MPI_Init, which
    # waits for rank 1's start: a timer started before could not run, then counted those 4 s
    # against --hang-timeout 2 and aborted a job about to succeed. It starts after MPI_Init.
    result = _without_the_runner("late-init")
    assert result.returncode == 0 and not result.timed_out, result.explain()
    assert "rank 0: Geode made" in result.stdout and "rank 1: Geode made" in result.stdout
    assert "no progress" not in result.stderr


@pytest.mark.mpi
def test_without_the_runner_a_geode_made_on_one_rank_only_is_ended() -> None:
    result = _without_the_runner("startup-forever")
    assert result.returncode == 124 and not result.timed_out, result.explain()
    assert "geode_mpi: no progress for 2" in result.stderr, result.stderr
    assert "Geode() on rank 0 has waited 1 s for the other ranks" in result.stderr
