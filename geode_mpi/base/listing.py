"""Lists of nodes in warnings and errors, bounded: the first few, then how many more."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

# A line of a warning names at most this many nodes (a rank may host thousands of nodes).
SHOWN = 10


def some_names(names: Iterable[str], limit: int = SHOWN) -> str:
    """``a, b, c``; past ``limit`` names, the first ``limit``, then ``... and 5 more``."""
    listed = list(names)
    text = ", ".join(listed[:limit])
    if len(listed) > limit:
        text += f", ... and {len(listed) - limit} more"
    return text


def _plain(node: str, count: int) -> str:
    return f"{node}: {count}"


def counted_nodes(
    counts: Mapping[str, int],
    unit: str = "",
    each: Callable[[str, int], str] = _plain,
    limit: int = SHOWN,
) -> str:
    """``node2: 3; node0: 1``, each node's count (``each`` writes one), in the mapping's
    order. Past ``limit`` nodes, the ``limit`` nodes with the most (most first, ties in
    order), then ``... and 1990 more nodes, 2000 messages in all`` (``unit``: the plural
    the total is counted in, or nothing)."""
    items = list(counts.items())
    if len(items) > limit:
        items = sorted(items, key=lambda item: -item[1])[:limit]
    text = "; ".join(each(node, count) for node, count in items)
    hidden = len(counts) - len(items)
    if hidden:
        total = f"{sum(counts.values())} {unit}".rstrip()
        text += f"; ... and {hidden} more node{'s' if hidden > 1 else ''}, {total} in all"
    return text


def rank_ranges(ranks: Iterable[int], limit: int = SHOWN) -> str:
    """``0-3,5,7-1999``: the ranks (any order, repeats ignored) as runs of consecutive ranks;
    past ``limit`` runs, the first ``limit``, then ``... and 990 more`` (ranks)."""
    runs: list[list[int]] = []
    for rank in sorted(set(ranks)):
        if runs and rank == runs[-1][1] + 1:
            runs[-1][1] = rank
        else:
            runs.append([rank, rank])
    text = ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs[:limit])
    hidden = sum(high - low + 1 for low, high in runs[limit:])
    if hidden:
        text += f",... and {hidden} more"
    return text


def ranks_named(ranks: Iterable[int], limit: int = SHOWN) -> str:
    """``rank 3`` or ``ranks 0-3,5`` (`rank_ranges`)."""
    listed = set(ranks)
    return f"rank{'s' if len(listed) != 1 else ''} {rank_ranges(listed, limit)}"
