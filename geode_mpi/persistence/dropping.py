"""Messages of a restored state dropped before it goes into the engine, as processed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from geode_mpi.persistence.snapshot import Restored, mark_processed
from geode_mpi.queues import Parcel


def drop_waiting(restored: Restored, kind: Callable[[Parcel], str | None]) -> Counter[str]:
    """Drop from the restored queues every message ``kind`` names (None: kept), and count
    them by name. Each counts as processed and dropped in its node's stats, and its pair
    acknowledges it (with a credit back) after the restart: its sender's outbox lets it go
    instead of resending it for as long as the job runs, and saving it again."""
    dropped: Counter[str] = Counter()
    for index, parcels in restored.waiting.items():
        kept, gone = [], []
        for parcel in parcels:
            name = kind(parcel)
            if name is None:
                kept.append(parcel)
            else:
                dropped[name] += 1
                gone.append(parcel)
        if not gone:
            continue
        parcels[:] = kept
        stats = restored.stats[index]
        stats.dropped += len(gone)
        stats.processed += len(gone)
        by_source: dict[int, list[Parcel]] = {}
        for parcel in gone:
            by_source.setdefault(parcel.source, []).append(parcel)
        for source, some in by_source.items():
            pair = restored.pairs_in.get((source, index))
            if pair is not None:  # (None: a stream's pair not kept here)
                mark_processed(pair, some)  # (its sender's credits back too)
    return dropped
