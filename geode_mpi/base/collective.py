"""Trees over the ranks, for collective protocols without a hot spot.

A protocol that asks every rank something (run()'s quiescence waves, the hang watchdog's
census) goes down a tree from its root and its answers come back up, each rank summing or
gathering what its children said: 2 (P - 1) messages in all, at most ``fanout`` of them
through any one rank's hands per direction, in about log_fanout(P) steps. Sent one by one from
the root instead, the same question costs the root 2 (P - 1) messages per round.

The tree is the heap layout over ranks counted from the root: with ``v = (rank - root) % size``,
the parent of ``v`` is ``(v - 1) // fanout`` and its children ``v * fanout + 1`` to
``v * fanout + fanout``.
"""

from __future__ import annotations

# Children per rank. A rank waiting in run() sleeps up to 1 ms between polls, so each step of a
# wave can cost that much, while a record costs some 20-50 us of Python: a wider tree has fewer
# steps. With 8, 64 ranks are 2 steps deep and 4,096 ranks 4 (waves: 4 and 8 steps; the star it
# replaced, 2 steps but 2 (P - 1) records through rank 0, some 200 ms per wave at 4,096 ranks).
# Measured at 64 ranks on 2 cores (steps cost scheduling there): 4 took 1.2 to 2 times as long.
FANOUT = 8


def _relative(rank: int, size: int, root: int) -> int:
    if not (0 <= rank < size and 0 <= root < size):
        raise ValueError(f"rank and root must be in 0..{size - 1}, got {rank} and {root}")
    return (rank - root) % size


def parent(rank: int, size: int, root: int = 0, fanout: int = FANOUT) -> int | None:
    """The rank ``rank`` answers to in the tree from ``root`` (None for the root)."""
    v = _relative(rank, size, root)
    return None if v == 0 else ((v - 1) // fanout + root) % size


def children(rank: int, size: int, root: int = 0, fanout: int = FANOUT) -> list[int]:
    """The ranks that answer to ``rank`` in the tree from ``root``."""
    v = _relative(rank, size, root)
    first = v * fanout + 1
    return [(w + root) % size for w in range(first, min(first + fanout, size))]


def below(rank: int, size: int, root: int = 0, fanout: int = FANOUT) -> list[int]:
    """``rank``'s descendants in the tree from ``root`` (whose answers pass through it)."""
    found: list[int] = []
    level = children(rank, size, root, fanout)
    while level:
        found += level
        level = [child for member in level for child in children(member, size, root, fanout)]
    return found


def depth(size: int, fanout: int = FANOUT) -> int:
    """The number of steps from the root to the deepest rank of a tree of ``size`` ranks."""
    steps, last = 0, 0  # ``last``: the highest relative rank within ``steps`` of the root
    while last < size - 1:
        last = last * fanout + fanout
        steps += 1
    return steps
