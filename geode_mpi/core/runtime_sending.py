"""`Runtime`'s sends: every message a node sends to a node, its pair and route, the run it
joins, and how often a send polls."""

from __future__ import annotations

import time
from typing import Any

from geode_mpi import codec
from geode_mpi.codec.compression import Compression
from geode_mpi.codec.header import ROUTE_TOPIC
from geode_mpi.core.handles import AckHandle, SendHandle, sent_by_another_rank
from geode_mpi.core.handles_run import RunHandle
from geode_mpi.core.placement import NODE_KEYS
from geode_mpi.core.runtime_parts import POLL_EVERY_JOINS, POLL_EVERY_SENDS, RuntimeParts
from geode_mpi.errors import GeodeError, check_timeout
from geode_mpi.message import Message
from geode_mpi.tracing import TRACER


class Sending(RuntimeParts):
    """The runtime's point-to-point sends (`Runtime` inherits them)."""

    def send(
        self,
        message: Any,
        source: str | int | None,
        dest: str | int | None,
        ack: bool,
        timeout: float | None,
        reply_to: int = codec.NO_REPLY,
        flags: int = 0,
        batch: bool = True,
        via: codec.Route | None = None,  # a sequencer's or dispatcher's: where it goes on
        compress: Compression | None = None,  # the message's own setting
        block: bool = False,  # wait for room even if dest's policy is raise (`Credits.reserve`)
        room: bool = True,  # False: send without room (to a dispatcher that takes it in)
    ) -> SendHandle:
        """Send point-to-point (every kind of message a node sends to a node goes here)."""
        if self.sealed and not self.serving:
            raise self.closed_error("isend")
        if timeout is not None:  # (every send's, not only a pair's first: the fast path's test)
            timeout = check_timeout(timeout)
        if dest.__class__ not in NODE_KEYS:  # (found by the routes as an equal int: `key`)
            dest = self.placement.key(dest, "dest")
        route = None
        if source is None:
            try:
                route = self.routes.get(dest)
            except TypeError:  # unhashable: not a node name; the general path says so
                route = None
        if route is not None:  # this rank's node to a dest sent to before, without credits
            src = self.rank
            dst, rank, pair = route
        else:
            placement = self.placement
            src = self.rank if source is None else placement.index(source, "source")
            try:
                index = self.index_of.get(dest)  # type: ignore[arg-type]
            except TypeError:  # unhashable: not a node name; let index() say so
                index = None
            if index is None:
                if dest is None:
                    raise TypeError(
                        "a send needs a dest: send(message, dest='node1') or "
                        "isend(message, dest='node1')"
                    )
                index = placement.index(dest, "dest")
            dst = index
            if src not in self.inboxes:  # its own rank sends it
                return sent_by_another_rank(self, src, dst)
            engine = self.engine
            found = engine.pairs_out.get((src, dst))
            if found is not None and (found.credits is None or found.credits > 0):
                pair = found
            elif not room:  # (never in dest's queue: its credit comes back as it is taken in)
                pair = engine.pair_out(src, dst)
            else:
                deadline = None if timeout is None else time.monotonic() + (timeout or 0.0)
                pair = engine.reserve(src, dst, deadline, timeout, block)
            rank = dst % self.size
            if src == self.rank and pair.credits is None:  # (this rank's node, named or not)
                self.routes[dest] = (dst, rank, pair)  # no credits now means none ever
                self.path.dests[dest] = self.path.lane(src, dst, rank, pair)
        msg = message if isinstance(message, Message) else Message(message)
        ticket, stamp = self.path.to_node(
            msg, src, src, dst, rank, pair, ack, flags, reply_to, batch, via, compress
        )
        self.sends += 1
        if not self.sends & POLL_EVERY_SENDS - 1:
            # A rank that only sends still drains what arrives; polling on every send would
            # add a probe to the latency of each small message.
            # (a publish to a total-order topic's sequencer: an arrival it cannot read is
            # raised by the next call, as a publish's, `Topic.publish`)
            self.poll_after(message, via is not None and via.kind == ROUTE_TOPIC)
        if ack:  # (told if it is not processed, however long it is kept: `Acks.watch`)
            handle = AckHandle(self, ticket, stamp, pair)
            self.engine.watch((src, dst, stamp.seq), handle)
            return handle
        return SendHandle(self, ticket, stamp, pair if self.acks else None, False)

    def send_plain(self, message: Any, dest: Any, timeout: float | None, batch: bool) -> SendHandle:
        """`send` from this rank's node, without ack, reply, route or compression of its own:
        `SendPath.plain` once ``dest`` has a route (sent to before, no credits), else `send`
        (``dest``: a str or an int, `NODE_KEYS`, as the callers' fast cases look it up)."""
        try:
            route = self.routes.get(dest)
        except TypeError:  # unhashable: not a node name; the general path says so
            route = None
        if route is None or self.sealed or TRACER.on:
            return self.send(message, None, dest, False, timeout, batch=batch)
        dst, rank, pair = route
        run = pair.run
        if run is not None and batch and (at := run.join(message)) >= 0:
            # The commonest isend: it joins its pair's open run (delivery/runs.py), with no
            # Message built for a bare value and a handle that is only the run and the index.
            # A full run goes at once; between polls a look at the batches' age is enough.
            sends = self.sends = self.sends + 1
            if not sends & POLL_EVERY_SENDS - 1:
                self.joined_poll(sends, message)
            return RunHandle(self, run, at)
        msg = message if isinstance(message, Message) else Message(message)
        ticket, stamp = self.path.plain(msg, self.rank, dst, rank, pair, batch)
        self.sends += 1
        if not self.sends & POLL_EVERY_SENDS - 1:
            self.poll_after(message)  # (see `send`)
        run = pair.run
        if run is not None and run.first_seq == stamp.seq:  # it opened a run
            return RunHandle.opener(self, run)
        return SendHandle(self, ticket, stamp, pair if self.acks else None, False)

    def poll_after(self, message: Any, keep_undecoded: bool = False) -> None:
        """Poll once ``message`` was sent (or published); an error of the poll says it
        followed the send (`GeodeError.after_send`: `isend_many` counts the item as sent).
        ``keep_undecoded``: an arrival that cannot be read is raised by the next call
        (`Engine.poll_after_take`), not by this one."""
        try:
            if keep_undecoded:
                self.engine.poll_after_take()
            else:
                self.engine.poll()
        except GeodeError as error:
            error.after_send = message
            raise

    def joined_poll(self, sends: int, message: Any) -> None:
        """What the ``sends``-th send (a multiple of `POLL_EVERY_SENDS`) does after ``message``
        joined a run: a full run goes at once, so between polls a look at the batches' age is
        enough. An error of the poll says it followed the send, as `poll_after`'s."""
        if sends & POLL_EVERY_JOINS - 1:
            self.path.flush_due()
        else:
            self.poll_after(message)

    def joined_many(self, before: int, after: int) -> None:
        """`joined_poll` for a bulk join that took ``sends`` from ``before`` to ``after``: a
        poll if it passed a multiple of `POLL_EVERY_JOINS`, else a look at the batches' age
        if it passed one of `POLL_EVERY_SENDS`."""
        if after // POLL_EVERY_JOINS != before // POLL_EVERY_JOINS:
            self.engine.poll()
        elif after // POLL_EVERY_SENDS != before // POLL_EVERY_SENDS:
            self.path.flush_due()

    def reply(self, request: Message, value: Any, timeout: float | None, batch: bool) -> None:
        """Send ``value`` back to the sender of ``request`` (the run loop's replies may be
        batched: the loop flushes them whenever it is idle)."""
        if request.id is None or request.source is None or request.dest is None:
            raise ValueError(f"reply() needs a received message, got {request!r}")
        self.send(value, request.dest, request.source, False, timeout, request.id, 0, batch)
