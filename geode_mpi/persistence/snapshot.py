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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.codec import header
from geode_mpi.codec.compression import expanded
from geode_mpi.delivery.pairs import OutboxEntry, PairIn, PairOut
from geode_mpi.delivery.run_cursor import one_by_one
from geode_mpi.delivery.runs import outbox_items
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.errors import DecodeError
from geode_mpi.persistence.checks import (
    as_dict,
    as_int,
    as_int_array,
    as_ints,
    as_list,
    as_rows,
    brief,
)
from geode_mpi.persistence.store import CheckpointError, JsonValue
from geode_mpi.queues import NEVER, Parcel, first_take, monotonic_clock, wall_clock

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.delivery.engine import Engine
else:  # imported when a checkpoint is written or read
    np = on_first_use("numpy", globals(), "np")

_tuple_new = tuple.__new__


def pack_blobs(blobs: Sequence[bytes | memoryview]) -> dict[str, Any]:
    """Byte strings as one ``data`` value and their ``ends``."""
    ends = np.cumsum([len(blob) for blob in blobs], dtype=np.int64)
    return {"data": b"".join(blobs), "ends": ends}  # (join copies each buffer once)


def unpack_blobs(packed: Any) -> list[bytes]:
    """Back from `pack_blobs`.

    Raises:
        CheckpointError: ``packed`` is not what `pack_blobs` makes (a damaged checkpoint).
    """
    if not isinstance(packed, dict) or not isinstance(packed.get("data"), bytes):
        raise CheckpointError(f"packed bytes: expected {{data: bytes, ends}}, got {brief(packed)}")
    data, ends = packed["data"], as_int_array(packed.get("ends"), "packed bytes: ends")
    if ends.ndim != 1 or (len(ends) and (ends[-1] != len(data) or np.any(np.diff(ends) < 0))):
        raise CheckpointError(f"packed bytes: ends {brief(ends)} do not cut {len(data)} bytes")
    if len(ends) and ends[0] < 0:
        raise CheckpointError(f"packed bytes: ends start at {ends[0]}")
    if not len(ends) and data:
        raise CheckpointError(f"packed bytes: {len(data)} bytes and no ends")
    starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
    return [data[start:end] for start, end in zip(starts.tolist(), ends.tolist(), strict=True)]


def pack_messages(items: Sequence[tuple[bytes | memoryview, Sequence[Any]]]) -> dict[str, Any]:
    """Encoded messages (meta, frames) as a few arrays: the frames' bytes copied once, into
    the packed ``data``. Compressed frames are saved decompressed (docs/checkpoints.md)."""
    items = [expanded(meta, frames) for meta, frames in items]
    frames = [np.asarray(frame, np.uint8).reshape(-1).data for _, fs in items for frame in fs]
    return {
        "metas": pack_blobs([meta for meta, _ in items]),
        "frames": pack_blobs(frames),
        "frame_counts": np.array([len(fs) for _, fs in items], np.int64),
    }


def unpack_messages(packed: Any) -> list[tuple[bytes, list[np.ndarray[Any, Any]]]]:
    """Back from `pack_messages`.

    Raises:
        CheckpointError: ``packed`` is not what `pack_messages` makes.
    """
    if not isinstance(packed, dict):
        raise CheckpointError(f"packed messages: expected a group, got {brief(packed)}")
    metas = unpack_blobs(packed.get("metas"))
    frames = [np.frombuffer(blob, np.uint8).copy() for blob in unpack_blobs(packed.get("frames"))]
    counts = as_int_array(packed.get("frame_counts"), "frame_counts").reshape(-1).tolist()
    if len(counts) != len(metas) or min(counts, default=0) < 0 or sum(counts) != len(frames):
        raise CheckpointError(
            f"packed messages: {len(metas)} metas, {len(frames)} frames and frame counts "
            f"{brief(counts)} do not agree"
        )
    out = []
    k = 0
    for meta, count in zip(metas, counts, strict=True):
        out.append((meta, frames[k : k + count]))
        k += count
    return out


def capture(engine: Engine, forwarding: Mapping[int, list[Parcel]] | None = None) -> dict[str, Any]:
    """The engine's state as a checkpoint tree (after a drain: nothing in flight).
    ``forwarding``: by local node, the messages that reached it to be sent on (a total-order
    topic's sequencer holding them for want of room at a subscriber), in their order: received
    by their pairs and not yet processed, like a queue's (a restart hands them to the node's
    forwarder again, first).

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
        nodes[str(index)] = {
            **_pack_parcels(parcels, "queue"),
            "info": JsonValue(
                {
                    "peak": inbox.peak,
                    "dropped": dropped,
                    "stats": engine.stats[index].as_dict(),
                    "dead_letters": len(engine.dead[index]),
                }
            ),
        }
        held = (forwarding or {}).get(index)
        if held:  # (only then: older files still load)
            nodes[str(index)]["forwards"] = _pack_parcels(held, "queue")
    pairs_in = []
    for (source, dest), live in engine.pairs_in.items():
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


# -- restoring: every value checked before the engine is touched --------------------------


class Restored:
    """A checkpoint tree turned into engine state, every value checked; `apply` puts it into
    the engine and cannot fail. Built by `load`."""

    def __init__(self) -> None:
        self.waiting: dict[int, list[Parcel]] = {}
        self.forwards: dict[int, list[Parcel]] = {}  # held to be sent on (`capture`)
        self.peaks: dict[int, int] = {}
        self.stats: dict[int, NodeStats] = {}
        self.pairs_in: dict[tuple[int, int], PairIn] = {}
        self.pairs_out: dict[tuple[int, int], PairOut] = {}

    def merge(self, other: Restored) -> None:
        """Add the nodes and pairs of another rank's file (a restart on other ranks)."""
        self.waiting.update(other.waiting)
        self.forwards.update(other.forwards)
        self.peaks.update(other.peaks)
        self.stats.update(other.stats)
        self.pairs_in.update(other.pairs_in)
        self.pairs_out.update(other.pairs_out)

    def apply(self, engine: Engine) -> None:
        """Put the state into a fresh engine (the same nodes on the same ranks)."""
        for index, parcels in self.waiting.items():
            inbox = engine.inboxes[index]
            inbox.extend(parcels)
            inbox.peak = max(inbox.peak, self.peaks[index])
            for name in NodeStats.__slots__:
                setattr(engine.stats[index], name, getattr(self.stats[index], name))
        for index, parcels in self.forwards.items():
            engine.forwards.extend((index, parcel) for parcel in parcels)  # (a fresh engine's)
            engine.forwarders = engine.forwarders | {index}
        for key, pair in self.pairs_in.items():
            engine.pairs_in[key] = pair
            if pair.ack_due:
                engine.mark_due(key)  # acks owed at the checkpoint go out after it
        engine.pairs_out.update(self.pairs_out)


def load(
    engine: Engine, tree: Any, replaced: bool = False, roots: Mapping[int, int] | None = None
) -> Restored:
    """A captured state (from `capture`), checked against ``engine`` (which it does not
    change): ready to `Restored.apply`.

    Args:
        engine: the engine it goes into.
        tree: what `capture` made.
        replaced: the tree was saved by a job of another number of ranks: take only the nodes
            ``engine`` hosts, with their pairs (a node's receiving side moves with it as the
            destination, its sending side and outbox as the source), and send what the outbox
            holds to the ranks that host its destinations now.
        roots: with ``replaced``, the node that sends on each topic or work-queue stream (by
            stream number): a stream's sending side and outbox move with that node.

    Raises:
        CheckpointError: the tree is not a state `capture` makes for this engine (damaged).
    """
    tree = as_dict(tree, "engine")
    restored = Restored()
    hosted = engine.inboxes
    root = (roots or {}).get
    for key, node in as_dict(tree.get("nodes"), "engine/nodes").items():
        index = int(key) if key.isdigit() else -1
        if index not in hosted:
            if replaced and 0 <= index < len(engine.names):
                continue
            raise CheckpointError(f"the checkpoint holds node index {key}, not hosted here")
        _load_node(restored, index, as_dict(node, f"engine/nodes/{key}"))
    for k, item in enumerate(as_list(tree.get("pairs_in"), "engine/pairs_in")):
        what = f"engine/pairs_in[{k}]"
        item = as_dict(item, what)
        source, dest = as_ints(item.get("key"), f"{what}/key", 2)
        if replaced and dest not in hosted:
            continue
        pair = PairIn()
        numbers = as_ints(item.get("numbers"), f"{what}/numbers", 6)
        (pair.expected, pair.done_below, pair.acked_below, pair.owed, pair.taken, due) = numbers
        pair.ack_due = bool(due)
        pair.done_extra = set(as_ints(item.get("done_extra"), f"{what}/done_extra"))
        pair.unacked = as_ints(item.get("unacked"), f"{what}/unacked")
        skips = as_ints(item.get("skips", []), f"{what}/skips")
        if len(skips) % 2:
            raise CheckpointError(f"{what}/skips: expected (first, last) pairs, got {brief(skips)}")
        if skips:
            pair.skips = dict(zip(skips[::2], skips[1::2], strict=True))
        pair.rejoining = bool(as_int(item.get("rejoining", 0), f"{what}/rejoining"))
        restored.pairs_in[(source, dest)] = pair
    for k, item in enumerate(as_list(tree.get("pairs_out"), "engine/pairs_out")):
        what = f"engine/pairs_out[{k}]"
        item = as_dict(item, what)
        source, dest = as_ints(item.get("key"), f"{what}/key", 2)
        if replaced and root(source, source) not in hosted:
            continue
        window, credits = item.get("window"), item.get("credits")
        pair_out = PairOut(None if window is None else as_int(window, f"{what}/window"))
        pair_out.next_seq, pair_out.taken_seen = as_ints(item.get("numbers"), f"{what}/numbers", 2)
        pair_out.credits = None if credits is None else as_int(credits, f"{what}/credits", None)
        restored.pairs_out[(source, dest)] = pair_out
    messages = unpack_messages(tree.get("outbox"))
    fields = as_rows(tree.get("outbox_fields"), 4, len(messages), "engine/outbox_fields")
    for (meta, frames), (source, dest, seq, rank) in zip(messages, fields, strict=True):
        if replaced and root(source, source) not in hosted:
            continue
        if (source, dest) not in restored.pairs_out:
            raise CheckpointError(f"engine/outbox: a message of pair {(source, dest)}, not saved")
        if replaced:
            if not 0 <= dest < len(engine.names):
                raise CheckpointError(f"engine/outbox: destination {dest} is not a node")
            rank = engine.rank_of(dest)
        entry = _tuple_new(OutboxEntry, (meta, frames if frames else (), rank))
        restored.pairs_out[(source, dest)].outbox[seq] = entry
    return restored


def queued_priority(meta: bytes, flags: int, what: str) -> int:
    """The priority a saved message was queued with (flags: its parcel's, header bits).

    Raises:
        CheckpointError: its header says it has a priority block that is not there.
    """
    if not flags & header.FLAG_QOS:
        return 0
    try:
        return header.qos(meta)[0]
    except DecodeError as exc:
        raise CheckpointError(f"{what}: {exc}") from exc


def _load_node(restored: Restored, index: int, node: dict[str, Any]) -> None:
    what = f"engine/nodes/{index}"
    parcels = _parcels(node, "queue", what)
    if "forwards" in node:
        held = as_dict(node["forwards"], f"{what}/forwards")
        restored.forwards[index] = _parcels(held, "queue", f"{what}/forwards")
    info = as_dict(node.get("info"), f"{what}/info")
    counters = as_dict(info.get("stats"), f"{what}/info/stats")
    try:
        stats = NodeStats(**counters)
    except TypeError as exc:
        raise CheckpointError(f"{what}/info/stats: {exc}") from exc
    for name in NodeStats.__slots__:
        value = getattr(stats, name)
        if name == "node":
            if not isinstance(value, str):
                raise CheckpointError(f"{what}/info/stats/node: expected a str, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckpointError(f"{what}/info/stats/{name}: expected a number, got {value!r}")
    dropped = as_int(info.get("dropped"), f"{what}/info/dropped")
    stats.dropped += dropped  # an in-memory queue's, at the checkpoint
    stats.processed += dropped
    restored.waiting[index] = parcels
    restored.peaks[index] = as_int(info.get("peak"), f"{what}/info/peak")
    restored.stats[index] = stats


def _parcels(node: dict[str, Any], name: str, what: str) -> list[Parcel]:
    """Back from `_pack_parcels`, checked."""
    messages = unpack_messages(node.get(name))
    fields = as_rows(node.get(f"{name}_fields"), 5, len(messages), f"{what}/{name}_fields")
    expiries = node.get(f"{name}_expires")  # (absent: none expires)
    if expiries is None:
        expiries = np.full(len(messages), NEVER)
    try:
        expiries = np.asarray(expiries, np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{what}/{name}_expires: not numbers: {exc}") from exc
    if len(expiries) != len(messages):
        raise CheckpointError(
            f"{what}/{name}_expires: {len(expiries)} expiries for {len(messages)} messages"
        )
    parcels = []
    for (meta, frames), (source, seq, flags, reply_to, attempts), wall in zip(
        messages, fields, expiries.tolist(), strict=True
    ):
        nbytes = len(meta) + sum(frame.nbytes for frame in frames)
        priority = queued_priority(meta, flags, f"{what}/{name}")
        fields_in = (
            source,
            seq,
            flags,
            reply_to,
            memoryview(meta),
            frames,
            nbytes,
            attempts,
            priority,
            monotonic_clock(wall),
        )
        parcels.append(_tuple_new(Parcel, fields_in))
    return parcels
