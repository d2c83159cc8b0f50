"""Message expiry: a ttl counted from arrival; an expired message is dropped, counted, and
dead-lettered when the queue asks for it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from geode_mpi import Geode, Message, QueueConfig, ReceiveTimeout, codec
from geode_mpi.codec import header
from geode_mpi.delivery import arriving as arriving_module
from geode_mpi.delivery.engine import queued_as
from geode_mpi.queues import NEVER, Inbox, Parcel, monotonic_clock, wall_clock
from geode_mpi.queues import inbox as inbox_module
from geode_mpi.transport import InProcHub

# Long enough to receive within it on a loaded machine, short enough to wait out.
SHORT = 0.2
# A ttl that a loaded machine cannot run out by pausing the test: `clock` runs it out.
LONG = 60.0


class Clock:
    """The monotonic clock the queues and the engine read for expiry, ``ahead`` seconds ahead
    of the real one: a test runs a ttl out by moving it on, never by sleeping through it. (The
    wall clock stays real: a message's age at arrival is measured against its sender's stamp.)"""

    def __init__(self) -> None:
        self.ahead = 0.0
        self.time = time.time
        self.perf_counter = time.perf_counter
        self.sleep = time.sleep

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead

    def advance(self, seconds: float) -> None:
        self.ahead += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(inbox_module, "time", fake)
    monkeypatch.setattr(arriving_module, "time", fake)
    return fake


def parcel(source: int, seq: int, expires: float = NEVER, priority: int = 0) -> Parcel:
    return Parcel(source, seq, header.FLAG_QOS, -1, memoryview(b""), (), 0, 0, priority, expires)


def test_the_inbox_drops_what_expired_and_hands_it_over() -> None:
    inbox = Inbox()
    gone: list[Parcel] = []
    inbox.on_expired = gone.append
    now = time.monotonic()
    inbox.push(parcel(0, 0, now - 1))
    inbox.push(parcel(0, 1, now + 60))
    inbox.push(parcel(1, 0, now - 1, priority=3))
    taken = inbox.pop()
    assert taken is not None and (taken.source, taken.seq) == (0, 1)
    # (in queue order: the lanes above priority 0 lead it)
    assert [(p.source, p.seq) for p in gone] == [(1, 0), (0, 0)]
    assert len(inbox) == 0 and inbox.ranked == 0


def test_purge_drops_the_expired_without_taking_anything() -> None:
    inbox = Inbox()
    gone: list[Parcel] = []
    inbox.on_expired = gone.append
    inbox.push(parcel(0, 0, time.monotonic() - 1))
    inbox.push(parcel(0, 1, time.monotonic() + 60))
    assert inbox.purge() == 1 and len(inbox) == 1 and len(gone) == 1
    assert inbox.purge() == 0


def test_wall_and_monotonic_clocks_convert_both_ways() -> None:
    later = time.monotonic() + 30
    assert monotonic_clock(wall_clock(later)) == pytest.approx(later, abs=1e-3)
    assert wall_clock(NEVER) == NEVER == monotonic_clock(NEVER)


def test_an_expired_message_is_dropped_and_counted() -> None:
    with Geode() as geode:
        geode.send("stale", "node0", "node1", ttl=SHORT)
        geode.send("fresh", "node0", "node1", ttl=60)
        geode.send("plain", "node0", "node1")
        time.sleep(SHORT * 1.5)  # (not waiting for a message: letting the first one expire)
        got = [geode.receive("node1", timeout=1) for _ in range(2)]
        assert [(m.data, m.ttl) for m in got] == [("fresh", 60.0), ("plain", None)]
        with pytest.raises(ReceiveTimeout):
            geode.receive("node1", timeout=0)
        stats = geode.stats("node1")
        assert (stats.expired, stats.dead_letters, stats.received, stats.processed) == (1, 0, 3, 3)
        assert geode.dead_letters("node1") == []
        assert geode.stats("node0").unacked == 0  # the expired one was acknowledged too


def test_a_message_received_in_time_is_not_expired() -> None:
    with Geode() as geode:
        geode.send("quick", "node0", "node1", ttl=60)
        assert geode.receive("node1", timeout=1).data == "quick"
        assert geode.stats("node1").expired == 0


def test_stats_and_pending_do_not_count_expired_messages_as_queued(clock: Clock) -> None:
    with Geode() as geode:
        geode.send("stale", "node0", "node1", ttl=LONG)
        clock.advance(LONG * 1.5)
        stats = geode.stats("node1")
        assert (stats.queue_depth, stats.expired) == (0, 1)
        geode.send("stale too", "node0", "node1", ttl=LONG)
        assert geode.pending("node1") == 1
        clock.advance(LONG * 1.5)
        assert geode.pending("node1") == 0 and geode.stats("node1").expired == 2


def test_dead_letter_expired_keeps_it_with_the_reason() -> None:
    queues = {"node1": QueueConfig(dead_letter_expired=True)}
    with Geode(queues=queues) as geode:
        geode.send({"reading": 1}, "node2", "node1", ttl=SHORT, priority=4)
        time.sleep(SHORT * 1.5)
        with pytest.raises(ReceiveTimeout):
            geode.receive("node1", timeout=0)
        (letter,) = geode.dead_letters("node1")
        assert letter.expired and letter.exception is None
        assert (letter.source, letter.seq, letter.attempts) == ("node2", 0, 0)
        assert letter.message is not None and letter.message.data == {"reading": 1}
        assert (letter.message.priority, letter.message.ttl) == (4, SHORT)
        assert letter.error.startswith(f"expired: its ttl of {SHORT:g} s ran out ")
        assert letter.error.endswith(" s before it was taken")
        stats = geode.stats("node1")
        assert (stats.expired, stats.dead_letters, stats.processed) == (1, 1, 1)


def test_expired_messages_return_their_credits() -> None:
    hub = InProcHub(2)
    queue = QueueConfig(capacity=8)  # a window of 2 per sending node (4 nodes)
    geodes = [Geode(queue=queue, transport=hub.endpoint(rank)) for rank in range(2)]
    try:
        sender, receiver = geodes
        for _ in range(2):
            sender.send("stale", dest="node1", ttl=SHORT)
        time.sleep(SHORT * 1.5)
        with pytest.raises(ReceiveTimeout):
            receiver.receive("node1", timeout=0)
        for k in range(2):  # the window is open again
            sender.send(k, dest="node1")
        assert [receiver.receive("node1", timeout=1).data for _ in range(2)] == [0, 1]
        assert receiver.stats("node1").expired == 2
    finally:
        for geode in geodes:
            geode.close()


def test_a_topic_message_expires_in_each_subscriber_queue(clock: Clock) -> None:
    with Geode() as geode:
        topic = geode.topic("ticks", ["node0"], ["node1", "node2"])
        topic.publish("tick", ttl=LONG)
        assert geode.receive("node1", timeout=1).data == "tick"
        clock.advance(LONG * 1.5)
        with pytest.raises(ReceiveTimeout):
            geode.receive("node2", timeout=0)
        assert (geode.stats("node1").expired, geode.stats("node2").expired) == (0, 1)


def test_a_restored_message_past_its_time_is_dropped_and_counted(tmp_path: Path) -> None:
    with Geode(checkpoint_dir=tmp_path) as geode:
        geode.send("stale", "node0", "node1", ttl=SHORT)
        geode.send("fresh", "node0", "node1", ttl=60, priority=-2)
        geode.send("plain", "node0", "node1")
        geode.checkpoint()
    time.sleep(SHORT * 1.5)
    with Geode(checkpoint_dir=tmp_path, restart=True) as again:
        got = [again.receive("node1", timeout=1) for _ in range(2)]
        assert [(m.data, m.priority) for m in got] == [("plain", 0), ("fresh", -2)]
        with pytest.raises(ReceiveTimeout):
            again.receive("node1", timeout=0)
        assert again.stats("node1").expired == 1


def test_the_ttl_counts_from_the_senders_stamp_but_never_past_the_arrival() -> None:
    def arrived(sent_at: float, ttl: float) -> float:
        stamp = codec.make_stamp(1, 0, sent_at, 0, 1)
        meta, _ = codec.encode(Message("x"), stamp, route=codec.qos_route(0, ttl))
        return queued_as(parcel(0, 0)._replace(meta=memoryview(meta))).expires

    now = time.monotonic()
    # Sent 10 s ago with a ttl of 1 s (its receiver was busy): expired as it arrives.
    assert arrived(time.time() - 10, 1.0) <= now
    # Sent 2 s ago with a ttl of 5 s: 3 s left.
    assert arrived(time.time() - 2, 5.0) == pytest.approx(now + 3, abs=0.5)
    # A sender's clock 100 s ahead of this rank's: no longer than the ttl after arrival.
    assert arrived(time.time() + 100, 5.0) == pytest.approx(now + 5, abs=0.5)


def test_a_message_waiting_for_its_retry_can_expire(clock: Clock) -> None:
    queues = {"node1": QueueConfig(ack="explicit", retry_delay=LONG, dead_letter_expired=True)}
    with Geode(queues=queues) as geode:
        geode.send("flaky", "node0", "node1", ttl=LONG)
        geode.receive("node1", timeout=1).nack(ValueError("not now"))
        clock.advance(LONG * 1.5)
        with pytest.raises(ReceiveTimeout):
            geode.receive("node1", timeout=0)
        (letter,) = geode.dead_letters("node1")
        assert letter.expired and letter.attempts == 1
        stats = geode.stats("node1")
        assert (stats.expired, stats.retries, stats.processed, stats.queue_depth) == (1, 1, 1, 0)
