"""A saved engine state read back: every value checked before the engine is touched."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.codec import header
from geode_mpi.delivery.pairs import OutboxEntry, PairIn, PairOut
from geode_mpi.delivery.stats import NodeStats
from geode_mpi.errors import DecodeError
from geode_mpi.persistence.checks import (
    as_dict,
    as_int,
    as_ints,
    as_list,
    as_rows,
    brief,
)
from geode_mpi.persistence.snapshot_packing import unpack_messages
from geode_mpi.persistence.store import CheckpointError
from geode_mpi.queues import NEVER, Parcel, monotonic_clock

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.delivery.engine import Engine
else:  # imported when a checkpoint is written or read
    np = on_first_use("numpy", globals(), "np")

_tuple_new = tuple.__new__


class Restored:
    """A checkpoint tree turned into engine state, every value checked; `apply` puts it into
    the engine and cannot fail. Built by `load`."""

    def __init__(self) -> None:
        self.waiting: dict[int, list[Parcel]] = {}
        self.forwards: dict[int, list[Parcel]] = {}  # held to be sent on (`capture`)
        self.peaks: dict[int, int] = {}
        self.stats: dict[int, NodeStats] = {}
        self.counted_apart: dict[int, int] = {}  # (`TopicTable.counted_apart`)
        self.pairs_in: dict[tuple[int, int], PairIn] = {}
        self.pairs_out: dict[tuple[int, int], PairOut] = {}

    def merge(self, other: Restored) -> None:
        """Add the nodes and pairs of another rank's file (a restart on other ranks)."""
        self.waiting.update(other.waiting)
        self.forwards.update(other.forwards)
        self.peaks.update(other.peaks)
        self.stats.update(other.stats)
        self.counted_apart.update(other.counted_apart)
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
        engine.topics.counted_apart.update(self.counted_apart)
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
    if "counted_apart" in info:
        restored.counted_apart[index] = as_int(
            info["counted_apart"], f"{what}/info/counted_apart", None
        )


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
