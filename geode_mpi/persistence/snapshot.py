"""The delivery engine's state as a checkpoint tree (read back in `snapshot_reading`).

What a rank keeps of its nodes' messages: each local node's queue (messages still encoded, with
their frames), the receiving side of every pair (what was let through, processed and
acknowledged), the sending side (next sequence numbers, credits, the outbox of unacknowledged
messages), and the counters. Taken after a drain (nothing in flight), it is everything a
restarted rank needs for no message to be lost or processed twice. Its messages are packed by
`snapshot_packing`; it is read back, checked, by `snapshot_reading`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.delivery.pairs import PairIn
from geode_mpi.delivery.run_cursor import one_by_one
from geode_mpi.delivery.runs import outbox_items
from geode_mpi.persistence.snapshot_packing import (
    pack_blobs,
    pack_messages,
    unpack_blobs,
    unpack_messages,
)
from geode_mpi.persistence.snapshot_reading import Restored, load, queued_priority
from geode_mpi.persistence.store import CheckpointError, JsonValue
from geode_mpi.queues import Parcel, first_take, wall_clock

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.delivery.engine import Engine
else:  # imported when a checkpoint is written or read
    np = on_first_use("numpy", globals(), "np")

# (re-exported: their home before the split)
__all__ = [
    "Restored",
    "capture",
    "load",
    "mark_processed",
    "pack_blobs",
    "pack_messages",
    "queued_priority",
    "unpack_blobs",
    "unpack_messages",
]


def capture(
    engine: Engine,
    forwarding: Mapping[int, list[Parcel]] | None = None,
    left_out: Callable[[int], bool] | None = None,
) -> dict[str, Any]:
    """The engine's state as a checkpoint tree (after a drain: nothing in flight).
    ``forwarding``: by local node, the messages that reached it to be sent on (a total-order
    topic's sequencer holding them for want of room at a subscriber), in their order: received
    by their pairs and not yet processed, like a queue's (a restart hands them to the node's
    forwarder again, first). ``left_out(source)``: True for a stream whose pairs are not
    saved (a finished executor's, whose number no restart gives again).

    Raises:
        CheckpointError: messages taken with an explicit ack are still unacknowledged, or
            arrivals are held waiting for a gap (only a lossy transport leaves those).
    """
    if engine.in_hand:
        raise CheckpointError(
            f"{engine.in_hand} message(s) were taken with an explicit ack and neither acked nor "
            "nacked: ack or nack them before a checkpoint"
        )
    nodes: dict[str, Any] = {}
    forgotten: dict[tuple[int, int], list[Parcel]] = {}  # pair -> what an in-memory queue held
    for index, inbox in engine.inboxes.items():
        parcels = list(inbox)  # (one parcel per message: a queued run is expanded)
        dropped = 0
        if not engine.configs[index].persistent:
            for parcel in parcels:
                forgotten.setdefault((parcel.source, index), []).append(parcel)
            dropped, parcels = len(parcels), []
        info = {
            "peak": inbox.peak,
            "dropped": dropped,
            "stats": engine.stats[index].as_dict(),
            "dead_letters": len(engine.dead.get(index, ())),
        }
        if engine.topics.counted_apart.get(index):  # (only then: older files still load)
            info["counted_apart"] = engine.topics.counted_apart[index]
        nodes[str(index)] = {**_pack_parcels(parcels, "queue"), "info": JsonValue(info)}
        held = (forwarding or {}).get(index)
        if held:  # (only then: older files still load)
            nodes[str(index)]["forwards"] = _pack_parcels(held, "queue")
    pairs_in = []
    for (source, dest), live in engine.pairs_in.items():
        if left_out is not None and left_out(source):
            continue
        pair = _as_processed(live, forgotten.get((source, dest), []))
        if pair.held:
            raise CheckpointError(
                f"{len(pair.held)} message(s) from node index {source} to {dest} wait for an "
                "earlier one that has not arrived: not a consistent cut"
            )
        saved: dict[str, Any] = {
            "key": [source, dest],
            "numbers": [
                pair.expected,
                pair.done_below,
                pair.acked_below,
                pair.owed,
                pair.taken,
                int(pair.ack_due),
            ],
            "done_extra": sorted(pair.done_extra),
            "unacked": list(pair.unacked),
        }
        # (A topic's subscriber that left and came back: only then, so older files still load.)
        if pair.skips:
            saved["skips"] = [seq for gap in sorted(pair.skips.items()) for seq in gap]
        if pair.rejoining:
            saved["rejoining"] = 1
        pairs_in.append(saved)
    pairs_out = []
    outbox: list[tuple[bytes, Sequence[Any]]] = []
    outbox_fields = []
    for (source, dest), sending in engine.pairs_out.items():
        if left_out is not None and left_out(source):
            continue
        pairs_out.append(
            {
                "key": [source, dest],
                "numbers": [sending.next_seq, sending.taken_seen],
                "credits": sending.credits,
                "window": sending.window,
            }
        )
        for seq, entry in outbox_items(sending):
            outbox.append((entry.meta, entry.frames))
            outbox_fields.append((source, dest, seq, entry.rank))
    return {
        "nodes": nodes,
        "pairs_in": JsonValue(pairs_in),
        "pairs_out": JsonValue(pairs_out),
        "outbox": pack_messages(outbox),
        "outbox_fields": np.array(outbox_fields, np.int64).reshape(-1, 4),
    }


def _pack_parcels(parcels: Sequence[Parcel], name: str) -> dict[str, Any]:
    """Parcels as ``name`` (encoded messages), ``name``_fields and ``name``_expires."""
    return {
        name: pack_messages([one_by_one(p) for p in parcels]),
        f"{name}_fields": np.array(
            [(p.source, p.seq, p.flags, p.reply_to, p.attempts) for p in parcels], np.int64
        ).reshape(-1, 5),
        # When each message expires, on this rank's wall clock (inf: never): a restart
        # reads it on its own, so a message past its time then is dropped and counted.
        f"{name}_expires": np.array([wall_clock(p.expires) for p in parcels], np.float64),
    }


def _as_processed(pair: PairIn, parcels: list[Parcel]) -> PairIn:
    """``pair`` as saved: with the messages an in-memory queue held counted processed (a
    copy; the running job keeps them), so that a restart acknowledges them and gives their
    sender its credits back."""
    if not parcels:
        return pair
    saved = PairIn()
    for name in PairIn.__slots__:
        setattr(saved, name, getattr(pair, name))
    saved.done_extra = set(pair.done_extra)
    saved.skips = None if pair.skips is None else dict(pair.skips)
    saved.unacked = list(pair.unacked)
    mark_processed(saved, parcels)
    return saved


def mark_processed(pair: PairIn, parcels: list[Parcel]) -> None:
    """Record ``parcels`` (queued, never taken) processed in ``pair``, to be acknowledged at
    its next ack record, and taken: their sender's credits come back with it, as for a
    message a receive took (without them a sender with a window full of them stayed blocked
    after the restart)."""
    seqs = [parcel.seq for parcel in parcels]
    for seq in seqs:
        pair.processed(seq)
    # Acked at the next record: below done_below as a range, above it one by one.
    pair.unacked.extend(seq for seq in seqs if seq >= pair.done_below)
    pair.ack_due = True
    taken = sum(map(first_take, parcels))  # (a retry's, one put back untried: counted)
    pair.taken += taken
    pair.owed += taken
