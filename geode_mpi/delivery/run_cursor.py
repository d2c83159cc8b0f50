"""Runs on the receiving side: a run's messages queued, as one entry (`RunCursor`) or one
parcel each, and taken one by one. See docs/delivery.md, "Runs"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from geode_mpi.codec.header import FLAG_TRACKED, NO_REPLY
from geode_mpi.codec.runs import Run, RunItem, build, is_run
from geode_mpi.delivery.pairs import PairIn
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.errors import DecodeError
from geode_mpi.message import Message
from geode_mpi.queues import NEVER, Bundle, Inbox, Parcel

_tuple_new = tuple.__new__


def run_parcels(run: Run, meta: memoryview) -> list[Parcel]:
    """The queue's parcels of a run's messages: each with the run's meta, and (the run, its
    index) as frames (`codec.decode` gives the message from them). Their sizes add up to the
    run's (the first takes the remainder): what its sender counted in `sent_bytes`."""
    src, first, flags = run.src, run.first_seq, run.flags
    size = max(1, len(meta) // len(run.payloads))
    extra = max(0, len(meta) - size * len(run.payloads))
    made = run.messages()
    built: Sequence[Message | None] = [None] * len(run.payloads) if made is None else made
    item = RunItem
    return [
        _tuple_new(
            Parcel,
            (
                src,
                first + i,
                flags,
                NO_REPLY,
                meta,
                _tuple_new(item, (run, i, message)),
                size if i else size + extra,
                0,
                0,
                NEVER,
            ),
        )
        for i, message in enumerate(built)
    ]


class RunCursor(Bundle):
    """A run queued as one entry: its messages ``at`` to the last, all built at its first take
    (`Engine.take_run`, `take_runs`: `built`), or given a parcel of its own when the queue
    needs one (`Bundle.parcels`: a filter, a retry, a checkpoint).

    Args:
        run: the run as received (its class found here).
        meta: its meta (each message's parcel carries it, as `run_parcels` does).
        pair: the receiving side of its pair (the take counts each message processed there).
        inbox: the queue it is the entry of (the receiving node's).
        stats: the receiving node's counters (the take counts each message processed).
    """

    __slots__ = (
        "built",
        "cls",
        "dest",
        "first_id",
        "first_seq",
        "inbox",
        "meta",
        "pair",
        "payloads",
        "run",
        "size",
        "source",
        "stamps",
        "stats",
        "tracked",
    )

    def __init__(
        self, run: Run, meta: memoryview, pair: PairIn, inbox: Inbox, stats: NodeStats
    ) -> None:
        super().__init__(0, len(run.payloads))
        self.run = run
        self.meta = meta
        self.pair = pair
        self.inbox = inbox
        self.stats = stats
        self.size = max(1, len(meta) // len(run.payloads))
        # What `Engine.take_run` builds each message from, read once here.
        self.cls = run.cls()
        self.payloads = run.payloads
        self.stamps = run.stamps
        self.first_id = run.first_id
        self.first_seq = run.first_seq
        self.source = run.srcname
        self.dest = run.dstname
        self.tracked = bool(run.flags & FLAG_TRACKED)
        self.built: list[Message] | None = None  # every message, once one is taken

    def build(self) -> list[Message]:
        """Every message of the run, built in one pass (`built`; a take hands them out)."""
        built = self.built = build(
            self.cls,
            self.payloads,
            self.stamps,
            self.first_id,
            self.first_seq,
            self.source,
            self.dest,
        )
        return built

    def parcel(self, at: int) -> Parcel:
        run = self.run
        built = self.built
        return _tuple_new(
            Parcel,
            (
                run.src,
                run.first_seq + at,
                run.flags,
                NO_REPLY,
                self.meta,
                _tuple_new(RunItem, (run, at, None if built is None else built[at])),
                self.size,
                0,
                0,
                NEVER,
            ),
        )


def queue_run(
    run: Run, meta: memoryview, pair: PairIn, inbox: Inbox, stats: NodeStats
) -> Parcel | None:
    """The one queue entry of a whole run (a `RunCursor` as its frames); None if the run
    goes in message by message (`run_parcels`): its class is not found here (each receive
    then says so), or its messages carry attributes of their own (`Run.states`: a cursor
    builds messages of data alone)."""
    if run.states:
        return None
    try:
        cursor = RunCursor(run, meta, pair, inbox, stats)
    except DecodeError:
        return None
    fields = (run.src, run.first_seq, run.flags, NO_REPLY, meta, cursor, len(meta), 0, 0, NEVER)
    return _tuple_new(Parcel, fields)


def one_by_one(parcel: Parcel) -> tuple[bytes | memoryview, Any]:
    """A queued parcel's meta and frames as if its message had been sent alone (a run's
    message encoded on its own: what a checkpoint keeps)."""
    frames = parcel.frames
    if not is_run(parcel.meta):
        return parcel.meta, frames
    return frames[0].single(frames[1]), ()
