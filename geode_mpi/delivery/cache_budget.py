"""The payload cache's settings and counters: its byte budget per pair of ranks, the least
size it caches, and `CacheStats`."""

from __future__ import annotations

import os

from geode_mpi.base.record import Frozen, fill

BUDGET_VARIABLE = "GEODE_CACHE_BYTES"
DEFAULT_BUDGET = 64 * 2**20  # per (sender rank, receiver rank) pair
CACHE_MIN = 64 * 1024  # smaller shared frames travel as usual: a reference saves too little


def budget_of(cache_bytes: int | None) -> int:
    """The cache budget per pair of ranks: ``cache_bytes``, else $GEODE_CACHE_BYTES, else
    `DEFAULT_BUDGET`; 0 turns the cache off.

    Raises:
        ValueError: a negative or non-integer budget.
    """
    if cache_bytes is None:
        text = os.environ.get(BUDGET_VARIABLE, "").strip()
        if not text:
            return DEFAULT_BUDGET
        try:
            budget = int(text)
        except ValueError:
            budget = -1
        if budget < 0:
            raise ValueError(f"{BUDGET_VARIABLE} must be a number of bytes >= 0, got {text!r}")
        return budget
    if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
        raise ValueError(f"cache_bytes must be an int >= 0, got {cache_bytes!r}")
    return cache_bytes


class CacheStats(Frozen):
    """What the payload cache of one rank did since its Geode was created.

    Attributes:
        hits / saved_bytes: frames sent as a reference to a copy the receiver held, and the
            bytes that did not travel.
        stores / stored_bytes: shared frames sent in full, for the receiver to keep.
        evictions: copies the sender told a receiver to drop to stay within the budget.
        wire_bytes: what the sends that went through the cache handed to the transport
            (prefix, meta and frames).
        held_bytes: bytes of shared arrays the other ranks hold from this one now (the
            mirrors); kept_bytes: bytes this rank holds for the other ranks now.
        budget: the byte budget of each pair of ranks (0: the cache is off).
    """

    __match_args__ = (
        "hits",
        "saved_bytes",
        "stores",
        "stored_bytes",
        "evictions",
        "wire_bytes",
        "held_bytes",
        "kept_bytes",
        "budget",
    )
    __slots__ = __match_args__
    hits: int
    saved_bytes: int
    stores: int
    stored_bytes: int
    evictions: int
    wire_bytes: int
    held_bytes: int
    kept_bytes: int
    budget: int

    def __init__(
        self,
        hits: int = 0,
        saved_bytes: int = 0,
        stores: int = 0,
        stored_bytes: int = 0,
        evictions: int = 0,
        wire_bytes: int = 0,
        held_bytes: int = 0,
        kept_bytes: int = 0,
        budget: int = 0,
    ) -> None:
        fill(
            self,
            hits,
            saved_bytes,
            stores,
            stored_bytes,
            evictions,
            wire_bytes,
            held_bytes,
            kept_bytes,
            budget,
        )
