"""What a requester and a run() loop see of a handler's outcome, in the embedded world: a
failed request raises HandlerError, a None answers with None, which handler a message gets,
and run(count=) checked and ended when nothing more can come."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from geode_mpi import Geode, HandlerError, Message, QueueConfig


class Ask(Message):
    pass


class SubAsk(Ask):
    pass


def test_a_request_whose_handler_raises_gets_a_handler_error_naming_it() -> None:
    geode = Geode()
    calls = []

    @geode.on(Ask)
    def answer(msg: Message) -> int:
        calls.append(msg.data)
        raise ValueError(f"cannot answer {msg.data!r}")

    started = time.monotonic()
    with pytest.raises(HandlerError) as caught:
        geode.request(Ask(7), "node1", timeout=30)
    assert time.monotonic() - started < 5  # after its retries' back-off, not the timeout
    error = caught.value
    assert isinstance(error, RuntimeError)
    assert str(error) == (
        f"request {error.request_id} (Ask) failed on node1 after 3 attempt(s): ValueError: "
        "cannot answer 7 (it is in node1's dead letters)"
    )
    assert (error.node, error.type_name, error.error_type, error.attempts) == (
        "node1",
        "Ask",
        "ValueError",
        3,
    )
    assert calls == [7, 7, 7]
    [dead] = geode.dead_letters("node1")
    assert dead.message.id == error.request_id
    assert geode.try_receive("node0") is None  # the failure was the answer, nothing more
    geode.close()


def test_a_request_failing_once_is_answered_by_its_retry() -> None:
    geode = Geode()
    tries = []

    @geode.on(Ask)
    def answer(msg: Message) -> int:
        tries.append(msg.data)
        if len(tries) == 1:
            raise RuntimeError("first try fails")
        return msg.data * 2

    assert geode.request(Ask(21), "node2", timeout=30).data == 42
    assert tries == [21, 21] and geode.dead_letters("node2") == []
    geode.close()


def test_a_request_whose_handler_returns_none_gets_a_reply_of_none() -> None:
    geode = Geode()
    seen = []
    geode.on(Ask)(lambda msg: seen.append(msg.data))  # returns None
    reply = geode.request(Ask(7), "node1", timeout=30)
    assert (type(reply), reply.data, reply.source, seen) == (Message, None, "node1", [7])
    # A plain message whose handler returns None still gets no reply.
    geode.send(Ask(8), "node0", "node1")
    assert geode.run(count=1).processed == 1
    assert geode.try_receive("node0") is None
    geode.close()


def test_a_handler_that_replies_by_hand_sends_one_reply() -> None:
    geode = Geode()

    @geode.on(Ask)
    def answer(msg: Message) -> None:
        geode.reply(msg, f"by hand {msg.data}")
        if msg.data == "then fails":
            raise ValueError("after the reply")

    assert geode.request(Ask("once"), "node1", timeout=30).data == "by hand once"
    assert geode.try_receive("node0") is None  # no second reply of None
    # Replied, then failed: the reply stands, and no failure follows it. Before, it was
    # retried, and each retry's reply by hand reached node0's queue as a stray second reply.
    assert geode.request(Ask("then fails"), "node1", timeout=30).data == "by hand then fails"
    assert geode.run("node1", timeout=30).processed == 0  # no retry
    assert geode.pending("node1") == 0
    [dead] = geode.dead_letters("node1")
    assert (dead.message.data, dead.attempts) == ("then fails", 1)
    assert dead.error == "ValueError: after the reply"
    assert geode.try_receive("node0") is None
    geode.close()


def test_a_reply_by_hand_after_the_handler_answered_raises_naming_the_request() -> None:
    # The handler returned None (the request's reply: a Message of None); a later reply by
    # hand went to the requester as a stray message its next receive() returned.
    geode = Geode()
    held: list[Message] = []
    geode.on(Ask)(held.append)  # returns None
    assert geode.request(Ask(1), "node1", timeout=30).data is None
    with pytest.raises(ValueError, match=r"message \d+ from node0 was answered already on node1"):
        geode.reply(held[0], "late")
    assert geode.try_receive("node0") is None
    geode.close()


def test_a_handler_that_replies_by_hand_and_returns_a_value_sends_one_reply() -> None:
    geode = Geode()
    second: list[BaseException] = []

    @geode.on(Ask)
    def answer(msg: Message) -> str:
        geode.reply(msg, "by hand")
        try:
            geode.reply(msg, "twice")
        except ValueError as exc:
            second.append(exc)
        return "returned too"

    assert geode.request(Ask(1), "node1", timeout=30).data == "by hand"
    assert geode.try_receive("node0") is None  # neither "twice" nor "returned too"
    assert len(second) == 1 and "answered already" in str(second[0])
    geode.close()


def test_a_request_that_run_finds_no_handler_for_gets_a_handler_error() -> None:
    geode = Geode()
    outcome: list[BaseException] = []

    def requester() -> None:
        try:
            geode.request(Ask(1), "node2", timeout=30)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=requester)
    thread.start()
    geode.on(SubAsk)(lambda msg: "only SubAsk")  # nothing for Ask
    geode.run("node2", count=1, timeout=30)  # takes the request, dead-letters it
    thread.join(30)
    [error] = outcome
    assert isinstance(error, HandlerError) and error.error_type == "LookupError"
    assert "no handler for Ask on node2" in str(error)
    geode.close()


def test_arequest_raises_the_handler_error_too() -> None:
    geode = Geode()

    @geode.on(Ask)
    def answer(msg: Message) -> int:
        raise KeyError(msg.data)

    async def main() -> None:
        with pytest.raises(HandlerError, match="KeyError: 'k'"):
            await geode.arequest(Ask("k"), "node3", timeout=30)

    asyncio.run(main())
    geode.close()


def test_the_most_specific_class_wins_over_a_node_own_handler_for_a_base() -> None:
    geode = Geode()
    got = []
    geode.on(Ask, node="node1")(lambda msg: got.append(("Ask handler", msg.dest)))
    geode.on(SubAsk)(lambda msg: got.append(("SubAsk handler", msg.dest)))
    geode.send(SubAsk(1), "node0", "node1")
    geode.send(SubAsk(2), "node0", "node2")
    geode.send(Ask(3), "node0", "node1")
    geode.run(timeout=10)
    assert sorted(got) == [
        ("Ask handler", "node1"),
        ("SubAsk handler", "node1"),
        ("SubAsk handler", "node2"),
    ]
    geode.close()


@pytest.mark.parametrize(
    ("count", "error", "text"),
    [
        (1.5, TypeError, "count must be an int >= 1 or None, got 1.5"),
        (True, TypeError, "count must be an int >= 1 or None, got True"),
        ("2", TypeError, "count must be an int >= 1 or None, got '2'"),
        (0, ValueError, "count must be >= 1 (None: no limit), got 0"),
        (-1, ValueError, "count must be >= 1 (None: no limit), got -1"),
    ],
)
def test_run_names_a_bad_count(count: object, error: type, text: str) -> None:
    geode = Geode()
    geode.on(Message)(lambda msg: None)
    geode.send("one", "node0", "node1")
    with pytest.raises(error) as caught:
        geode.run(count=count)  # type: ignore[arg-type]
    assert str(caught.value) == text
    assert geode.pending("node1") == 1  # nothing was processed
    geode.close()


def test_run_with_a_count_ends_when_no_message_can_come_in_one_process() -> None:
    geode = Geode(queue=QueueConfig(retry_delay=0.05))
    geode.on(Message)(lambda msg: None)
    geode.send("only one", "node0", "node1")
    started = time.monotonic()
    summary = geode.run(count=2)  # as receive() raises at once there
    assert (summary.processed, summary.reason) == (1, "quiescent")

    # A failing message is retried after its back-off before the loop ends.
    def fail(msg: Message) -> None:
        raise ValueError("no")

    geode.on(Message)(fail)
    geode.send("fails", "node0", "node1")
    summary = geode.run(count=5)
    assert (summary.failed, summary.dead_letters, summary.reason) == (3, 1, "quiescent")
    assert time.monotonic() - started < 5
    # Without count, run(quiescent=False) still waits for its timeout (nothing else ends it).
    assert geode.run(timeout=0.05, quiescent=False).reason == "timeout"
    geode.close()


def test_a_request_taken_by_receive_has_one_reply_even_taken_again_after_a_nack() -> None:
    """The one-reply rule held only while a handler answered: a request taken by receive()
    and replied to twice, or nacked, taken again and replied to again, sent its requester a
    second reply, a stray message with ``reply_to`` in its queue (a review found it)."""
    geode = Geode(["node0", "node1"], queue=QueueConfig(ack="explicit", retry_delay=0.0))
    answers: list[object] = []

    def serve() -> None:
        request = geode.receive("node1", timeout=5)
        geode.reply(request, "first")
        with pytest.raises(ValueError, match="answered already"):
            geode.reply(request, "second")
        request.nack()
        again = geode.receive("node1", timeout=5)
        assert (again.id, again.data) == (request.id, request.data)  # taken again
        with pytest.raises(ValueError, match=f"message {request.id} from node0"):
            geode.reply(again, "third")
        again.ack()
        answers.append("served")

    server = threading.Thread(target=serve)
    server.start()
    assert geode.request("question", "node1", source="node0", timeout=5).data == "first"
    server.join(timeout=10)
    assert answers == ["served"]
    assert geode.try_receive("node0") is None  # no stray second reply
    geode.close()
