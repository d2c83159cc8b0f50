"""Agreement checks by digest: every rank compares a fixed-size hash, never the whole value.

`check_same` costs one allreduce of 32 bytes however long the value and however many ranks
(O(log P) rounds, O(1) bytes per rank); only when the digests differ does a second step find
the lowest rank that disagrees with rank 0 and show where the two values differ.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI

from geode_mpi.errors import WorldMismatchError
from geode_mpi.transport.digest import digest as blake2b_digest

DIGEST_WORDS = 2  # 128 bits of blake2b: a chance collision is out of reach
EXCERPT = 60  # bytes of each value shown around the first difference
Words = np.ndarray[Any, np.dtype[np.uint64]]


def digest(value: bytes) -> Words:
    """The value's blake2b digest as 64-bit words."""
    raw = blake2b_digest(value, 8 * DIGEST_WORDS)
    words: Words = np.frombuffer(raw, np.uint64).copy()
    return words


def check_same(comm: MPI.Intracomm, value: bytes, what: str) -> None:
    """Collective: raise `WorldMismatchError` on every rank if ``value`` differs between ranks.

    One MAX-allreduce of (digest, ~digest) gives every rank the largest and (negated) the
    smallest digest word by word: they are equal exactly when every rank has the same digest.

    Raises:
        WorldMismatchError: some rank's value differs; names the lowest such rank, and the
            first byte at which its value differs from rank 0's.
    """
    words = digest(value)
    both = np.concatenate([words, ~words])
    extremes = np.empty_like(both)
    comm.Allreduce(both, extremes, MPI.MAX)
    if np.array_equal(extremes[:DIGEST_WORDS], ~extremes[DIGEST_WORDS:]):
        return
    rank = first_disagreeing(comm, words)
    first = comm.bcast(value if comm.Get_rank() == 0 else None, 0)
    other = comm.bcast(value if comm.Get_rank() == rank else None, rank)
    raise WorldMismatchError(
        f"rank {rank} disagrees with rank 0 about {what}: every rank must create its Geode "
        f"with the same arguments ({difference(first, other, rank)})"
    )


def first_disagreeing(comm: MPI.Intracomm, words: Words) -> int:
    """Collective: the lowest rank whose digest is not rank 0's (fixed-size steps only)."""
    reference = words.copy()
    comm.Bcast(reference, 0)
    mine = np.array([comm.Get_size() if np.array_equal(words, reference) else comm.Get_rank()])
    lowest = np.empty_like(mine)
    comm.Allreduce(mine, lowest, MPI.MIN)
    return int(lowest[0])


def difference(first: bytes, other: bytes, rank: int) -> str:
    """Where two values first differ, with a short excerpt of each from there."""
    common = min(len(first), len(other))
    unequal = np.flatnonzero(
        np.frombuffer(first, np.uint8, common) != np.frombuffer(other, np.uint8, common)
    )
    at = int(unequal[0]) if unequal.size else common
    start = max(at - EXCERPT // 3, 0)
    return (
        f"they first differ at byte {at}: rank 0 has {excerpt(first, start)}, "
        f"rank {rank} has {excerpt(other, start)}"
    )


def excerpt(value: bytes, start: int) -> str:
    """Up to `EXCERPT` bytes of ``value`` from ``start``, marked when cut."""
    part = value[start : start + EXCERPT]
    text = part.decode("utf-8", "replace")
    before = "..." if start else ""
    after = "..." if start + EXCERPT < len(value) else ""
    return f"{before}{text!r}{after}" if part else "nothing more"
