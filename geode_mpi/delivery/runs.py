"""Runs on the sending side: small messages of one pair that leave as one wire entry.

An ``isend`` of a plain message (no frames, compression, credits, reply, route or trace) to a
rank whose batch is open joins the open run of its pair: its data and timestamp are appended
to two lists, its seq taken, its id the run's first plus its index. The run sits in the
transport's batch to that rank as a lazy entry; whatever sends the batch (`BATCH_MAX`
entries, the batch delay, a wait, ``flush()``, a message to that rank that is not batched)
seals it first: one header, one pickle of the data, one outbox entry (`RunEntry`). So the
messages keep their place among everything else sent to that rank. See docs/delivery.md,
"Runs".
"""

from __future__ import annotations

import itertools
import operator
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from geode_mpi.codec.pickling import ATOMIC
from geode_mpi.codec.runs import (
    INT_LIMIT,
    INT_LOW,
    ITEMS_MAX,
    TEXT_MAX,
    Run,
    encode_run,
    joinable,
    kept,
    small,
    small_items,
    state_of,
)
from geode_mpi.delivery.authoring import WATCHING, authored
from geode_mpi.delivery.pairs import OutboxEntry, PairOut, RunEntry
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.message import Message, data_alone
from geode_mpi.transport import SendTicket, Transport

RUN_MAX = 64  # messages in a run: a full run takes no more, the next one opens a new run
_tuple_new = tuple.__new__
_time = time.time
_NUMBERS = ATOMIC - {str, bytes}  # (and None: atomic values of a fixed small size)
_TEXTS = frozenset((str, bytes))
_TUPLE = frozenset((tuple,))
_DICT = frozenset((dict,))
_chain = itertools.chain.from_iterable
_state_of = operator.attrgetter("__dict__")
_data_of = operator.itemgetter("data")
_NOT_IN_A_BATCH = SendTicket(-1, 0, held=True)  # (a run's ticket until its batch gives one)


class OpenRun:
    """A run being filled (a lazy entry of the transport's batch): sealed once, as it goes.

    Args:
        cls: the messages' class (one per run).
        name: its wire name.
        flags: the messages' delivery flags.
        first_id: the first message's id; the run owns ``RUN_MAX`` ids from there.
        first_seq: the first message's seq on the pair.
        src: the sending node.
        dst: the receiving node.
        rank: its rank.
        pair: the pair's sending side.
        stats: the counters the run's bytes go to.
        keep: keep the sealed run in the pair's outbox until it is acknowledged; with
            ``resend_after`` (not None) also time it for resends.
        full: sends the transport's batch to a rank at once (called with ``rank`` as the run
            fills up: its messages need not wait for the batch's delay, nor its next polls).
        states: its messages carry attributes of their own: each payload is the message's
            attributes (`codec.runs.state_of`), not its data.
    """

    __slots__ = (
        "cls",
        "dst",
        "first_id",
        "first_seq",
        "flags",
        "full",
        "keep",
        "name",
        "pair",
        "payloads",
        "rank",
        "resend_after",
        "src",
        "stamps",
        "states",
        "stats",
        "ticket",
        "wraps",
    )

    def __init__(
        self,
        cls: type[Message],
        name: bytes,
        flags: int,
        first_id: int,
        first_seq: int,
        src: int,
        dst: int,
        rank: int,
        pair: PairOut,
        stats: NodeStats,
        keep: bool,
        resend_after: float | None,
        full: Callable[[int], None] | None = None,
        states: bool = False,
    ) -> None:
        self.cls = cls
        self.name = name
        self.flags = flags
        self.first_id = first_id
        self.first_seq = first_seq
        self.src = src
        self.dst = dst
        self.rank = rank
        self.pair = pair
        self.stats = stats
        self.keep = keep
        self.resend_after = resend_after
        self.full = full
        self.states = states
        self.payloads: list[Any] = []
        self.stamps: list[float] = []
        self.ticket = _NOT_IN_A_BATCH  # the batch's, once the run is in one
        self.wraps = cls is Message and not states  # a bare value (a Message's data) may join

    def join(self, message: Any) -> int:
        """Append the next message of the pair to this run if it can join (see `joinable`):
        ``message`` a Message of the run's class with only ``data`` set, or (a run of
        `Message`) the bare value an ``isend`` would wrap in one. Returns its index in the
        run, or -1 with nothing done (the run is full, or not the pair's latest send)."""
        payloads = self.payloads
        at = len(payloads)
        pair = self.pair
        seq = pair.next_seq
        if at >= RUN_MAX or self.first_seq + at != seq:
            return -1
        data: Any
        kind = type(message)
        if kind is self.cls:
            state = message.__dict__
            if self.states:
                data = state_of(state)
                if data is None:
                    return -1
                kind = Message  # (copied: appended as it is)
            elif (len(state) != 1 or "data" not in state) and not data_alone(state):
                return -1  # (a received message sent on joins: its metadata does not travel)
            else:
                data = state["data"]
                kind = type(data)
        elif self.wraps:  # (a Message of another class is not joinable)
            data = message
        else:
            return -1
        # `joinable` and `kept` inline, the commonest kinds first
        if kind is Message:  # (a state: checked and copied)
            payloads.append(data)
        elif kind is str or kind is bytes:
            if len(data) > TEXT_MAX:
                return -1
            payloads.append(data)
        elif kind is int:
            if not INT_LOW < data < INT_LIMIT:
                return -1
            payloads.append(data)
        elif kind in _NUMBERS:
            payloads.append(data)
        elif kind is tuple:
            if len(data) > ITEMS_MAX or not small_items(data):
                return -1
            payloads.append(data)
        elif kind is dict:
            if len(data) > ITEMS_MAX or not small_items(data.values()) or not small_items(data):
                return -1
            payloads.append(data.copy())
        elif joinable(data):
            payloads.append(kept(data))
        else:
            return -1
        self.stamps.append(_time())
        pair.next_seq = seq + 1
        self.stats.sent += 1
        if WATCHING:  # (a thread runs a handler: what it authors counts)
            authored()
        if at == RUN_MAX - 1 and self.full is not None:
            self.full(self.rank)  # (seals it)
        return at

    def join_many(self, items: Sequence[Any], start: int) -> int:
        """`join` ``items[start:]`` in order until one does not join or the run is full; how
        many joined (0: none, nothing done). A slice of one kind of bare value (a run of
        `Message`: texts and bytes, numbers, tuples or dicts of atomic values) is checked by
        C loops and joins whole, with one timestamp; anything else joins one by one."""
        at = len(self.payloads)
        room = RUN_MAX - at
        if room <= 0 or self.first_seq + at != self.pair.next_seq:
            return 0
        chunk = items[start : start + room]
        joined = _bulk(chunk) if self.wraps else None
        if joined is None and not self.states and type(chunk[0]) is self.cls:
            joined = _bulk_messages(chunk, self.cls)
        if joined is None:
            count = 0
            join = self.join
            for item in chunk:
                if join(item) < 0:
                    break
                count += 1
            return count
        count = len(joined)
        self.payloads += joined
        self.stamps += [_time()] * count
        self.pair.next_seq += count
        self.stats.sent += count
        if WATCHING:  # (a thread runs a handler: what it authors counts)
            authored(count)
        if at + count == RUN_MAX and self.full is not None:
            self.full(self.rank)  # (seals it)
        return count

    def seal(self) -> bytes:
        """Encode the run and record it (the transport calls it as its batch goes out)."""
        pair = self.pair
        meta = encode_run(
            self.name,
            self.flags,
            self.first_id,
            self.first_seq,
            self.src,
            self.dst,
            self.payloads,
            self.stamps,
            self.states,
        )
        count = len(self.payloads)
        self.payloads = []  # (sent: its handles, which keep the run, need not keep the data)
        if pair.run is self:  # (the pair's latest run: no run of the pair waits any more)
            pair.run = None
            pair.unsealed = -1
        else:
            pair.unsealed = self.first_seq + count
        self.stats.sent_bytes += len(meta)
        if self.keep:
            first = self.first_seq
            if count == 1:
                pair.outbox[first] = _tuple_new(OutboxEntry, (meta, (), self.rank))
            else:
                pair.outbox[first] = _tuple_new(RunEntry, (meta, (), self.rank, count))
                pair.runs += 1
            if self.resend_after is not None:
                pair.resends[first] = [time.monotonic(), 1]
        return meta


def _bulk(chunk: Sequence[Any]) -> Sequence[Any] | None:
    """What ``chunk``'s bare values join a run as, when they are all of one kind `join`
    takes as it is (a dict: copied), checked by C loops; None: join them one by one."""
    kinds = set(map(type, chunk))
    if kinds <= _NUMBERS:
        return chunk if small(chunk, kinds) else None
    if len(kinds) != 1:
        return None
    if kinds <= _TEXTS:
        return chunk if max(map(len, chunk)) <= TEXT_MAX else None
    if kinds == _TUPLE:
        return chunk if _atomic_and_small(chunk) else None
    if kinds != _DICT:
        return None
    keys = set(_chain(chunk))  # (each distinct key once: equal keys are as small)
    kinds = set(map(type, keys))
    if not (kinds <= ATOMIC and small(keys, kinds)):
        return None
    return [*map(dict.copy, chunk)] if _atomic_and_small([*map(dict.values, chunk)]) else None


def _atomic_and_small(rows: Sequence[Collection[Any]]) -> bool:
    """Whether ``rows`` (tuples, or dicts' values) hold at most `ITEMS_MAX` items each, all
    atomic and `small`: by column when the rows are of one length (a column's items are
    most often of one type, which `small` checks with one C loop), else all together."""
    if len(rows[0]) > ITEMS_MAX:
        return False
    columns: list[Collection[Any]]
    try:
        columns = [*zip(*rows, strict=True)]
    except ValueError:  # (rows of several lengths)
        if max(map(len, rows)) > ITEMS_MAX:
            return False
        columns = [[*_chain(rows)]]
    for column in columns:
        kinds = set(map(type, column))
        if not (kinds <= ATOMIC and small(column, kinds)):
            return False
    return True


def _bulk_messages(chunk: Sequence[Any], cls: type[Message]) -> Sequence[Any] | None:
    """`_bulk` of the data of ``chunk``'s messages, all of class ``cls`` with only ``data``
    set (what `join` takes of such a message); None: join them one by one."""
    if set(map(type, chunk)) != {cls}:
        return None
    try:
        states = [*map(_state_of, chunk)]
        if set(map(len, states)) != {1}:
            return None
        return _bulk([*map(_data_of, states)])
    except (AttributeError, KeyError):  # (no __dict__, or its one key is not data)
        return None


def release(pair: PairOut, first: int, end: int) -> int:
    """Remove from ``pair``'s outbox every message with a seq in [``first``, ``end``), cutting
    the runs the range covers in part; how many messages that was."""
    outbox = pair.outbox
    resends = pair.resends
    count = 0
    for key in [key for key in outbox if key < end]:
        entry = outbox[key]
        if type(entry) is not RunEntry:
            if key >= first:
                del outbox[key]
                resends.pop(key, None)
                count += 1
            continue
        last = key + entry.messages
        if last <= first:
            continue
        del outbox[key]
        pair.runs -= 1
        timing = resends.pop(key, None)
        count += min(last, end) - max(key, first)
        if key < first:  # what is left before the range
            _keep(pair, key, entry, first - key, timing)
        if last > end:  # and after it
            _keep(pair, end, entry, last - end, timing)
    return count


def _keep(pair: PairOut, key: int, entry: RunEntry, count: int, timing: list[float] | None) -> None:
    pair.outbox[key] = RunEntry(entry.meta, entry.frames, entry.rank, count)
    pair.runs += 1
    if timing is not None:
        pair.resends[key] = list(timing)


def outbox_items(pair: PairOut) -> list[tuple[int, OutboxEntry]]:
    """(seq, entry) of each message in ``pair``'s outbox, a run's messages one by one (each
    encoded on its own: what a checkpoint keeps)."""
    found: list[tuple[int, OutboxEntry]] = []
    for key, entry in pair.outbox.items():
        if not isinstance(entry, RunEntry):
            found.append((key, entry))
            continue
        run = Run(entry.meta, ())
        start = key - run.first_seq
        for index in range(start, start + entry.messages):
            single = _tuple_new(OutboxEntry, (run.single(index), (), entry.rank))
            found.append((run.first_seq + index, single))
    return found


def progress(transport: Transport, ticket: SendTicket | None = None) -> bool:
    """`Transport.progress`: what a run's handle asks for on a transport without
    `MPITransport.flush_due` or `finish_send` (``ticket``: the send it waits for)."""
    return transport.progress()


# What `SendPath` asks of a transport to send runs (`MPITransport.batch_lazy`).
BatchLazy = Callable[[int, Callable[[], bytes]], SendTicket]
