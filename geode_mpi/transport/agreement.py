"""Agreement checks by digest: every rank compares a fixed-size hash, never the whole value.

`check_same` costs one allreduce of 32 bytes however long the value and however many ranks
(O(log P) rounds, O(1) bytes per rank); only when the digests differ does a second step find
the lowest rank that disagrees with rank 0 and show where the two values differ.
"""

from __future__ import annotations

from array import array
from itertools import compress
from operator import ne

from mpi4py import MPI

from geode_mpi.errors import WorldMismatchError
from geode_mpi.transport.base import SETTINGS
from geode_mpi.transport.digest import digest as blake2b_digest

DIGEST_WORDS = 2  # 128 bits of blake2b: a chance collision is out of reach
EXCERPT = 60  # bytes of each value shown around the first difference
_ONES = 2**64 - 1  # a word with every bit set: ~w of an unsigned 64-bit word is _ONES - w


def digest(value: bytes) -> array[int]:
    """The value's blake2b digest as 64-bit unsigned words (native byte order)."""
    return array("Q", blake2b_digest(value, 8 * DIGEST_WORDS))


def check_same(comm: MPI.Intracomm, value: bytes, what: str) -> None:
    """Collective: raise `WorldMismatchError` on every rank if ``value`` differs between ranks.

    One MAX-allreduce of (digest, ~digest) gives every rank the largest and (negated) the
    smallest digest word by word: they are equal exactly when every rank has the same digest.

    Raises:
        WorldMismatchError: some rank's value differs; names the lowest such rank, and the
            first byte at which its value differs from rank 0's.
    """
    words = digest(value)
    both = words + array("Q", (_ONES - word for word in words))
    extremes = array("Q", bytes(both.itemsize * len(both)))
    comm.Allreduce([both, MPI.UINT64_T], [extremes, MPI.UINT64_T], MPI.MAX)
    highest, lowest = extremes[:DIGEST_WORDS], extremes[DIGEST_WORDS:]
    if all(high == _ONES - low for high, low in zip(highest, lowest, strict=True)):
        return
    rank = first_disagreeing(comm, words)
    first = comm.bcast(value if comm.Get_rank() == 0 else None, 0)
    other = comm.bcast(value if comm.Get_rank() == rank else None, rank)
    raise WorldMismatchError(
        f"rank {rank} disagrees with rank 0 about {what}: {_advice(what)} "
        f"({difference(first, other, rank)})"
    )


def _advice(what: str) -> str:
    if what == SETTINGS:
        return (
            "every rank must create its Geode with the same arguments (a checkpoint_dir, or "
            "GEODE_CHECKPOINT_DIR, on every rank or on none)"
        )
    return "every rank must make the same collective calls with the same arguments, in one order"


def first_disagreeing(comm: MPI.Intracomm, words: array[int]) -> int:
    """Collective: the lowest rank whose digest is not rank 0's (fixed-size steps only)."""
    reference = array("Q", words)
    comm.Bcast([reference, MPI.UINT64_T], 0)
    mine = array("q", (comm.Get_size() if words == reference else comm.Get_rank(),))
    lowest = array("q", (0,))
    comm.Allreduce([mine, MPI.INT64_T], [lowest, MPI.INT64_T], MPI.MIN)
    return lowest[0]


def difference(first: bytes, other: bytes, rank: int) -> str:
    """Where two values first differ, with a short excerpt of each from there."""
    common = min(len(first), len(other))
    at = next(compress(range(common), map(ne, first, other)), common)
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
