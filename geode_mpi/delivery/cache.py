"""The payload cache: a shared array sent again to a rank that holds it travels as a reference.

`share` turns an array into a *shared* one: a read-only copy with an id, registered by its
memory. A send whose frames include a shared array of at least `CACHE_MIN` bytes goes through
`PayloadCache.send`, which keeps, per destination rank, a mirror of what that rank holds from
this one (the ids and sizes, least recently used first, within the byte budget). The sender
decides everything and tells the receiver in the message, in a *cache prefix* before the
codec's meta (docs/wire-format.md, "The cache prefix"): *store* this frame as id k, *use* id k
for this (empty) frame, *drop* id k. The receiver (`PayloadCache.arrived`, first thing in the
engine's sink) applies them in arrival order, which is the send order per pair of ranks (the
transport contract), so its store is always what the sender's mirror says: no miss, no reply.

A topic publish goes through `PayloadCache.broadcast` the same way, with one mirror per stream
for all its member ranks at once (each receives the stream's messages in order), and each
member rank keeps a store per stream (the prefix names the stream); a member rank joining the
stream starts its cache again everywhere (`PayloadCache.stream_changed`).

Arrays of a shared payload arrive read-only (views of the receiver's stored copy, with no copy
per receive). docs/cache.md is the guide.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from geode_mpi.base.ondemand import on_first_use
from geode_mpi.delivery.cache_budget import BUDGET_VARIABLE as BUDGET_VARIABLE
from geode_mpi.delivery.cache_budget import CACHE_MIN as CACHE_MIN
from geode_mpi.delivery.cache_budget import DEFAULT_BUDGET as DEFAULT_BUDGET
from geode_mpi.delivery.cache_budget import CacheStats as CacheStats
from geode_mpi.delivery.cache_budget import budget_of as budget_of
from geode_mpi.delivery.cache_registry import _address, _register, _sealed_view, _Shared
from geode_mpi.delivery.cache_registry import cache_bound as cache_bound
from geode_mpi.delivery.cache_registry import is_shared as is_shared
from geode_mpi.delivery.cache_registry import sealed_shared as sealed_shared
from geode_mpi.delivery.cache_registry import share as share
from geode_mpi.delivery.cache_registry import shared_arrays as shared_arrays
from geode_mpi.delivery.cache_registry import shared_key as shared_key
from geode_mpi.delivery.cache_registry import shared_part as shared_part
from geode_mpi.delivery.cache_registry import through_cache as through_cache
from geode_mpi.errors import DecodeError
from geode_mpi.transport.sealed import SHARED_MIN, is_sealed

if TYPE_CHECKING:
    import numpy as np

    from geode_mpi.transport import SendTicket, Transport
    from geode_mpi.transport.base import Frame
else:  # a job that shares nothing never needs numpy here
    np = on_first_use("numpy", globals(), "np")


# The cache prefix: u8 marker (never a codec version), u8 prefix version, u16 count of 16-byte
# units, 4 pad bytes, u64 stream (0: the store of the sending rank; else of that stream); then
# per op: u8 op, 3 pad bytes, u32 frame index, u64 id (and for OP_USE_PART a second unit: u64
# offset, u64 size). 16-byte units, so that the codec's meta after it keeps its 16-byte
# alignment in the envelope.
MARKER = 0xCA
PREFIX_VERSION = 3
_HEAD = struct.Struct("<BBH4xQ")
_EPOCH_SHIFT = 32  # a stream tag: the stream's number below, its epoch from here (`_tag`)
_NUMBER_MASK = (1 << _EPOCH_SHIFT) - 1
_OP = struct.Struct("<B3xIQ")
_PART = struct.Struct("<QQ")
OP_STORE = 1  # the frame carries the bytes: keep them as this id
OP_USE = 2  # the frame is empty: it is the bytes kept as this id
OP_DROP = 3  # forget this id (the frame index is 0 and means nothing)
OP_USE_PART = 4  # the frame is empty: it is bytes [offset, offset + size) of this id


_EMPTY: list[Frame] = []  # (filled with the one empty frame on first use)


def _empty_frame() -> Frame:
    if not _EMPTY:
        _EMPTY.append(np.empty(0, np.uint8))
    return _EMPTY[0]


class _Mirror:
    """What the ranks a sender sends to hold from it: one rank (a pair), or every member rank
    of a stream at once (they receive its messages in order, so one decision serves all).

    Args:
        ranks: how many ranks it stands for (the counters count each).
    """

    __slots__ = ("held", "ids", "ranks")

    def __init__(self, ranks: int = 1) -> None:
        self.ids: OrderedDict[int, int] = OrderedDict()  # id -> nbytes, least recently used first
        self.held = 0  # bytes
        self.ranks = ranks


class PayloadCache:
    """One rank's payload cache: its mirror of what each rank holds from it, and of what the
    member ranks of each stream it publishes on hold (sender side); what it holds from each
    rank and each stream (receiver side). Used under the transport's gate.

    Args:
        budget: bytes of shared arrays each receiving rank may hold from this one, per pair
            and per stream (0: off).
    """

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._mirrors: dict[int, _Mirror] = {}  # by receiving rank
        self._streams: dict[int, _Mirror] = {}  # by stream number (streams this rank roots)
        self._kept: dict[int, dict[int, Frame]] = {}  # sending rank -> {id: read-only bytes}
        # stream tag (its number and epoch: `_tag`) -> {id: bytes}
        self._stream_kept: dict[int, dict[int, Frame]] = {}
        self._epochs: dict[int, int] = {}  # stream number -> its membership changes so far
        self._counts = [0] * 6  # hits, saved, stores, stored, evictions, wire bytes

    def send(
        self, transport: Transport, rank: int, meta: bytes, frames: Sequence[Frame], batch: bool
    ) -> tuple[SendTicket, int]:
        """``transport.send(rank, meta, frames, batch)``, with shared frames the receiver
        holds replaced by references, and the others stored there within the budget; its
        ticket and the bytes that left (a reference's frame is empty).

        Raises:
            EncodeError: a shared array's memory was made writable again (nothing is sent).
        """
        if not self.budget:
            return transport.send(rank, meta, frames, batch), _size(meta, frames)
        mirror = self._mirrors.get(rank)
        if mirror is None:
            mirror = self._mirrors[rank] = _Mirror()
        decided = self._decide(mirror, 0, meta, frames)
        if decided is None:
            return transport.send(rank, meta, frames, batch), _size(meta, frames)
        return transport.send(rank, decided[0], decided[1], batch), _size(*decided)

    def broadcast(
        self, transport: Transport, number: int, ranks: int, meta: bytes, frames: Sequence[Frame]
    ) -> tuple[SendTicket, int]:
        """``transport.broadcast(number, meta, frames)`` to the stream's ``ranks`` member
        ranks, decided once for all of them by the stream's mirror: a shared frame they hold
        travels as a reference, the others are stored by each of them within the budget. Its
        ticket and the bytes that left for each rank.

        Raises:
            EncodeError: as for `send`.
        """
        if not self.budget:
            return transport.broadcast(number, meta, frames), _size(meta, frames)
        mirror = self._streams.get(number)
        if mirror is None:
            mirror = self._streams[number] = _Mirror(ranks)
        mirror.ranks = ranks
        decided = self._decide(mirror, self._tag(number), meta, frames)
        if decided is None:
            return transport.broadcast(number, meta, frames), _size(meta, frames)
        return transport.broadcast(number, decided[0], decided[1]), _size(*decided)

    def _tag(self, number: int) -> int:
        """Stream ``number``'s tag in a cache prefix: its number, and above it its epoch (how
        many times its member ranks changed), so that what a rank stores of the new stream
        before it has seen the change itself (a pattern subscription changes several topics
        in turn, and a root ahead of this rank may already publish on one of them) is kept
        apart from what it held of the old one."""
        return number | self._epochs.get(number, 0) << _EPOCH_SHIFT

    def stream_changed(self, number: int, reset: bool, member: bool) -> None:
        """Stream ``number``'s member ranks changed (on every rank, between the old stream's
        end and the new one's start): ``reset`` when its member ranks are not the same (a
        rank that joins holds nothing of what the others hold; one that left is no longer
        counted), so the root's mirror and every store start again empty, in a new epoch;
        ``member``: this rank receives the new stream (one that left it drops its store)."""
        if reset:
            self._streams.pop(number, None)
            self._epochs[number] = self._epochs.get(number, 0) + 1
        current = self._tag(number)
        for tag in [tag for tag in self._stream_kept if tag & _NUMBER_MASK == number]:
            if tag != current or not member:  # (the new epoch's, stored early, stays)
                del self._stream_kept[tag]

    def _decide(
        self, mirror: _Mirror, stream: int, meta: bytes, frames: Sequence[Frame]
    ) -> tuple[bytes, list[Frame]] | None:
        """The prefixed meta and the frames to send for what ``mirror`` says its ranks hold
        (and the mirror and counters moved on); None if no frame goes through the cache."""
        keys = [shared_key(f) if f.nbytes >= CACHE_MIN else 0 for f in frames]
        parts = {  # frames that are a part of a shared array: a reference if it is held
            index: shared_part(frame)
            for index, frame in enumerate(frames)
            if not keys[index] and frame.nbytes >= CACHE_MIN
        }
        if not any(keys) and not any(key for key, _ in parts.values()):
            return None
        ids = mirror.ids
        ops: list[bytes] = []
        wire = list(frames)
        counts = self._counts
        ranks = mirror.ranks
        for index, key in enumerate(keys):
            size = frames[index].nbytes
            if not key:
                key, offset = parts.get(index, (0, 0))
                if key in ids:  # (never stored for a part: sent in full otherwise)
                    ids.move_to_end(key)
                    ops += (_OP.pack(OP_USE_PART, index, key), _PART.pack(offset, size))
                    wire[index] = _empty_frame()
                    counts[0] += ranks
                    counts[1] += size * ranks
                continue
            if key in ids:
                ids.move_to_end(key)
                ops.append(_OP.pack(OP_USE, index, key))
                wire[index] = _empty_frame()
                counts[0] += ranks
                counts[1] += size * ranks
            elif size <= self.budget:
                while mirror.held + size > self.budget:
                    dropped, freed = ids.popitem(last=False)
                    mirror.held -= freed
                    ops.append(_OP.pack(OP_DROP, 0, dropped))
                    counts[4] += ranks
                ids[key] = size
                mirror.held += size
                ops.append(_OP.pack(OP_STORE, index, key))
                counts[2] += ranks
                counts[3] += size * ranks
        if not ops:  # only arrays larger than the budget: as usual
            return None
        prefixed = b"".join((_HEAD.pack(MARKER, PREFIX_VERSION, len(ops), stream), *ops, meta))
        counts[5] += _size(prefixed, wire) * ranks
        return prefixed, wire

    def arrived(
        self, rank: int, meta: memoryview, frames: Sequence[Any], nbytes: int
    ) -> tuple[memoryview, list[Any], int]:
        """Apply the cache prefix of an arrival from ``rank``: the codec's meta, the frames
        with every reference resolved (read-only), and ``nbytes``, the bytes that arrived
        (the prefix, a reference's empty frame: what the sender counted in `sent_bytes`,
        so that `received_bytes` counts the same; it counted the arrays referred to in
        full, and not the prefix).

        Raises:
            DecodeError: the prefix does not parse, or names an id this rank does not hold
                (the sender's mirror and this store disagree: a bug, never stale data).
        """
        if len(meta) < _HEAD.size:
            raise DecodeError(f"a cache prefix from rank {rank} is cut short")
        _, version, count, stream = _HEAD.unpack_from(meta, 0)
        end = _HEAD.size + _OP.size * count
        if version != PREFIX_VERSION or len(meta) < end:
            raise DecodeError(
                f"rank {rank} sent a cache prefix of version {version} with {count} ops in "
                f"{len(meta)} bytes (this geode_mpi reads version {PREFIX_VERSION})"
            )
        if stream:
            kept = self._stream_kept.setdefault(stream, {})
            sender = f"rank {rank} (stream {stream & _NUMBER_MASK})"
        else:
            kept = self._kept.setdefault(rank, {})
            sender = f"rank {rank}"
        resolved = list(frames)
        offset = _HEAD.size
        while offset < end:
            op, index, key = _OP.unpack_from(meta, offset)
            offset += _OP.size
            if op == OP_DROP:
                kept.pop(key, None)
                continue
            if index >= len(resolved):
                raise DecodeError(
                    f"a cache op from {sender} names frame {index} of a message of "
                    f"{len(resolved)} frames"
                )
            if op == OP_STORE:
                kept[key] = resolved[index] = _stored(resolved[index], key, stream)
            elif op == OP_USE:
                found = kept.get(key)
                if found is None:
                    raise DecodeError(
                        f"{sender} referred to shared array {key}, which this rank does not "
                        "hold (its cache mirror and this rank's store disagree)"
                    )
                resolved[index] = found
            elif op == OP_USE_PART:
                start, size = _PART.unpack_from(meta, offset) if offset < end else (0, -1)
                offset += _PART.size
                found = kept.get(key)
                if found is None or size < 0 or start + size > found.nbytes:
                    raise DecodeError(
                        f"{sender} referred to bytes {start}..{start + size} of shared array "
                        f"{key}, which this rank does not hold whole"
                    )
                resolved[index] = found.reshape(-1).view(np.uint8)[start : start + size]
            else:
                raise DecodeError(f"unknown cache op {op} from {sender}")
        return meta[end:], resolved, nbytes

    def clear(self) -> None:
        """Forget everything (a closed Geode: its peers' stores go with theirs)."""
        self._mirrors.clear()
        self._streams.clear()
        self._kept.clear()
        self._stream_kept.clear()
        self._epochs.clear()

    def stats(self) -> CacheStats:
        """The counters now."""
        stores_here = (*self._kept.values(), *self._stream_kept.values())
        kept = sum(frame.nbytes for store in stores_here for frame in store.values())
        hits, saved, stores, stored, evictions, wire = self._counts
        mirrors = (*self._mirrors.values(), *self._streams.values())
        held = sum(mirror.held * mirror.ranks for mirror in mirrors)
        return CacheStats(hits, saved, stores, stored, evictions, wire, held, kept, self.budget)


def _size(meta: bytes, frames: Sequence[Frame]) -> int:
    """The bytes of a message sent as ``meta`` and ``frames``."""
    return len(meta) + sum(frame.nbytes for frame in frames)


def _stored(frame: Any, key: int, stream: int) -> Frame:
    """What a rank keeps of a frame it is told to store as ``key``: read-only, registered as
    that shared array (sent on from this rank, by a dispatcher, a sequencer or a node passing
    it on, it moves once per rank too); a stream's large frames sealed, so that each local
    subscriber gets a view of it, not a copy (a view of the node's segment stays one).

    Read-only for good, as `share`'s copy is: its memory's final owner is not writable (a
    sealed `Sealable`, or a read-only memoryview), so numpy refuses ``flags.writeable = True``
    on it and on every view of it; clearing the flag of the frame as it arrived was not
    enough (the frame, or its base, a receive buffer, could be made writable again)."""
    stored = frame if isinstance(frame, np.ndarray) else np.frombuffer(frame, np.uint8)
    large = stream and stored.nbytes >= SHARED_MIN and stored.flags.c_contiguous
    if large or is_sealed(stored):
        stored.flags.writeable = False
        stored = _sealed_view(stored)
    else:
        stored = _read_only_view(stored)
    # Registered for as long as the array every view of ``stored`` points back to lives (the
    # views the receiver is given skip ``stored`` itself: registered against it, the entry
    # went when the store dropped the id, though the receiver still held the array).
    root = stored
    while isinstance(root.base, np.ndarray):
        root = root.base
    _register(root, _Shared(key, stored.nbytes, None), _address(stored))
    return stored


def _read_only_view(array: np.ndarray[Any, Any]) -> Frame:
    """A view of ``array``'s memory (the same dtype and shape) over a read-only memoryview of
    it, which numpy never makes writable again (no copy for a contiguous array)."""
    contiguous = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    flat = contiguous.reshape(-1).view(np.uint8)
    sealed = np.frombuffer(flat.data.toreadonly(), np.uint8)
    view: Frame = sealed.view(array.dtype).reshape(array.shape)
    return view
