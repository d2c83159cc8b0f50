"""Send handles: what isend and publish return, to wait on a send and its acknowledgement."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from geode_mpi import codec
from geode_mpi.base.gate import other_threads, senders_may_run
from geode_mpi.core.aio import deadline_of, sent_by_close_async, wait_until
from geode_mpi.core.handles_shared import ELSEWHERE, Sender, _first_held, _seen
from geode_mpi.delivery.pairs import PairOut
from geode_mpi.delivery.sending import SendTicket, sent_elsewhere
from geode_mpi.delivery.waiting import check_closing, sent_by_close
from geode_mpi.errors import AckTimeout, ClosedError, NotProcessed, SendTimeout, check_timeout

# (re-exported: their home before the split; `RunHandle` is in handles_run.py and
# `BatchHandle` in handles_batch.py, which import `SendHandle` from here)
__all__ = ["ELSEWHERE", "AckHandle", "SendHandle", "Sender", "sent_by_another_rank"]


class SendHandle:
    """A send in progress, returned by `Geode.isend` (and, completed, by `Geode.send`).

    On a rank that does not host the message's source, the rank that hosts it sends it; there
    the handle is done (and acked) at once, ``local`` is False, and ``id`` and ``seq`` are None:
    an SPMD job can wait on every rank's handle alike.

    Attributes:
        id: the message's job-unique id (None: another rank sent it).
        seq: its sequence number on the (source, dest) pair (None: another rank sent it).
        source: the sending node.
        dest: the destination node.
    """

    __slots__ = ("_geode", "_pair", "_stamp", "_ticket", "ack")

    def __init__(
        self,
        geode: Sender,
        ticket: SendTicket,
        stamp: codec.Stamp,
        pair: PairOut | None = None,
        ack: bool = False,
    ) -> None:
        self._geode = geode
        self._ticket = ticket
        self._stamp = stamp
        self._pair = pair  # its pair's outbox holds it until it is acknowledged (if tracked)
        self.ack = ack  # True: done() and wait() also cover the acknowledgement
        if ticket.held and ticket is not _seen[0]:
            _first_held(geode, ticket)

    @property
    def local(self) -> bool:
        """True if this rank sent the message; False if the rank that hosts its source did."""
        return self._stamp.id != ELSEWHERE

    @property
    def id(self) -> int | None:
        """The message's job-unique id (None when another rank sent it)."""
        mid = self._stamp.id
        return None if mid == ELSEWHERE else mid

    @property
    def seq(self) -> int | None:
        """Its sequence number on the (source, dest) pair (None when another rank sent it)."""
        seq = self._stamp.seq
        return None if seq == ELSEWHERE else seq

    @property
    def source(self) -> str:
        """The sending node."""
        return self._geode.names[self._stamp.source]

    @property
    def dest(self) -> str:
        """The destination node."""
        return self._geode.names[self._stamp.dest]

    @property
    def acked(self) -> bool:
        """True once the receiver acknowledged the message: processed it, or (see `lost`)
        dropped it or let it expire.

        Only known for tracked messages (``Geode(acks=True)``, the default, or ``ack=True``);
        False otherwise. True at once when another rank sent it (nothing to wait for here).
        """
        if self._pair is None:
            return self._stamp.id == ELSEWHERE
        return not self._pair.holds(self._stamp.seq)

    @property
    def lost(self) -> str | None:
        """``"dropped"``, ``"expired"`` or ``"dead-lettered"`` once the receiver acknowledged
        this message (sent with ``ack=True``) without processing it: its full ``drop_oldest``
        queue dropped it, its ``ttl`` ran out there, or its last attempt failed; ``"closing"``
        (not acknowledged) once the receiver's rank is in close() with no handler for it
        (``wait()`` then raises `NotProcessed`). None otherwise (processed, not acknowledged
        yet, or sent without ``ack=True``: not told).
        """
        found = self._geode.engine.lost
        if found is None or not self.ack:
            return None
        stamp = self._stamp
        return found.get((stamp.source, stamp.dest, stamp.seq))

    def check_processed(self) -> None:
        """Raise `NotProcessed` if the receiver acknowledged the message without processing it."""
        why = self.lost
        if why is not None:
            stamp = self._stamp
            raise NotProcessed(stamp.id, self.source, self.dest, stamp.seq, why, self)

    def complete(self) -> bool:
        """True once done (as `done`, without driving progress)."""
        return self._ticket.done and (not self.ack or self._settled())

    def _settled(self) -> bool:
        """True once the receiver acknowledged the message, or said that it will not
        process it (`lost`: its rank is in close() with no handler for it, no ack comes)."""
        return self.acked or self.lost is not None

    def done(self) -> bool:
        """True once the data may be reused (and, with ``ack=True``, the message was acked).

        A call that finds it not done drives progress now and then (every sixteenth such
        call, or every sixty-fourth while the message waits in a batch that has not gone out:
        a loop that checks a handle per message it sends should not poll MPI each time; a
        poll costs as much as ten sends).
        """
        ticket = self._ticket
        if ticket.done and (not self.ack or self.acked):
            return True
        geode = self._geode
        geode.unfinished_checks += 1
        if geode.unfinished_checks & (63 if ticket.held else 15):
            return False
        return self._driven(geode.poll)

    def _driven(self, step: Callable[..., Any], *args: Any) -> bool:
        """``step(*args)`` (a poll) holding the gate, then `complete`."""
        geode = self._geode
        if other_threads() and not geode.owned():
            geode.serialised(step, *args)
        else:
            step(*args)
        return self.complete()

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the data may be reused and, with ``ack=True``, the message was acked.

        A handle whose send is done (and that asked for no ack) returns at once, without
        polling: a loop that waits on every handle it keeps pays only for those in flight.

        Raises:
            SendTimeout: the send did not complete within ``timeout`` seconds.
            AckTimeout: it was sent but not acknowledged within ``timeout`` seconds. Either
                way the message stays in flight or in the outbox.
            NotProcessed: (``ack=True``) the receiver acknowledged it without processing it:
                dropped (``drop_oldest``), expired (``ttl``) or dead-lettered; see `lost`.
            ClosedError: close() began in another thread while it waited for the ack
                (``in_flight`` True: the message is delivered all the same, no ack comes). A
                wait for the data alone waits for that close() to complete the send.
        """
        timeout = check_timeout(timeout)
        if not self.ack and self._ticket.done:
            return  # (sent: no wait loop to build; a loop that waits on every handle it
            # keeps does so mostly for sends long done, and isend polls on its own)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._geode.serialised(self.wait_until, deadline, timeout)

    def wait_until(self, deadline: float | None, timeout: float | None, call: str = "wait") -> None:
        """`wait` with its deadline (`time.monotonic`) and timeout worked out, holding the gate.
        ``call``: the public call that waits (named by the `ClosedError` of a close() in
        another thread meanwhile).

        A close() that begins in another thread meanwhile delivers the message: a wait for
        its data waits for that close() to complete the send and returns; a wait for its ack
        raises `ClosedError` with ``in_flight`` True (no ack will come, but it was sent)."""
        ticket = self._ticket
        geode = self._geode
        try:
            sent = geode.wait_until(lambda: ticket.done, deadline, call)
        except ClosedError:
            sent = sent_by_close(geode.engine, lambda: ticket.done, deadline, call)
        except KeyboardInterrupt as exc:  # (a Ctrl-C in the wait: its message went all the same)
            setattr(exc, "in_flight", True)  # noqa: B010
            raise
        if not sent:
            raise self._send_timeout(timeout or 0.0)
        if not self.ack:
            return
        try:
            self._wait_acked(deadline, timeout, call)
        except KeyboardInterrupt as exc:
            setattr(exc, "in_flight", True)  # noqa: B010
            raise
        except ClosedError as exc:
            if not self.acked:  # (nor a `lost` the close() told: ClosedError says it all)
                raise ClosedError(call, exc.closer, exc.unfinished, in_flight=True) from None
            self.check_processed()  # (acked as close() began)

    def _wait_acked(self, deadline: float | None, timeout: float | None, call: str) -> None:
        """The ack part of `wait_until` (the send is done)."""
        if self.acked:
            self.check_processed()
            return
        geode = self._geode
        check_closing(geode.engine, call)  # (closed, or closing in another thread: no ack)
        local = self._local_targets()
        if local:  # their handlers may process it right here
            geode.pump(local, lambda: self.acked, deadline)
        one_process = not geode.transport.delivers_later

        def settled() -> bool:  # (or, in one process, no other thread is left to take it)
            return self._settled() or (one_process and not self._taker_may_run())

        if not settled() and not geode.wait_until(settled, deadline, call):
            raise self._ack_timeout(timeout or 0.0)
        if not self._settled():  # one process, and no thread is left that could take it
            raise self._ack_timeout(0.0, waited=False)
        self.check_processed()

    def _send_timeout(self, timeout: float) -> SendTimeout:
        """The `SendTimeout` of a wait for the send (still in flight) that did not end."""
        return SendTimeout(self._stamp.id, self.source, self.dest, timeout)

    def _ack_timeout(self, timeout: float, waited: bool = True) -> AckTimeout:
        """The `AckTimeout` of a wait for the acknowledgement that did not end."""
        stamp = self._stamp
        return AckTimeout(stamp.id, self.source, self.dest, stamp.seq, timeout, self, waited)

    # -- asyncio (docs/asyncio.md) ---------------------------------------------------------

    def __await__(self) -> Generator[Any, None, SendHandle]:
        """``await handle``: `wait_async` with no time limit; gives the handle back."""
        return self.wait_async().__await__()

    async def wait_async(self, timeout: float | None = None) -> SendHandle:
        """`wait` for asyncio: the event loop keeps running while the send completes (one
        poller per loop drives MPI progress, see docs/asyncio.md); gives the handle back.

        Raises:
            SendTimeout: the send did not complete within ``timeout`` seconds.
            AckTimeout: (``ack=True``) it was sent but not acknowledged in time. Either way
                the message stays in flight or in the outbox, and the handle can be awaited
                again.
            NotProcessed: (``ack=True``) the receiver acknowledged it without processing it.
            ClosedError: the Geode closed before the send completed (or was acknowledged):
                close() began in another thread while it was awaited, or before (as `wait`).
        """
        timeout = check_timeout(timeout)
        if self.complete():
            if self.ack:
                self.check_processed()
            return self
        await self.wait_until_async(deadline_of(timeout), timeout, "wait_async")
        return self

    async def wait_until_async(
        self, deadline: float | None, timeout: float | None, call: str
    ) -> None:
        """`wait_async` with its deadline (`time.monotonic`) and timeout worked out, as
        `wait_until` for asyncio. ``call``: the public call that awaits (named by the
        `ClosedError` of a close() meanwhile)."""
        geode = self._geode
        ticket = self._ticket
        if ticket.held:  # in a batch that has not gone out: send it now, not in 100 us
            if other_threads() and not geode.owned():
                geode.serialised(geode.transport.flush)
            else:
                geode.transport.flush()
        try:
            sent = await wait_until(geode, lambda: ticket.done, deadline, call)
        except ClosedError:  # (as `wait_until`'s)
            sent = await sent_by_close_async(geode, lambda: ticket.done, deadline, call)
        if not sent:
            raise self._send_timeout(timeout or 0.0)
        if not self.ack:
            return
        try:
            acked = await wait_until(geode, self._settled, deadline, call, False)
        except ClosedError as exc:
            if not self.acked:  # (as `wait_until`'s)
                raise ClosedError(call, exc.closer, exc.unfinished, in_flight=True) from None
            acked = True
        if not acked:
            raise self._ack_timeout(timeout or 0.0)
        self.check_processed()

    @staticmethod
    def _taker_may_run() -> bool:
        """In one process: another thread runs that may take the message (and so ack it) while
        this one waits, as a receive waits for one that may send (`senders_may_run`)."""
        return bool(other_threads()) and senders_may_run()

    def _local_targets(self) -> list[int]:
        """The receiving nodes this rank hosts (their handlers can run in this process)."""
        dest = self._stamp.dest
        return [dest] if dest in self._geode.inboxes else []

    def __repr__(self) -> str:
        if not self.local:
            return f"<SendHandle {self.source}->{self.dest} sent by rank {self._ticket.dest}>"
        state = "acked" if self.acked else "done" if self._ticket.done else "in flight"
        return f"<SendHandle id={self.id} {self.source}->{self.dest} seq={self.seq} {state}>"


class AckHandle(SendHandle):
    """The handle of a message sent with ``ack=True`` (`SendHandle`): the engine tells it,
    while it lives, if the message is acknowledged without being processed (`Acks.watch`),
    however many other such messages are told after it."""

    __slots__ = ("__weakref__", "_told")

    def __init__(
        self, geode: Sender, ticket: SendTicket, stamp: codec.Stamp, pair: PairOut
    ) -> None:
        # (`SendHandle.__init__` inline: an ack=True send's cost)
        self._geode = geode
        self._ticket = ticket
        self._stamp = stamp
        self._pair = pair
        self.ack = True
        self._told: str | None = None
        if ticket.held and ticket is not _seen[0]:
            _first_held(geode, ticket)

    def told_lost(self, why: str) -> None:
        """The receiver acknowledged the message without processing it: ``why``."""
        self._told = why

    @property
    def lost(self) -> str | None:
        """`SendHandle.lost`, kept on the handle itself."""
        told = self._told
        return told if told is not None else super().lost


def sent_by_another_rank(geode: Sender, source: int, dest: int) -> SendHandle:
    """The handle, done at once, of a send from ``source``, which another rank hosts (and
    sends it)."""
    stamp = codec.Stamp(ELSEWHERE, ELSEWHERE, 0.0, source, dest)
    return SendHandle(geode, sent_elsewhere(geode.placement.rank_of(source)), stamp)
