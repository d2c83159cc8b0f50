"""The engine between arrivals: progress, a sequencer's forwards, the one wait loop and
what a waiting rank serves, and the counters (a node's snapshot, what is in flight)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from geode_mpi.base.backoff import activity_hook
from geode_mpi.delivery.authoring import unwatched
from geode_mpi.delivery.failures import Failures
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.delivery.waiting import wait_for
from geode_mpi.errors import DecodeError

# A wait flushes pending acks once it has lasted this long: not at once, so that a reply that
# comes within microseconds (a ping-pong) does not cost an ack record per message.
FLUSH_AFTER = 100e-6
ACK_DELAY = 1e-3  # the longest a due ack waits while its node keeps calling geode_mpi


class Polling(Failures):
    """`Engine`'s progress, waits and counters."""

    # What `poll_after_take`'s poll raised (a damaged envelope), for the next `poll` to raise.
    _kept: DecodeError | None = None

    @property
    def data_received(self) -> int:
        """Data messages this rank received: queued, dropped as duplicates, or held until an
        earlier one arrives, as their senders counted them (`TopicTable.counted_apart`; see
        `data_sent`, its counterpart)."""
        apart = sum(len(pair.held) for pair in self._in.values())
        apart += sum(self.topics.counted_apart.values())
        return apart + sum(stats.received + stats.duplicates for stats in self.stats.values())

    @property
    def data_sent(self) -> int:
        """Data messages this rank sent, resends included: summed over the job, equal to the
        sum of `data_received` exactly when no message is in flight."""
        return sum(stats.sent + stats.resent for stats in self.stats.values())

    def poll(self) -> bool:
        """Run the transport once, forward what a sequencer must, and resend what timed out;
        True if anything happened.

        Raises:
            DecodeError: the transport met an arrival it cannot read (now, or in the last
                `poll_after_take`).
        """
        if self._kept is not None:
            error, self._kept = self._kept, None
            raise error
        found = self.transport.progress()
        if self.forwards:
            self.forward()
            found = True
        if self.held_for_room:
            self.retry_held()
        if self._due and time.perf_counter() - self._due_since > ACK_DELAY:
            self.flush()  # a receiver that polls without waiting still acks within ACK_DELAY
        if self.resend_after is not None:
            self._resend_due()
        hook = activity_hook.call  # --hang-timeout's watchdog
        if hook is not None:
            hook()
        return found

    def poll_after_take(self) -> None:
        """`poll`, for a call that has already taken its message (a receive's every 16th poll,
        `POLL_EVERY_RECEIVES`): a `DecodeError` from the transport (a damaged envelope) is kept
        for the next `poll` to raise, so that the message taken is returned, not lost."""
        try:
            self.poll()
        except DecodeError as exc:
            self._kept = exc

    def forward(self) -> None:
        """Hand each message waiting at a sequencer to the forwarder (`on_forward`), in arrival
        order; the forwarder counts each one done with `forwarded` once it has sent it on."""
        unwatched(self._forward)  # (a handler's thread: these sends are not its own)
        self.transport.flush()  # the copies go out now, not when this rank next waits

    def _forward(self) -> None:
        while self.forwards and self.on_forward is not None:
            index, parcel = self.forwards.popleft()
            try:
                self.on_forward(index, parcel)
            except DecodeError as exc:  # it cannot be forwarded: a dead letter of its sequencer
                self.dead_letter(index, parcel, exc, 1)

    def retry_held(self) -> None:
        """Send on what forwarders hold for want of room (`held_for_room`), as far as room
        has come: each one still held sets the flag again."""
        self.held_for_room = False
        if self.on_room is not None:
            unwatched(self.on_room)  # (a handler's thread: these sends are not its own)

    def flush_after(self, started: float) -> None:
        """Flush pending acks if a wait that began at ``started`` (perf_counter) lasted long
        enough that the peers may be waiting for them."""
        if self._due and time.perf_counter() - started > FLUSH_AFTER:
            self.flush()

    def wait(
        self,
        done: Callable[[], bool],
        deadline: float | None,
        call: str | None = None,
        what: Callable[[], str] | None = None,
    ) -> bool:
        """Drive progress until ``done()`` or the deadline (False), in the one wait loop
        (`geode_mpi.delivery.waiting`).

        Other threads may run at its pauses (the gate is handed over): callers look at the
        state again once it returns, never before (``done()`` holds when it returns True)."""
        return wait_for(self, done, deadline, call=call, what=what)

    def serve_waiting(self, leave: Collection[int] = ()) -> bool:
        """What a waiting rank does for the others: forward what a sequencer holds (and what
        forwarders hold for want of room, as far as room came), serve the
        requests whose senders wait (except at the nodes in ``leave``: their waiter handles
        them), resend what is due. True if it forwarded (a forward may land here)."""
        forwarded = bool(self.forwards)
        if forwarded:
            self.forward()
        if self.held_for_room:
            self.retry_held()  # (what it sends on lands elsewhere: no reason to look again)
        waited = self.waited
        if waited:
            if leave:
                waited.difference_update(leave)
            if waited and self.on_waited is not None:
                unwatched(self.on_waited)  # (a handler run in this wait counts on its own)
        if self.resend_after is not None:
            self._resend_due()
        return forwarded

    def snapshot(self, index: int) -> NodeStats:
        """A copy of a local node's counters, with its queue depth and outbox size now."""
        if not self.closed:
            self.flush()
            self.poll()
            self.inboxes[index].purge()  # expired messages are not counted as queued
        stats = self.stats[index]
        stats.queue_depth = len(self.inboxes[index])
        stats.queue_peak = self.inboxes[index].peak
        stats.unacked = sum(self.unacked_by_dest(index).values())
        return NodeStats(**stats.as_dict())

    def unacked_by_dest(self, index: int) -> dict[int, int]:
        """How many messages local node ``index`` sent (directly, or published on its topic
        streams) that each destination node has not acknowledged yet. Only reads."""
        streams = self.topics.streams
        found: dict[int, int] = {}
        for (src, dst), pair in self.pairs_out.items():
            if pair.outbox and (
                src == index or (src in streams and streams[src].publisher == index)
            ):
                found[dst] = found.get(dst, 0) + pair.unacked()
        return found
