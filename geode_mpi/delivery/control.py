"""Control records between nodes: acknowledgements with credits, and quiescence waves.

Payload layouts (little-endian), inside a codec control record (docs/wire-format.md):

    ack:   u8 type 1 | 3 pad | u32 range count | u64 messages taken from the queue so far |
           range count x (u64 first seq, u64 end seq, exclusive)
    ask:   the same with type 5 and no ranges: "send me your ack record again"
    closing: the same with type 6 and no ranges: "my rank is in close(): I take no more from
           my queue" (so a sender out of credits stops waiting); from a forwarder (a
           total-order topic's sequencer) with the range count set to 1 + a node's index:
           "I hold your message for that node, whose rank is in close()"
    lost:  u8 type 7 | 3 pad | u32 why (1 dropped, 2 expired, 3 dead-lettered, 4 closing) |
           u64 seq: a message whose sender waits for it (ack=True, a request) was
           acknowledged without being processed, or (4) is held by a node whose rank is in
           close() and has no handler for it: never acknowledged, never processed
    waiting: u8 type 8 | 3 pad | u32 0 | u64 0: "I wait in receive(source=you)": answered,
           once the asked node's rank is in close() and that node can send nothing more, by
    done:  u8 type 9 | 3 pad | u32 0 | u64 envelopes the asked rank sent the asker's rank
           before this record: "I send you nothing more" (`Engine.sends_done`); both with
           flag 1 in the u32 (`WHOLE_RANK`): "I wait in a receive with no source" (to a
           rank's first node), "no node of my rank sends you more" (`Engine.ranks_done`);
           a whole-rank done record with flag 2 too (`RELAYS`, the u32 then 3): "but my
           rank knows a group, topic or work queue: it may send on what another rank sends it"
    wave:  u8 type 2 (ask), 3 (answer), 4 (quiet), 10 (withdraw) or 11 (void) | 7 pad |
           u64 wave | u64 messages sent | u64 messages received (withdraw, void: 0 | 0; a void
           passed on down the tree: 1 | 0)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from geode_mpi.errors import DecodeError

ACK = 1
ASK = 5  # a sender out of credits asks for the receiver's count again (lossy transports)
CLOSING = 6  # a receiver whose rank is in close() tells its senders: no more credits come
LOST = 7  # a waited message (ack=True) not processed (dropped, expired, dead-lettered): told
# before its ack
WAITING = 8  # a receive(source=node) waits on node: tell me once its rank can send no more
SENDS_DONE = 9  # the answer: its rank is in close(), and this many envelopes came before it
WHOLE_RANK = 1  # a waiting or done record's u32: about every node of the asked rank
RELAYS = 2  # a whole-rank done record's u32, with WHOLE_RANK: the rank may relay (`relays`)
LOST_WHY = {1: "dropped", 2: "expired", 3: "dead-lettered", 4: "closing"}
DROPPED = 1
EXPIRED = 2
DEAD_LETTERED = 3  # its last attempt failed: in the receiver's dead letters
CLOSED = 4  # its receiver's rank is in close() with no handler for it: no ack ever comes
# Quiescence waves go down and up a tree of the ranks (geode_mpi.core.quiescence.Quiescence):
WAVE_ASK = 2  # from a rank's parent: answer this wave, once idle and once your children have
WAVE_ANSWER = 3  # to the parent: the counts of a rank and of every rank below it, summed
WAVE_QUIET = 4  # from the parent: the job was found quiescent in this wave (pass it on)
WAVE_WITHDRAW = 10  # to rank 0: a message came after I answered this wave: do not find it quiet
WAVE_VOID = 11  # from rank 0: this wave will not be found quiet (take what came; pass it on if
# its ``sent`` is 1)
WAVE_KINDS = (WAVE_ASK, WAVE_ANSWER, WAVE_QUIET, WAVE_WITHDRAW, WAVE_VOID)
_HEAD = struct.Struct("<BxxxIQ")
_WAVE = struct.Struct("<B7xQQQ")
_RANGE = struct.Struct("<QQ")

Range = tuple[int, int]  # [first, end)


def ranges(seqs: Iterable[int]) -> list[Range]:
    """Sequence numbers as sorted, merged half-open ranges: [3, 4, 5, 9] -> [(3, 6), (9, 10)]."""
    out: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if out and out[-1][1] == seq:
            out[-1][1] = seq + 1
        else:
            out.append([seq, seq + 1])
    return [(first, end) for first, end in out]


def encode_ack(taken: int, acked: list[Range]) -> bytes:
    """An ack payload: how many messages of the pair the receiver has taken from its queue in
    all (a running total, so that a record lost or received twice does no harm), and the
    ranges of sequence numbers processed since the last record."""
    parts = [_HEAD.pack(ACK, len(acked), taken)]
    parts.extend(_RANGE.pack(first, end) for first, end in acked)
    return b"".join(parts)


def kind(payload: memoryview | bytes) -> int:
    """The type of a control payload (its first byte)."""
    if not len(payload):
        raise DecodeError("empty control record")
    return int(payload[0])


def encode_wave(kind: int, wave: int, sent: int = 0, received: int = 0) -> bytes:
    """A quiescence-wave payload."""
    return _WAVE.pack(kind, wave, sent, received)


def decode_wave(payload: memoryview | bytes) -> tuple[int, int, int, int]:
    """(type, wave, sent, received) of a wave payload.

    Raises:
        DecodeError: not a wave payload.
    """
    if len(payload) != _WAVE.size or payload[0] not in WAVE_KINDS:
        raise DecodeError(f"not a quiescence-wave record ({len(payload)} bytes)")
    kind, wave, sent, received = _WAVE.unpack_from(payload, 0)
    return kind, wave, sent, received


def decode_ack(payload: memoryview | bytes) -> tuple[int, list[Range]]:
    """(taken, ranges) of an ack payload.

    Raises:
        DecodeError: not an ack payload of this version.
    """
    if len(payload) < _HEAD.size:
        raise DecodeError(f"control record of {len(payload)} bytes is too short")
    kind, count, taken = _HEAD.unpack_from(payload, 0)
    if kind not in (ACK, ASK) or len(payload) != _HEAD.size + count * _RANGE.size:
        raise DecodeError(f"unknown control record (type {kind}, {len(payload)} bytes)")
    acked = [_RANGE.unpack_from(payload, _HEAD.size + k * _RANGE.size) for k in range(count)]
    return taken, acked


def encode_ask() -> bytes:
    """An ask payload."""
    return _HEAD.pack(ASK, 0, 0)


def encode_closing(beyond: int | None = None) -> bytes:
    """A closing payload; ``beyond``: a forwarder's, naming the closing node it holds a
    message for."""
    return _HEAD.pack(CLOSING, 0 if beyond is None else beyond + 1, 0)


def decode_closing(payload: memoryview | bytes) -> int | None:
    """The node a forwarder's closing payload names (None: its sender's own rank closes).

    Raises:
        DecodeError: not a closing payload.
    """
    if len(payload) != _HEAD.size:
        raise DecodeError(f"not a closing record ({len(payload)} bytes)")
    _, beyond, _ = _HEAD.unpack_from(payload, 0)
    return beyond - 1 if beyond else None


def encode_lost(why: int, seq: int) -> bytes:
    """A lost payload: message ``seq`` was ``why`` (`DROPPED`, `EXPIRED`, `DEAD_LETTERED`,
    `CLOSED`), not processed."""
    return _HEAD.pack(LOST, why, seq)


def decode_lost(payload: memoryview | bytes) -> tuple[str, int]:
    """(why, as a word: "dropped", "expired", "dead-lettered" or "closing"; seq) of a lost
    payload.

    Raises:
        DecodeError: not a lost payload.
    """
    if len(payload) != _HEAD.size:
        raise DecodeError(f"not a lost record ({len(payload)} bytes)")
    _, why, seq = _HEAD.unpack_from(payload, 0)
    if why not in LOST_WHY:
        raise DecodeError(f"a lost record with an unknown reason ({why})")
    return LOST_WHY[why], seq


def encode_waiting(whole_rank: bool = False) -> bytes:
    """A waiting payload (``whole_rank``: for any node of the asked rank)."""
    return _HEAD.pack(WAITING, WHOLE_RANK if whole_rank else 0, 0)


def encode_sends_done(sent: int, whole_rank: bool = False, relays: bool = False) -> bytes:
    """A done payload: ``sent`` envelopes went to the asker's rank before it (``whole_rank``:
    said for every node of the answering rank; ``relays``: which may yet send on another
    rank's messages, as a group's sequencer or a topic's or work queue's node)."""
    flags = (WHOLE_RANK if whole_rank else 0) | (RELAYS if whole_rank and relays else 0)
    return _HEAD.pack(SENDS_DONE, flags, sent)


def whole_rank(payload: memoryview | bytes) -> bool:
    """Whether a waiting or done payload is about every node of a rank (`WHOLE_RANK`)."""
    return len(payload) == _HEAD.size and bool(_HEAD.unpack_from(payload, 0)[1] & WHOLE_RANK)


def relays(payload: memoryview | bytes) -> bool:
    """Whether a whole-rank done payload says its rank may relay (`RELAYS`)."""
    return len(payload) == _HEAD.size and bool(_HEAD.unpack_from(payload, 0)[1] & RELAYS)


def decode_sends_done(payload: memoryview | bytes) -> int:
    """The envelope count of a done payload.

    Raises:
        DecodeError: not a done payload.
    """
    if len(payload) != _HEAD.size:
        raise DecodeError(f"not a done record ({len(payload)} bytes)")
    return int(_HEAD.unpack_from(payload, 0)[2])
