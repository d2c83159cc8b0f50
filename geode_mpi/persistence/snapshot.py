"""The delivery engine's state as a checkpoint tree, and back.

What a rank keeps of its nodes' messages: each local node's queue (messages still encoded, with
their frames), the receiving side of every pair (what was let through, processed and
acknowledged), the sending side (next sequence numbers, credits, the outbox of unacknowledged
messages), and the counters. Taken after a drain (nothing in flight), it is everything a
restarted rank needs for no message to be lost or processed twice.

Variable-length bytes go into one concatenated ``bytes`` value plus an array of end offsets, so
that a queue of a million messages is a handful of HDF5 datasets, not a million.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from geode_mpi.delivery.pairs import OutboxEntry, PairIn, PairOut
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.persistence.store import CheckpointError, JsonValue
from geode_mpi.queues import Parcel

if TYPE_CHECKING:
    from geode_mpi.delivery.engine import Engine

_tuple_new = tuple.__new__


def pack_blobs(blobs: Sequence[bytes | memoryview]) -> dict[str, Any]:
    """Byte strings as one ``data`` value and their ``ends``."""
    ends = np.cumsum([len(blob) for blob in blobs], dtype=np.int64)
    return {"data": b"".join(bytes(blob) for blob in blobs), "ends": ends}


def unpack_blobs(packed: dict[str, Any]) -> list[bytes]:
    data, ends = packed["data"], np.asarray(packed["ends"], np.int64)
    starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
    return [data[start:end] for start, end in zip(starts.tolist(), ends.tolist(), strict=True)]


def pack_messages(items: Sequence[tuple[bytes | memoryview, Sequence[Any]]]) -> dict[str, Any]:
    """Encoded messages (meta, frames) as a few arrays; frames become private uint8 copies."""
    frames = [bytes(np.asarray(frame, np.uint8).reshape(-1)) for _, fs in items for frame in fs]
    return {
        "metas": pack_blobs([meta for meta, _ in items]),
        "frames": pack_blobs(frames),
        "frame_counts": np.array([len(fs) for _, fs in items], np.int64),
    }


def unpack_messages(packed: dict[str, Any]) -> list[tuple[bytes, list[np.ndarray[Any, Any]]]]:
    metas = unpack_blobs(packed["metas"])
    frames = [np.frombuffer(blob, np.uint8).copy() for blob in unpack_blobs(packed["frames"])]
    out = []
    k = 0
    for meta, count in zip(metas, np.asarray(packed["frame_counts"]).tolist(), strict=True):
        out.append((meta, frames[k : k + count]))
        k += count
    return out


def capture(engine: Engine) -> dict[str, Any]:
    """The engine's state as a checkpoint tree (after a drain: nothing in flight).

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
    forgotten: dict[tuple[int, int], list[int]] = {}  # pair -> seqs an in-memory queue held
    for index, inbox in engine.inboxes.items():
        parcels = list(inbox.waiting)
        dropped = 0
        if not engine.configs[index].persistent:
            for parcel in parcels:
                forgotten.setdefault((parcel.source, index), []).append(parcel.seq)
            dropped, parcels = len(parcels), []
        nodes[str(index)] = {
            "queue": pack_messages([(p.meta, p.frames) for p in parcels]),
            "queue_fields": np.array(
                [(p.source, p.seq, p.flags, p.reply_to, p.attempts) for p in parcels], np.int64
            ).reshape(-1, 5),
            "info": JsonValue(
                {
                    "peak": inbox.peak,
                    "dropped": dropped,
                    "stats": engine.stats[index].as_dict(),
                    "dead_letters": len(engine.dead[index]),
                }
            ),
        }
    pairs_in = []
    for (source, dest), live in engine._in.items():
        pair = _as_processed(live, forgotten.get((source, dest), []))
        if pair.held:
            raise CheckpointError(
                f"{len(pair.held)} message(s) from node index {source} to {dest} wait for an "
                "earlier one that has not arrived: not a consistent cut"
            )
        pairs_in.append(
            {
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
        )
    pairs_out = []
    outbox: list[tuple[bytes, Sequence[Any]]] = []
    outbox_fields = []
    for (source, dest), sending in engine.pairs_out.items():
        pairs_out.append(
            {
                "key": [source, dest],
                "numbers": [sending.next_seq, sending.taken_seen],
                "credits": sending.credits,
                "window": sending.window,
            }
        )
        for seq, entry in sending.outbox.items():
            outbox.append((entry.meta, entry.frames))
            outbox_fields.append((source, dest, seq, entry.rank))
    return {
        "nodes": nodes,
        "pairs_in": JsonValue(pairs_in),
        "pairs_out": JsonValue(pairs_out),
        "outbox": pack_messages(outbox),
        "outbox_fields": np.array(outbox_fields, np.int64).reshape(-1, 4),
    }


def _as_processed(pair: PairIn, seqs: list[int]) -> PairIn:
    """``pair`` as saved: with the messages an in-memory queue held counted processed (a
    copy; the running job keeps them), so that a restart acknowledges them."""
    if not seqs:
        return pair
    saved = PairIn()
    for name in PairIn.__slots__:
        setattr(saved, name, getattr(pair, name))
    saved.done_extra = set(pair.done_extra)
    saved.unacked = list(pair.unacked)
    for seq in seqs:
        saved.processed(seq)
    # Acked at the next record: below done_below as a range, above it one by one.
    saved.unacked.extend(seq for seq in seqs if seq >= saved.done_below)
    saved.ack_due = True
    return saved


def restore(engine: Engine, tree: dict[str, Any]) -> None:
    """Put a captured state back into a fresh engine (the same nodes on the same ranks)."""
    for key, node in tree["nodes"].items():
        index = int(key)
        if index not in engine.inboxes:
            raise CheckpointError(f"the checkpoint holds node index {index}, not hosted here")
        inbox = engine.inboxes[index]
        fields = np.asarray(node["queue_fields"], np.int64).reshape(-1, 5).tolist()
        for (meta, frames), (source, seq, flags, reply_to, attempts) in zip(
            unpack_messages(node["queue"]), fields, strict=True
        ):
            nbytes = len(meta) + sum(frame.nbytes for frame in frames)
            view = memoryview(meta)
            fields_in = (source, seq, flags, reply_to, view, frames, nbytes, attempts)
            inbox.waiting.append(_tuple_new(Parcel, fields_in))
        info = node["info"]
        inbox.peak = max(inbox.peak, int(info["peak"]))
        stats = NodeStats(**info["stats"])
        stats.dropped += int(info["dropped"])  # an in-memory queue's, at the checkpoint
        stats.processed += int(info["dropped"])
        for name in stats.__slots__:
            setattr(engine.stats[index], name, getattr(stats, name))
    for item in tree["pairs_in"]:
        source, dest = item["key"]
        pair = PairIn()
        (pair.expected, pair.done_below, pair.acked_below, pair.owed, pair.taken, due) = item[
            "numbers"
        ]
        pair.ack_due = bool(due)
        pair.done_extra = set(item["done_extra"])
        pair.unacked = list(item["unacked"])
        engine._in[(source, dest)] = pair
        if pair.ack_due:
            engine._mark_due((source, dest))  # acks owed at the checkpoint go out after it
    for item in tree["pairs_out"]:
        source, dest = item["key"]
        pair_out = PairOut(item["window"])
        pair_out.next_seq, pair_out.taken_seen = item["numbers"]
        pair_out.credits = item["credits"]
        engine.pairs_out[(source, dest)] = pair_out
    fields = np.asarray(tree["outbox_fields"], np.int64).reshape(-1, 4).tolist()
    for (meta, frames), (source, dest, seq, rank) in zip(
        unpack_messages(tree["outbox"]), fields, strict=True
    ):
        entry = _tuple_new(OutboxEntry, (meta, frames if frames else (), rank))
        engine.pairs_out[(source, dest)].outbox[seq] = entry
