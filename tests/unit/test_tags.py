"""Every MPI tag the transport receives with an any-tag probe means one thing.

Two modules once both took tag 6 (relayed envelopes and drain counts): counts were read as
envelopes, envelopes as counts, and relayed messages went missing.
"""

from __future__ import annotations

from geode_mpi.transport import mpi, relayplan, shared, tally


def test_the_transports_tags_are_distinct() -> None:
    tags = {
        "TAG_ENVELOPE": mpi.TAG_ENVELOPE,
        "TAG_FRAME": mpi.TAG_FRAME,
        "TAG_BATCH": mpi.TAG_BATCH,
        "TAG_META": mpi.TAG_META,
        "TAG_STREAM": mpi.TAG_STREAM,
        "TAG_RELAYED": relayplan.TAG_RELAYED,
        "TAG_COUNT": tally.TAG_COUNT,
        "TAG_SHARED": shared.TAG_SHARED,
    }
    assert len(set(tags.values())) == len(tags), tags
    # Relay heads and chunks: this tag and above (mpi._take_matched hands them to the relays).
    assert all(tag < relayplan.TAG_RELAY_HEAD for tag in tags.values()), tags
    assert relayplan.TAG_RELAY_HEAD < relayplan.CHUNK_TAG
