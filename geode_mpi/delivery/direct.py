"""The thin path of one message: a node's sends to one destination, bound once (`Lane`).

`SendPath.plain` (every plain send from this rank's node: `Geode.send`'s, and `isend`'s that
cannot join a run) and `Geode.send`'s own fast case go through a destination's lane: the pair,
its rank, the counters and the transport's calls are looked up once, when the lane is made,
instead of on every message. The stamp, bytes and records are `SendPath.to_node`'s (a test
checks that both give the same).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from geode_mpi import codec
from geode_mpi.delivery.pairs import OutboxEntry, PairOut
from geode_mpi.message import Message
from geode_mpi.transport import SendTicket

if TYPE_CHECKING:
    from geode_mpi.delivery.sending import SendPath

ID_BITS = 40  # a message id is (its author node's index << ID_BITS) | that node's counter
_tuple_new = tuple.__new__
_Stamp, _encode = codec.Stamp, codec.encode


class Lane:
    """The sends of local node ``src`` to node ``dst`` (on ``rank``) over ``pair``, a pair
    without credits: what `SendPath.plain` does per message, with everything that does not
    change between messages bound here once."""

    __slots__ = (
        "batch_meta",
        "counter",
        "dst",
        "flags",
        "ident",
        "pair",
        "path",
        "rank",
        "resends",
        "send_meta",
        "src",
        "stats",
        "tracked",
    )

    def __init__(self, path: SendPath, src: int, dst: int, rank: int, pair: PairOut) -> None:
        self.path = path
        self.src = src
        self.dst = dst
        self.rank = rank
        self.pair = pair
        self.ident = src << ID_BITS  # the author bits of every id this lane's messages take
        self.counter = path.counter  # (updated in place: a restore sets its entries)
        self.stats = path.stats[src]
        self.flags = path.plain_flags
        self.tracked = path.acks
        self.resends = path.resend_after is not None  # (fixed for a Geode's life)
        self.send_meta: Callable[[int, bytes], SendTicket] = path.send_meta
        self.batch_meta: Callable[[int, bytes], SendTicket] = path.batch_meta

    def send(self, message: Message, batch: bool = False) -> tuple[SendTicket, codec.Stamp]:
        """Stamp, encode and send the pair's next message; record it (seq, counters, the
        outbox entry while tracked). ``batch``: it may wait to go out with the next ones.

        Raises:
            EncodeError: it cannot be encoded (nothing sent, no id or seq taken).
        """
        pair = self.pair
        seq = pair.next_seq
        src = self.src
        counter = self.counter
        count = counter[src]
        stamp = _tuple_new(_Stamp, (self.ident | count, seq, time.time(), src, self.dst))
        meta, frames = _encode(message, stamp, self.flags)
        counter[src] = count + 1
        rank = self.rank
        if frames:
            ticket, meta, frames = self.path.with_frames(rank, meta, frames, batch, None)
            nbytes = len(meta) + sum(frame.nbytes for frame in frames)
        else:
            ticket = self.batch_meta(rank, meta) if batch else self.send_meta(rank, meta)
            nbytes = len(meta)
        pair.next_seq = seq + 1
        stats = self.stats
        stats.sent += 1
        stats.sent_bytes += nbytes
        if self.tracked:
            if not self.resends:  # (see `SendPath.to_node`: its header only)
                pair.outbox[seq] = _tuple_new(OutboxEntry, (meta, (), rank))
            else:
                pair.outbox[seq] = _tuple_new(OutboxEntry, (meta, frames, rank))
                pair.resends[seq] = [time.monotonic(), 1]
        return ticket, stamp
