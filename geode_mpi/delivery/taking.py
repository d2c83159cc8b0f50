"""The engine's takes: a message taken from a node's queue (or straight from an arrival),
counted processed, acked, and its receipt when the taker acks it explicitly."""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

from geode_mpi import codec
from geode_mpi.base.gate import other_threads
from geode_mpi.codec import header
from geode_mpi.codec.decoding import decode_named as _decode_named
from geode_mpi.codec.decoding import decode_plain as _decode_plain
from geode_mpi.codec.plain import plain_message as _plain_message
from geode_mpi.delivery.credits import Credits
from geode_mpi.delivery.engine_state import (
    _FLAG_TRACKED,
    _FLAG_WAITED,
    _NOT_ONE,
    _NOT_TAKEN,
    _tuple_new,
)
from geode_mpi.delivery.pairs import ACK_BATCH
from geode_mpi.delivery.run_cursor import RunCursor
from geode_mpi.errors import DecodeError
from geode_mpi.message import Message
from geode_mpi.queues import NEVER as _NEVER
from geode_mpi.queues import Key, Match, Parcel
from geode_mpi.queues.bundles import take_many

if TYPE_CHECKING:
    from geode_mpi.delivery.engine import Engine

_HEAD_SIZE = header.SIZE
_VERSION = header.VERSION
_read_lead = header.LEAD.unpack_from  # `take_arrival`'s one read of a header
_StructError = struct.error
_TEXT_LEADS = header.TEXT_LEADS
_PLAIN_LEADS = header.PLAIN_LEADS
_LEAD_TRACKED = _FLAG_TRACKED << 16  # FLAG_TRACKED in a lead


class Acknowledger:
    """Handed to a message taken with an explicit ack: its ack() and nack() land here."""

    __slots__ = ("_engine", "_index", "_parcel")

    def __init__(self, engine: Engine, index: int, parcel: Parcel) -> None:
        self._engine = engine
        self._index = index
        self._parcel = parcel

    def ack(self) -> None:
        if other_threads():  # Message.ack() may come from any thread: hold the gate
            self._engine.transport.gate.call(self._engine.finish, self._index, self._parcel)
            return
        self._engine.finish(self._index, self._parcel)

    def nack(self, error: BaseException | None) -> None:
        self._engine.transport.gate.call(self._engine.fail, self._index, self._parcel, error)


class Taking(Credits):
    """`Engine`'s takes: from a node's queue (`take`, `take_plain`, `take_run`, `take_runs`)
    or straight from an arrival (`take_arrival`), and `_done`, which counts and acks them."""

    def take_arrival(self, rank: int, meta: memoryview | bytearray, index: int) -> Message | None:
        """`sink`, `take_plain` of node ``index`` (one of `plain`) and `codec.decode` at once,
        for a frame-less arrival that came while that node waited on an empty queue
        (`Engine.take_express`): the message, decoded (a small array may be a view of meta,
        taken for good), or None, with nothing done, for any other arrival.

        The next message of its pair, for ``index``, not diverted, from a node (not a topic's
        or a work queue's stream), that decodes, is taken at once, never queued: the counters,
        order, dedup and acks are the sink's and `take`'s. Anything else (a control record, a
        run, a duplicate, one out of order, for another node, one that does not decode: its
        `DecodeError` noted in `refused`) is the caller's to give to `sink` (which says what is
        wrong with it, or queues it).
        """
        try:  # the header, read once: its first four bytes as one number (`header.LEAD`)
            head = _read_lead(meta, 0)
            lead, mid, seq, ts, source, dest, lengths, n_data, data_len, reply_to, _ = head
        except _StructError:  # shorter than a header: the sink says what is wrong
            return None
        pair = self._in.get((source, dest))
        inbox = self.inboxes[index]
        if (
            dest != index
            or pair is None  # (a pair's first arrival is checked by the sink)
            or seq != pair.expected
            or pair.held
            or inbox.waiting
            or inbox.drop_oldest
            or inbox.private  # (an executor's tasks: only its own filter takes them)
        ):
            return None
        try:  # (meta is a whole bytearray, or a memoryview of one: a small array may be a view)
            if lead in _TEXT_LEADS and not lengths and not n_data:  # the commonest first
                end = _HEAD_SIZE + data_len
                if end != len(meta):  # (a damaged length: `decode_plain` says so)
                    return None
                message = _plain_message(
                    str(meta[_HEAD_SIZE:end], "utf-8"), mid, seq, ts, source, dest, reply_to,
                    self.names,
                )  # fmt: skip
            elif lead in _PLAIN_LEADS and not lengths and not n_data:
                message = _decode_plain(meta, (), self.names, True, head)
            elif (
                lead & 0xFF != _VERSION
                or lead >> 8 & 0xFF in _NOT_ONE
                or lead >> 24  # a route, a priority or a ttl: the sink's
                or lead >> 16 & _NOT_TAKEN
            ):
                return None
            else:  # a Message subclass, headers, attributes: the general decode
                found = _decode_named(meta, self.names, True, head) if lengths else None
                if found is None:  # (not a subclass's plain message)
                    found = codec.decode(memoryview(meta), (), self.names, None, True)
                message = found
        except DecodeError as exc:  # (nothing admitted: the sink queues it, the receive
            self.refused = (meta, exc)  # raises this, not decoding it again: `take_express`)
            return None
        except UnicodeDecodeError:
            return None  # (nothing admitted: the sink queues it, the receive dead-letters it)
        pair.expected = seq + 1
        if pair.held:  # (its decode made progress: what came meanwhile was held as early)
            self.release_held(pair, index)
        nbytes = len(meta)
        stats = self.stats[index]
        stats.received += 1
        stats.received_bytes += nbytes
        if not inbox.peak:
            inbox.peak = 1  # (what the queue's peak would have been)
        if pair.done_now(seq, lead & _LEAD_TRACKED):  # (`_done`'s commonest case)
            stats.processed += 1
        else:
            flags = lead >> 16 & 0xFF
            parcel = (source, seq, flags, reply_to, meta, (), nbytes, 0, 0, _NEVER)
            self._done(index, _tuple_new(Parcel, parcel))
        return message

    def take(
        self, index: int, match: Match | None, key: Key | None, explicit: bool
    ) -> tuple[Parcel, Acknowledger | None] | None:
        """Remove the next deliverable parcel from a node's queue.

        Args:
            index: the local node.
            match: a filter, or None.
            key: deliver the smallest key first instead of the oldest.
            explicit: the caller will ack or nack (an Acknowledger comes back); otherwise taking
                is processing it, unless the node's queue wants explicit acks anyway.
        """
        parcel = self.inboxes[index].pop(match, key)
        if parcel is None:
            return None
        if not explicit and index in self.plain:  # no window, automatic acks: the usual case
            self._done(index, parcel)
            return parcel, None
        self._credit(index, parcel)
        if explicit or self._explicit[index]:
            self.in_hand += 1
            return parcel, Acknowledger(self, index, parcel)  # type: ignore[arg-type]  # (an Engine)
        self._done(index, parcel)
        return parcel, None

    def take_plain(self, index: int) -> Parcel | None:
        """`take` for a node in `plain` (no window, automatic acks), no filter, no order."""
        parcel = self.inboxes[index].pop()
        if parcel is not None:
            self._done(index, parcel)
        return parcel

    def take_run(self, index: int, cursor: RunCursor) -> Message | None:
        """`take_plain` and the decode of its parcel, for a node in `plain` whose queue's first
        entry is a run (``cursor``, that entry's frames): its next message (all of the run's
        built at its first take), counted processed as `_done` does (acked with the next ack
        record, as a range); None if a plain take would not take it (something held back,
        ranked or private: `take_plain` then decides)."""
        inbox = cursor.inbox  # (`take_next` and `PairIn.done_now` inline: once a message)
        if inbox.ranked or inbox.held_back or inbox.private:  # (`Inbox.in_order`, inline:
            return None  # 28 against 69 ns, once a message)
        built = cursor.built
        if built is None:  # (its first take: every message built in one pass)
            built = cursor.build()
        at = cursor.at
        cursor.at = at + 1
        if at + 1 < cursor.end:
            inbox.extra -= 1
        else:
            inbox.waiting.popleft()
            inbox.bundles -= 1
        pair = cursor.pair
        seq = cursor.first_seq + at
        if (
            seq == pair.done_below
            and not pair.done_extra
            and (
                not cursor.tracked
                or (pair.ack_due and seq + 1 - pair.acked_below + len(pair.unacked) < ACK_BATCH)
            )
        ):
            pair.done_below = seq + 1
            cursor.stats.processed += 1
        else:
            self._done(index, cursor.parcel(at))
        return built[at]

    def take_runs(self, index: int, cursor: RunCursor, most: int) -> list[Message]:
        """`take_run` for up to ``most`` of the run's messages at once (`Geode.receive_many`),
        counted processed together: in order, all but the last at once, the last as `_done`
        does (its ack due, a full ack batch sent). Empty if a plain take would not take them."""
        at = take_many(self.inboxes[index], cursor, most)
        if at < 0:
            return []
        end = cursor.at
        built = cursor.built
        if built is None:
            built = cursor.build()
        pair = cursor.pair
        first = cursor.first_seq
        last = first + end - 1
        if first + at == pair.done_below and not pair.done_extra:
            pair.done_below = last  # (in order: every one before the last, as `_done` would)
            self.stats[index].processed += end - 1 - at
            if pair.done_now(last, cursor.tracked):
                self.stats[index].processed += 1
            else:
                self._done(index, cursor.parcel(end - 1))
        else:
            for taken in range(at, end):
                self._done(index, cursor.parcel(taken))
        return built[at:end]

    def _done(self, index: int, parcel: Parcel) -> None:
        key = (parcel.source, index)
        pair = self._in.get(key)
        if pair is None:  # (a stream's pair not kept here: nobody waits for its ack)
            self.stats[index].processed += 1
            return
        seq = parcel.seq
        if seq == pair.done_below and not pair.done_extra:
            pair.done_below = seq + 1  # the common case: processed in order, acked as a range
        elif pair.processed(seq):
            pair.unacked.append(seq)  # out of order: acked by its number
        else:
            return
        self.stats[index].processed += 1
        flags = parcel.flags
        if flags & _FLAG_TRACKED:
            if not pair.ack_due:
                pair.ack_due = True
                if not self._due:
                    self._due_since = time.perf_counter()
                self._due.add(key)
            if flags & _FLAG_WAITED:
                self._flush_pair(key, pair)
                self.transport.flush()  # its sender is waiting for it
            elif pair.done_below - pair.acked_below + len(pair.unacked) >= ACK_BATCH:
                self._flush_pair(key, pair)
