"""One program for both worlds: done handles off the source's rank, requests served in any
wait, the warning about messages never received, and retries waited out in one process."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from geode_mpi import Geode, Message, QueueConfig, ReceiveTimeout
from geode_mpi.core import registry
from geode_mpi.transport import InProcHub


class Ask(Message):
    pass


class Answer(Message):
    """A reply of its own type: the requester must get this class back."""


def two_ranks() -> list[Geode]:
    hub = InProcHub(2)
    return [Geode(4, transport=hub.endpoint(rank)) for rank in range(2)]


def test_every_off_rank_send_returns_a_done_handle() -> None:
    a, b = two_ranks()
    queue = a.work_queue("q", ["node0"])
    handles = [
        a.isend("x", "node1", "node0", ack=True),
        a.group(["node0", "node2"]).send("g", "node1"),
        a.topic("t", ["node1"], ["node0"]).publish("p", "node1", ack=True),
        queue.put("task", "node1"),
    ]
    b.topic("t", ["node1"], ["node0"])
    for handle in handles:
        assert not handle.local and handle.done() and handle.acked
        assert handle.id is None and handle.seq is None and handle.source == "node1"
        handle.wait(timeout=0)
    assert a.pending("node0") == 0 and a.pending("node2") == 0 and queue.waiting == 0


def test_a_reply_keeps_its_type_in_one_process() -> None:
    geode = Geode()

    @geode.on(Ask)
    def answer(msg: Message) -> Answer:
        return Answer(msg.data * 2)

    for node in geode.nodes:  # node0 asks itself too
        reply = geode.request(Ask(21), node, timeout=5)
        assert type(reply) is Answer and reply.data == 42 and reply.source == node
    geode.close()


def test_a_request_from_a_source_hosted_elsewhere_is_refused_before_sending() -> None:
    a, _ = two_ranks()
    with pytest.raises(LookupError, match=r"request\('node1'\) was called on rank 0"):
        a.request(Ask(1), "node2", source="node1", timeout=1)
    assert a.pending("node2") == 0 and a.pending("node0") == 0


def test_messages_never_received_are_named_when_a_with_block_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="geode_mpi"), Geode() as geode:
        geode.send(Ask(1), "node0", "node2")
        geode.send(Ask(2), "node1", "node2")
        geode.send("plain", "node0", "node2")
        geode.send("kept", "node0", "node3")
        geode.send("taken", "node0", "node1")
        geode.receive("node1")
    (record,) = [r for r in caplog.records if "never received" in r.getMessage()]
    assert record.name == "geode_mpi" and record.levelno == logging.WARNING
    text = record.getMessage()
    assert "node2: 3 message(s) (2 Ask, 1 Message)" in text
    assert "node3: 1 message(s) (1 Message)" in text and "node1" not in text


def test_the_warning_about_messages_never_received_names_ten_nodes_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A rank of 2000 nodes warned in one 70 KB line, naming every node: now the ten with
    the most messages, then how many more nodes and messages in all."""
    with caplog.at_level(logging.WARNING, logger="geode_mpi"), Geode(2000) as geode:
        for node in geode.local_nodes:
            geode.send(1, node, node)
        for _ in range(2):
            geode.send(2, "node0", "node1500")
    (record,) = [r for r in caplog.records if "never received" in r.getMessage()]
    text = record.getMessage()
    assert len(text) < 1000
    assert "never received: node1500: 3 message(s) (3 Message); node0: 1 message(s)" in text
    assert "node9: 1" not in text and "node8: 1 message(s) (1 Message); ... and 1990" in text
    assert "... and 1990 more nodes, 2002 messages in all (receive() them" in text


def test_an_explicit_close_warns_only_at_exit_and_only_if_still_queued(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry._closed_early.clear()  # what earlier tests left
    taken, kept = Geode(), Geode()
    for geode in (taken, kept):
        geode.send("last words", "node0", "node3")
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        taken.close()
        kept.close()
        assert "never received" not in caplog.text  # still receivable after close()
        assert taken.receive("node3").data == "last words"
        registry.close_all()  # what interpreter exit does
    warnings = [r.getMessage() for r in caplog.records if "never received" in r.getMessage()]
    assert warnings == [
        "the job ends with messages never received: node3: 1 message(s) (1 Message) "
        "(receive() them, or run() their handlers, before the end)"
    ]


def test_a_close_inside_a_with_block_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    """close() in the block, then its end: said at the end of the block and again at exit."""
    registry._closed_early.clear()  # what earlier tests left
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        with Geode() as geode:
            geode.send("x", "node0", "node1")
            geode.close()
            geode.close()  # (noted once however often)
        assert caplog.text.count("never received") == 1  # the block's end says it
        registry.close_all()  # what interpreter exit does
    warnings = [r.getMessage() for r in caplog.records if "never received" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "node1: 1 message(s) (1 Message)" in warnings[0]


def test_the_warning_names_the_last_checkpoint_that_holds_what_was_queued(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A job that checkpointed and then ended with messages queued was told only that they
    were never received (a reader restarting from the checkpoint thought them lost)."""
    with caplog.at_level(logging.WARNING, logger="geode_mpi"):
        with Geode(checkpoint_dir=tmp_path) as geode:
            geode.send("kept", "node0", "node3")
            assert geode.checkpoint(timeout=30) == 1
        registry.close_all()
    warnings = [r.getMessage() for r in caplog.records if "never received" in r.getMessage()]
    assert warnings == [
        "the job ends with messages never received: node3: 1 message(s) (1 Message) "
        "(receive() them, or run() their handlers, before the end; checkpoint 1 holds those "
        "queued when it was written, for a restart)"
    ]


def test_a_clean_job_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="geode_mpi"), Geode() as geode:
        geode.send("x", "node0", "node1")
        geode.receive("node1")
    assert "never received" not in caplog.text


@pytest.mark.parametrize("call", ["receive", "try_then_receive"])
def test_an_embedded_receive_waits_out_a_retry_back_off(call: str) -> None:
    geode = Geode(queue=QueueConfig(ack="explicit", retry_delay=0.3))
    geode.send("again", "node0", "node1")
    geode.receive("node1").nack(ValueError("not yet"))
    if call == "try_then_receive":
        assert geode.try_receive("node1") is None  # held back: not deliverable yet
    started = time.monotonic()
    msg = geode.receive("node1", timeout=30)
    waited = time.monotonic() - started
    assert msg.data == "again" and 0.2 <= waited < 25
    msg.ack()
    geode.close()


def test_an_embedded_receive_does_not_wait_for_a_retry_due_after_its_timeout() -> None:
    geode = Geode(queue=QueueConfig(ack="explicit", retry_delay=30))
    geode.send("again", "node0", "node1")
    geode.receive("node1").nack(ValueError("not yet"))
    started = time.monotonic()
    with pytest.raises(ReceiveTimeout):
        geode.receive("node1", timeout=0.5)
    assert time.monotonic() - started < 0.4  # raised at once: nothing can come in time
    geode.close()


SPMD_SCRIPT = """
from geode_mpi import Geode

with Geode() as geode:
    if geode.rank == 0:  # started with plain python: rank 0 of 1, so the else never runs
        for node in geode.nodes[1:]:
            geode.send({"work for": node}, dest=node)
    else:
        print(geode.receive(timeout=60).data)
"""

LEFT_OPEN_SCRIPT = """
from geode_mpi import Geode, Message

class Task(Message):
    pass

geode = Geode()  # never closed: interpreter exit closes it
geode.send(Task(1), "node0", "node2")
geode.send(Task(2), "node1", "node2")
"""


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (SPMD_SCRIPT, [f"node{k}: 1 message(s) (1 Message)" for k in (1, 2, 3)]),
        (LEFT_OPEN_SCRIPT, ["node2: 2 message(s) (2 Task)"]),
    ],
    ids=["spmd-with-plain-python", "left-open-at-exit"],
)
def test_a_job_that_ends_with_messages_never_received_says_so(
    script: str, expected: list[str]
) -> None:
    from mpirun import python

    result = python(["-c", script], timeout=60)
    assert result.returncode == 0, result.explain()
    assert "WARNING" not in result.stdout
    (line,) = [line for line in result.stderr.splitlines() if "never received" in line]
    for part in expected:
        assert part in line, result.stderr
